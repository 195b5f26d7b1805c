"""Post-training and quantization-aware weight quantization for meta-learners."""

import keras

from metakeras._checks import check_int
from metakeras.callbacks import _layers, _quantized_kernel
from metakeras.callbacks._quantized_kernel import FLOAT8_MAX, MODES  # noqa: F401
from metakeras.callbacks._quantized_kernel import check_mode as _check_mode

# Layers Keras quantizes itself (`Layer.quantize`): stored and computed in
# int8/int4. Exact types: Keras refuses subclasses.
_KERAS_QUANTIZABLE = (keras.layers.Dense, keras.layers.EinsumDense)
_KERAS_MODES = ("int8", "int4")


def quantize_weights(model, mode="int8", layers=None):
    """Quantizes a model's weights in place.

    Two kinds of quantization, chosen per layer:

    - **Keras quantization** (`Layer.quantize`, as `Model.quantize` does) for
      `Dense` and `EinsumDense` kernels in `"int8"` and `"int4"` modes: the
      kernel is held and saved as int8 (two int4 values per byte) with a
      per-output-channel scale, and the layer computes in int8. Used for
      models whose adaptation runs the learner forward only: `ProtoNet`
      (without `vectorize_tasks`) and plain Keras models. Kind `"keras"`.
    - **Weight quantization** for every other chosen layer: convolutions,
      which Keras cannot quantize, and every layer of a model with a
      gradient inner loop (`MAML`, `MetaSGD`, `ANIL`) or with
      `vectorize_tasks=True` (Keras's quantized layers use a custom autograd
      function that `torch.func`, the inner loop and `vmap`, cannot
      differentiate). The kernel is rounded per output channel with
      `keras.quantizers.abs_max_quantize` (at most 255 distinct values per
      channel in int8, 16 in int4; float8_e4m3fn in `"float8"` mode) and
      stays a float32 variable in memory, which the inner loop adapts like
      any weight. The layer becomes its quantized-kernel twin (a registered
      subclass, e.g. `QuantizedConv2D` for `Conv2D`, same variables and
      call), which writes the kernel to `.keras` files as int8 (int4 packed
      two per byte, float8 as 8-bit codes) plus one float32 scale per output
      channel: a conv4 learner's file is about 4x smaller in int8. Kind
      `"stored"`. Layers without such a twin (custom layers named in
      `layers`, LoRA-enabled layers) keep float32 files. Kind `"weights"`.

    Saving always writes the kernel quantized, so a model loaded from the
    file holds the same grid values (to float32 rounding). A compiled
    model's file also holds its optimizer's state (for Adam two float32
    values per trainable weight), which quantization does not shrink; save
    `model.learner` for the deployable network alone.

    After Keras quantization the model gets a new optimizer (same
    configuration and step count) for its remaining trainable variables.

    What `adapt` does on a quantized model: ProtoNet computes prototypes with
    the quantized network (no weight changes). A MAML-family model adapts the
    quantized (dequantized-valued) weights in float32 with its usual inner
    loop; the returned task model is a copy of the learner with the same
    layer classes, so its file stores the *adapted* kernels re-quantized to
    `mode` (`quantize_weights(adapted)` puts them on the grid in memory too).

    Pruned weights stay zero (zero is on every grid); a `PruningMask` stays
    in place and is still saved.

    Args:
        model: a metakeras `MetaModel` (its `learner` is quantized) or a
            Keras model.
        mode: `"int8"`, `"int4"` or `"float8"`. Defaults to `"int8"`.
        layers: names of the layers to quantize; `None` quantizes every
            Dense, EinsumDense and convolution layer. Defaults to `None`.

    Returns:
        A dict mapping each quantized layer's name to `"keras"`, `"stored"`
        or `"weights"` (the kind of quantization it got, see above).

    Raises:
        ValueError: for an unsupported `mode`, unknown layer names, or a
            model that is not built.

    Example:

    ```python
    quantize_weights(maml, "int8")   # {"conv0": "stored", ..., "head": "stored"}
    maml.learner.save("conv4_int8.keras")   # about 4x smaller than in float32
    ```
    """
    _check_mode(mode)
    names = _layers.check_names(layers, "layers")
    learner = _layers.learner_of(model)
    if not learner.built:
        raise ValueError(
            f"The model {model.name!r} must be built (trained or called once) "
            "before it is quantized."
        )
    chosen = _layers.select_layers(learner, names, "layers")
    functional = getattr(model, "inner", None) is not None or bool(
        model._vectorized() if hasattr(model, "_vectorized") else False
    )
    kinds = {}
    native = []
    for layer in chosen:
        if (
            not functional
            and mode in _KERAS_MODES
            and type(layer) in _KERAS_QUANTIZABLE
        ):
            native.append(layer)
            kinds[layer.name] = "keras"
        else:
            kernel = layer.kernel
            kernel.assign(fake_quantize(kernel, mode))
            stored = _quantized_kernel.store_quantized(layer, mode)
            kinds[layer.name] = "stored" if stored else "weights"
    if native:
        ids = {id(layer) for layer in native}
        learner.quantize(mode, filters=lambda layer: id(layer) in ids)
        _rebuild_optimizer(model)
    return kinds


