"""Magnitude pruning that holds through meta-training and adaptation."""

import keras
import numpy as np
import torch

from metakeras._checks import check_choice, invalid, is_fraction
from metakeras.callbacks import _layers
from metakeras.callbacks.schedules import ConstantSparsity, PruningSchedule

RANKINGS = ("layer", "global")


# A `keras.Operation` (public) is a `KerasSaveable`: Keras saves such an
# attribute of a layer with the layer, as it saves a sub-layer, so a mask kept
# on the layer's `kernel_constraint` is written to and read from `.keras`
# files (`save_own_variables`, `load_own_variables`).
@keras.saving.register_keras_serializable(package="metakeras")
class PruningMask(keras.constraints.Constraint, keras.Operation):
    """A Keras constraint that multiplies a weight by a 0/1 mask.

    Keras applies a variable's `constraint` after every optimizer step, and
    the metakeras inner loop applies it to the fast weights after every inner
    step (`MAML`, `MetaSGD`, `ANIL`), so a masked weight is zero after the
    outer update *and* after adaptation. `MagnitudePruning` installs one
    `PruningMask` per pruned kernel, as the layer's `kernel_constraint` and
    the kernel variable's `constraint`.

    The mask is a non-trainable uint8 `keras.Variable` (`mask`, 1 keeps, 0
    prunes). It lives on the layer's `kernel_constraint`, so it is part of
    the layer's config and its values are saved in `.keras` files (packed
    eight to a byte) and restored by `keras.models.load_model`. `MetaModel.
    save` writes the file of a model with masks compressed, so masks and
    pruned zeros make it smaller than the unpruned model's, not larger (a
    plain Keras model's file is not compressed: save `strip_pruning(model)`
    or compress it). It is not one
    of the layer's `weights`, so it is not part of a learner's
    `stateless_call` state. Copies of a learner made for adaptation (the
    model `adapt` returns) carry the same mask values.

    Args:
        shape: shape of the masked weight.
        constraint: a constraint the weight had before pruning, applied before
            the mask. Defaults to `None`.

    Example:

    ```python
    mask = PruningMask((2, 2))
    mask.mask.assign([[1, 0], [0, 1]])
    mask(keras.ops.ones((2, 2)))  # [[1., 0.], [0., 1.]]
    ```
    """

    def __init__(self, shape, constraint=None):
        keras.Operation.__init__(self, name="pruning_mask")
        self.shape = tuple(int(d) for d in shape)
        self.constraint = keras.constraints.get(constraint)
        # Created here, not lazily: a loaded model reads the saved values into
        # it before it is ever called.
        # uint8: a quarter of the bytes of a float mask in saved files.
        self.mask = keras.Variable(
            np.ones(self.shape, dtype="uint8"),
            trainable=False,
            dtype="uint8",
            name="pruning_mask",
        )

    def __call__(self, w):
        if self.constraint is not None:
            w = self.constraint(w)
        return keras.ops.multiply(w, keras.ops.cast(self.mask.value, w.dtype))

    def save_own_variables(self, store):
        # One bit per weight: an eighth of a uint8 mask, the size of an int8
        # kernel otherwise.
        mask = keras.ops.convert_to_numpy(self.mask).astype(bool)
        store["0"] = np.packbits(mask.reshape(-1))

    def load_own_variables(self, store):
        size = int(np.prod(self.shape))
        bits = np.unpackbits(np.asarray(store["0"], dtype="uint8"), count=size)
        self.mask.assign(bits.reshape(self.shape))

    def get_config(self):
        return {
            "shape": list(self.shape),
            "constraint": keras.constraints.serialize(self.constraint),
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package="metakeras")
class MagnitudePruning(keras.callbacks.Callback):
    """Prunes the smallest-magnitude weights during (meta-)training.

    TensorFlow Model Optimization's pruning is tied to `tf_keras` and does not
    import under Keras 3. This callback keeps its names and schedule
    semantics (`ConstantSparsity`, `PolynomialDecay`, `strip_pruning`) and
    works with any Keras 3 backend and with metakeras's meta-learning loop.

    At `on_train_begin` every pruned kernel gets a `PruningMask` (all ones),
    installed as the kernel variable's Keras `constraint`. Before each
    training step the schedule is asked about the outer optimizer's step
    (`optimizer.iterations`: one step per meta-batch); on a pruning step the
    masks are recomputed so that the scheduled fraction of weights with the
    smallest magnitude is zero, ranked within each layer (`ranking="layer"`)
    or across all pruned layers at once (`ranking="global"`, which prunes
    large layers more). Because the mask is a constraint, the optimizer
    re-applies it after every outer step and the MAML inner loop after every
    inner step, so pruned weights stay exactly zero during meta-training, in
    `adapt`, `adapt_and_predict` and `evaluate`.

    The achieved sparsity (the fraction of zeros in the pruned kernels) is
    written into the epoch logs as `"sparsity"`, so `History` and
    `CSVLogger` record it; list this callback before a `CSVLogger` so that
    the value is there when the row is written. Use `strip_pruning` after
    training for a model without the masks.

    Args:
        pruning_schedule: a `PruningSchedule` (`ConstantSparsity`,
            `PolynomialDecay`) or a number in [0, 1), short for
            `ConstantSparsity(number, begin_step=0)`. Defaults to `0.5`.
        ranking: `"layer"` (each layer reaches the sparsity) or `"global"`
            (one magnitude threshold for all pruned weights).
            Defaults to `"layer"`.
        layers: names of the layers whose `kernel` is pruned (in the
            learner of a `MetaModel`, else in the model); `None` prunes
            every Dense, EinsumDense and convolution layer.
            Defaults to `None`.

    Raises:
        ValueError: for an invalid schedule, ranking or layer list (at
            construction) or unknown layer names (when training starts).

    Example:

    ```python
    pruning = metakeras.callbacks.MagnitudePruning(
        metakeras.callbacks.PolynomialDecay(0.0, 0.8, begin_step=0,
                                            end_step=1000, frequency=50))
    model.fit(tasks, epochs=10, callbacks=[pruning])
    model.adapt(support_x, support_y)   # pruned weights are still zero
    deployable = metakeras.callbacks.strip_pruning(model)
    ```
    """

    def __init__(self, pruning_schedule=0.5, ranking="layer", layers=None):
        super().__init__()
        if not isinstance(pruning_schedule, PruningSchedule) and not is_fraction(
            pruning_schedule
        ):
            raise invalid(
                "pruning_schedule",
                "a PruningSchedule (ConstantSparsity, PolynomialDecay) or a "
                "sparsity in [0, 1)",
                pruning_schedule,
            )
        check_choice("ranking", ranking, RANKINGS)
        self.pruning_schedule = pruning_schedule
        self.ranking = ranking
        self.layers = _layers.check_names(layers, "layers")

    # ------------------------------------------------------------ callbacks

    def on_train_begin(self, logs=None):
        schedule = self.pruning_schedule
        if not isinstance(schedule, PruningSchedule):
            schedule = ConstantSparsity(schedule, begin_step=0)
        self._schedule = schedule
        learner = _layers.learner_of(self.model)
        self._pruned_layers = _layers.select_layers(learner, self.layers, "layers")
        self._masks = [_install_mask(layer) for layer in self._pruned_layers]
        self._last_step = None

    def on_train_batch_begin(self, batch, logs=None):
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        if step == self._last_step:
            return
        should_prune, sparsity = self._schedule(step)
        if should_prune:
            self._update_masks(sparsity)
            self._last_step = step

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["sparsity"] = self.sparsity()

    # -------------------------------------------------------------- helpers

    def sparsity(self):
        """The fraction of zeros in the pruned kernels (all layers together).

        Returns:
            A float in [0, 1].

        Raises:
            RuntimeError: before training started.
        """
        if not getattr(self, "_pruned_layers", None):
            raise RuntimeError(
                "MagnitudePruning.sparsity() is known once training has started: "
                "pass the callback to model.fit first."
            )
        zeros = total = 0
        for layer in self._pruned_layers:
            kernel = keras.ops.convert_to_numpy(layer.kernel)
            zeros += int(np.count_nonzero(kernel == 0))
            total += kernel.size
        return zeros / total

    def _update_masks(self, sparsity):
        kernels = [layer.kernel for layer in self._pruned_layers]
        with torch.no_grad():
            magnitudes = [keras.ops.convert_to_tensor(k).abs() for k in kernels]
            if self.ranking == "global":
                flat = torch.cat([m.reshape(-1) for m in magnitudes])
                pieces = torch.split(
                    _keep_largest(flat, sparsity), [m.numel() for m in magnitudes]
                )
                masks = [p.reshape(m.shape) for p, m in zip(pieces, magnitudes)]
            else:
                masks = [
                    _keep_largest(m.reshape(-1), sparsity).reshape(m.shape)
                    for m in magnitudes
                ]
            for holder, kernel, mask in zip(self._masks, kernels, masks):
                holder.mask.assign(mask)
                kernel.assign(keras.ops.convert_to_tensor(kernel) * mask)

    def get_config(self):
        schedule = self.pruning_schedule
        if isinstance(schedule, PruningSchedule):
            schedule = keras.saving.serialize_keras_object(schedule)
        return {
            "pruning_schedule": schedule,
            "ranking": self.ranking,
            "layers": self.layers,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("pruning_schedule"), dict):
            config["pruning_schedule"] = keras.saving.deserialize_keras_object(
                config["pruning_schedule"]
            )
        return cls(**config)