def fake_quantize(weights, mode="int8"):
    """Rounds a kernel to the `mode` grid, per output channel (last axis).

    Args:
        weights: a float kernel (tensor or variable); its last axis holds the
            output channels.
        mode: `"int8"`, `"int4"` or `"float8"`. Defaults to `"int8"`.

    Returns:
        A float tensor of the same shape and dtype whose values are
        `q / scale` for integer (or float8) `q`.
    """
    _check_mode(mode)
    weights = keras.ops.convert_to_tensor(weights)
    axis = tuple(range(len(weights.shape) - 1)) or None
    quantized, scale = _quantized_kernel.quantize_to_grid(weights, mode, axis)
    return keras.ops.cast(quantized, weights.dtype) / scale


@keras.saving.register_keras_serializable(package="metakeras")
class FakeQuantization(keras.constraints.Constraint):
    """Straight-through fake quantization of the inner loop's fast weights.

    Quantization-aware training keeps float "master" weights and runs the
    forward pass with their quantized values, passing gradients straight
    through the rounding. In metakeras the inner loop applies a variable's
    constraint to the fast weights after every inner step, so this
    constraint makes the adapted weights that score the query set (and so
    the meta-gradient) those of the quantized network:
    `w + stop_gradient(fake_quantize(w) - w)`. Applied by the optimizer to
    the variable itself it leaves the master weights unchanged (apart from
    the constraint it wraps), so small outer updates are not rounded away.

    Args:
        mode: `"int8"`, `"int4"` or `"float8"`. Defaults to `"int8"`.
        constraint: a constraint applied first (e.g. a `PruningMask`).
            Defaults to `None`.

    Raises:
        ValueError: for an unsupported `mode`.

    Example:

    ```python
    # Installed by `Quantization(fine_tune_epochs=k)`; by hand:
    dense.kernel.constraint = FakeQuantization("int8", dense.kernel.constraint)
    ```
    """

    def __init__(self, mode="int8", constraint=None):
        _check_mode(mode)
        self.mode = mode
        self.constraint = keras.constraints.get(constraint)

    def __call__(self, w):
        if self.constraint is not None:
            w = self.constraint(w)
        if isinstance(w, keras.Variable):
            return w
        # On Keras's device, where the rounding below computes (a
        # differentiable move for a tensor from elsewhere).
        w = keras.ops.convert_to_tensor(w)
        return w + keras.ops.stop_gradient(fake_quantize(w, self.mode) - w)

    def get_config(self):
        return {
            "mode": self.mode,
            "constraint": keras.constraints.serialize(self.constraint),
        }


@keras.saving.register_keras_serializable(package="metakeras")
class Quantization(keras.callbacks.Callback):
    """Quantizes the meta-learned weights at the end of training.

    A meta-learned initialisation is only useful if it still adapts well
    once compressed. At `on_train_end` this callback calls
    `quantize_weights(model, mode, layers)`: Keras's own int8/int4
    quantization for Dense layers of models that adapt without gradients
    (ProtoNet), and weight quantization onto the int8 grid for convolutions
    and for models with a gradient inner loop, float32 in memory and int8
    in the saved file (see `quantize_weights` for why, and for what `adapt`
    then does).

    With `fine_tune_epochs=k`, the last `k` epochs are quantization-aware:
    every quantized kernel gets a `FakeQuantization` constraint, so the
    inner loop's fast weights are fake-quantized with straight-through
    gradients and the meta-gradient optimizes the initialisation for the
    quantized network. This needs a gradient inner loop (MAML family); for
    other models it raises. The layers' own constraints (such as pruning
    masks) stay in force.

    The model is quantized in place and its optimizer is not meant to take
    further steps afterwards (quantization is the last stage).

    Args:
        mode: `"int8"`, `"int4"` or `"float8"`. Defaults to `"int8"`.
        fine_tune_epochs: number of final epochs trained quantization-aware.
            Defaults to `0`.
        layers: names of the layers to quantize; `None` for every Dense,
            EinsumDense and convolution layer. Defaults to `None`.

    Raises:
        ValueError: for an unsupported `mode`, a negative
            `fine_tune_epochs`, a `fine_tune_epochs` of a model without an
            inner loop, or unknown layer names (when training starts).

    Example:

    ```python
    model.fit(tasks, epochs=10, callbacks=[
        metakeras.callbacks.MagnitudePruning(0.5),
        metakeras.callbacks.Quantization("int8", fine_tune_epochs=2),
    ])
    model.save("int8.keras")
    ```
    """

    def __init__(self, mode="int8", fine_tune_epochs=0, layers=None):
        super().__init__()
        _check_mode(mode)
        check_int("fine_tune_epochs", fine_tune_epochs, 0)
        self.mode = mode
        self.fine_tune_epochs = int(fine_tune_epochs)
        self.layers = _layers.check_names(layers, "layers")

    def on_train_begin(self, logs=None):
        learner = _layers.learner_of(self.model)
        self._layers = _layers.select_layers(learner, self.layers, "layers")
        self._fake = {}
        if self.fine_tune_epochs and getattr(self.model, "inner", None) is None:
            raise ValueError(
                "`fine_tune_epochs` needs a model with a gradient inner loop (MAML, "
                f"MetaSGD, ANIL); {type(self.model).__name__} has none, so "
                "fake quantization would never run. Use fine_tune_epochs=0."
            )

    def on_epoch_begin(self, epoch, logs=None):
        epochs = self.params.get("epochs") if self.params else None
        if (
            self.fine_tune_epochs
            and not self._fake
            and epochs is not None
            and epoch >= epochs - self.fine_tune_epochs
        ):
            for layer in self._layers:
                kernel = layer.kernel
                self._fake[id(kernel)] = (kernel, kernel.constraint)
                kernel.constraint = FakeQuantization(
                    self.mode, constraint=kernel.constraint
                )

    def on_train_end(self, logs=None):
        for kernel, constraint in self._fake.values():
            kernel.constraint = constraint
        self._fake = {}
        self.quantized_layers_ = quantize_weights(
            self.model, self.mode, layers=[layer.name for layer in self._layers]
        )

    def get_config(self):
        return {
            "mode": self.mode,
            "fine_tune_epochs": self.fine_tune_epochs,
            "layers": self.layers,
        }


def _rebuild_optimizer(model):
    """Gives `model` an optimizer for its remaining trainable variables.

    Keras quantization replaces float kernels by int8 non-trainable ones; the
    old optimizer would keep (and save) moments of the removed kernels. The
    new one keeps the step count, so the model still reads as trained.
    """
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None or not optimizer.built:
        return
    fresh = optimizer.__class__.from_config(optimizer.get_config())
    fresh.build(model.trainable_variables)
    fresh.iterations.assign(optimizer.iterations)
    model.optimizer = fresh