def strip_pruning(model):
    """Returns a copy of a pruned model without its masks, zeros baked in.

    The copy has the same architecture, weights (pruned weights exactly
    zero), compile settings and optimizer state, but no `PruningMask`: each
    kernel keeps only the constraint it had before pruning (usually none).
    Use it for deployment, or before `Model.quantize`. The model passed in is
    not changed. Without the masks, adapting the copy (`adapt`) may move
    pruned weights away from zero; keep the masks on a model whose adapted
    weights must stay sparse. Works for metakeras `MetaModel`s and for Sequential and
    functional Keras models.

    Args:
        model: a `keras.Model`, pruned by `MagnitudePruning` or not.

    Returns:
        A new `keras.Model` of the same class.

    Raises:
        ValueError: if `model` is not a `keras.Model` or cannot be rebuilt
            from its config.

    Example:

    ```python
    model.fit(tasks, callbacks=[MagnitudePruning(0.8)])
    plain = strip_pruning(model)
    plain.save("pruned.keras")
    ```
    """
    learner = _layers.learner_of(model)
    masks = {}
    for layer in _layers.iter_layers(learner):
        constraint = getattr(layer, "kernel_constraint", None)
        if isinstance(constraint, PruningMask):
            masks[id(layer.kernel)] = constraint
    config = _without_masks(keras.saving.serialize_keras_object(model))
    copy = keras.saving.deserialize_keras_object(config)
    copy_learner = _layers.learner_of(copy)
    source, target = learner.weights, copy_learner.weights
    if len(source) != len(target):
        raise ValueError(
            f"Could not rebuild {model.name!r} from its config: the copy has "
            f"{len(target)} weights, the model {len(source)}. Give custom layers "
            "a `get_config`."
        )
    for variable, original in zip(target, source):
        if tuple(variable.shape) != tuple(original.shape):
            raise ValueError(
                f"Could not rebuild {model.name!r} from its config: weight "
                f"{original.path!r} has shape {tuple(original.shape)} but its copy "
                f"{tuple(variable.shape)}."
            )
        value = keras.ops.convert_to_tensor(original)
        mask = masks.get(id(original))
        if mask is not None:
            value = value * keras.ops.cast(mask.mask.value, value.dtype)
        variable.assign(value)
    _copy_optimizer_state(model, copy)
    return copy


def has_masks(model):
    """Whether any kernel of `model` (or of its learner) has a `PruningMask`."""
    return any(
        isinstance(getattr(layer, "kernel_constraint", None), PruningMask)
        for layer in _layers.iter_layers(_layers.learner_of(model))
    )


def _install_mask(layer):
    """Gives `layer.kernel` a `PruningMask` (reusing one already there)."""
    kernel = layer.kernel
    existing = layer.kernel_constraint
    if isinstance(existing, PruningMask) and existing.shape == tuple(kernel.shape):
        mask = existing
    else:
        mask = PruningMask(kernel.shape, constraint=existing)
        # Stored on the layer too, so the mask is in the layer's config and
        # saved with it; the variable's constraint is what updates apply.
        layer.kernel_constraint = mask
    kernel.constraint = mask
    return mask


def _keep_largest(magnitudes, sparsity):
    """A 0/1 mask of a 1-D tensor zeroing its `sparsity` smallest entries.

    Exactly `round(sparsity * n)` entries are zeroed, also when magnitudes
    tie (already pruned zeros tie with each other).
    """
    mask = torch.ones_like(magnitudes)
    pruned = int(round(sparsity * magnitudes.numel()))
    if pruned > 0:
        index = torch.topk(magnitudes, pruned, largest=False, sorted=False).indices
        mask[index] = 0.0
    return mask


def _without_masks(config):
    """A serialized model config with every `PruningMask` replaced by its inner constraint."""
    if isinstance(config, dict):
        if config.get("class_name") == "PruningMask" and isinstance(
            config.get("config"), dict
        ):
            return _without_masks(config["config"].get("constraint"))
        return {key: _without_masks(value) for key, value in config.items()}
    if isinstance(config, list):
        return [_without_masks(value) for value in config]
    return config


def _copy_optimizer_state(source, target):
    """Copies optimizer variables (step count, moments) between equal models."""
    optimizer = getattr(source, "optimizer", None)
    copy = getattr(target, "optimizer", None)
    if optimizer is None or copy is None or not optimizer.built:
        return
    if not copy.built:
        copy.build(target.trainable_variables)
    if len(copy.variables) != len(optimizer.variables):
        return
    for variable, value in zip(copy.variables, optimizer.variables):
        if tuple(variable.shape) == tuple(value.shape):
            variable.assign(value)
