"""Every use of private Keras API in metakeras, in one place.

metakeras reaches below Keras's public API only through this module. Each
entry says what it does, why no public Keras API serves, and which Keras
versions it was checked with; `tests/test_keras_compat.py` checks the Keras
behaviour each entry relies on, so a Keras upgrade that changes it fails
there, naming the entry, rather than somewhere deep in a training run.

Where a public route exists metakeras takes it instead, and nothing for it
lives here: `keras.StatelessScope` (not `keras.src.backend`), the public
`Model.compute_loss` (see `compute_loss`), and `MetaModel.fit`'s exact
backups count their own batches rather than reading
`BackupAndRestore._current_epoch`, `_last_batch_seen`,
`_batches_seen_since_last_saving` and `_should_save_on_batch`.

All entries were checked with Keras 3.15.1 (the version installed when
this module was written; no other version was tested).
"""

import inspect
import weakref

import keras
import torch


def loss_tracker(model):
    """The metric that holds a compiled model's mean loss, logged as `"loss"`.

    A custom `train_step`/`test_step` updates it exactly as Keras's own
    steps do, so `fit` and `evaluate` report the loss through Keras's
    metrics machinery (`compute_metrics`, `get_metrics_result`,
    `reset_metrics`, `metrics_variables`).

    Why private: Keras creates it in `compile` as `Trainer._loss_tracker`
    and exposes no accessor. `model.metrics[0]` is the same object, but only
    by an undocumented ordering, and walks every layer on each call; an own
    `keras.metrics.Mean` would change `model.metrics` and the order of
    `metrics_variables`, which exact backups save.

    Checked with Keras 3.15.1.

    Args:
        model: a `keras.Model`.

    Returns:
        A `keras.metrics.Mean` named `"loss"`, or `None` before `compile`.
    """
    return model._loss_tracker


def compute_loss(model, y, y_pred, training=True):
    """The model's total loss on predictions, as Keras's steps compute it.

    The public `model.compute_loss` (the compiled loss plus the layers'
    regularization losses). Keras's own steps call the private wrapper
    `Trainer._compute_loss`, which leaves `training` out for overrides
    of `compute_loss` written before Keras 3.3 (without that argument); this
    does the same through the public method, so no private API is used.

    Checked with Keras 3.15.1.

    Args:
        model: a compiled `keras.Model`.
        y: the targets.
        y_pred: the predictions.
        training: whether the loss is for a training step. Defaults to
            `True`.

    Returns:
        The total loss, a scalar tensor.
    """
    if _takes_training(model.compute_loss):
        return model.compute_loss(None, y, y_pred, None, training=training)
    return model.compute_loss(None, y, y_pred, None)


_TAKES_TRAINING = weakref.WeakKeyDictionary()


def _takes_training(method):
    function = getattr(method, "__func__", method)
    takes = _TAKES_TRAINING.get(function)
    if takes is None:
        takes = "training" in inspect.signature(function).parameters
        _TAKES_TRAINING[function] = takes
    return takes


def set_initial_epoch(model, epoch):
    """Makes the `fit` that is starting begin at `epoch` (or not, with `None`).

    Set from a callback's `on_train_begin`; `fit` reads it right after.
    Keras's `BackupAndRestore` restores a run this way, and never clears the
    value, so a later `fit` of the same model would skip epochs: reset it
    to `None` in `on_train_end`.

    Why private: `fit` takes `initial_epoch` before any callback runs, and
    `Trainer._initial_epoch` is the only way a callback can change it.

    Checked with Keras 3.15.1.

    Args:
        model: the `keras.Model` being trained.
        epoch: the first epoch to run, or `None` for `fit`'s own
            `initial_epoch`.
    """
    model._initial_epoch = epoch


class BuildHook:
    """Mixin for a `keras.Model` that builds itself before its first step.

    Before the first step of `fit`, `evaluate`, `train_on_batch` and
    `test_on_batch`, Keras builds the model, its compiled loss and metrics
    symbolically from a batch it pulls from the data (which, for a
    `PyDataset`, shifts the epoch's batches), then builds the optimizer and
    runs the backend's post-build step (on torch: registering the variables
    as module parameters). A model with this mixin runs its own
    `_build_for_steps(first_batch)` instead, where `first_batch()` fetches
    the first batch only when called, followed by the same post-build step.

    Why private: the step is `Trainer._symbolic_build`, called by the
    backend trainers with no public hook or flag to replace it, and the
    post-build step is `Layer._post_build`. `first_batch` reads Keras's
    epoch iterator, whose items (`(begin_step, end_step, data)`, with `data`
    a list of batches or an iterator of them) are not public either.

    Checked with Keras 3.15.1.
    """

    def _symbolic_build(self, iterator=None, data_batch=None):
        def first_batch():
            if data_batch is not None:
                return data_batch
            return _first_batch(iterator)

        self._build_for_steps(first_batch)
        self._post_build()

    def _build_for_steps(self, first_batch):
        """Builds what the first step needs; override it.

        Args:
            first_batch: a function returning the first batch of the data.
        """
        raise NotImplementedError(
            f"{type(self).__name__} must implement `_build_for_steps`."
        )


def _first_batch(iterator):
    for item in iterator:
        data = item[-1] if isinstance(item, tuple) else item
        if isinstance(data, (list, tuple)):
            return data[0]
        return next(data)
    raise ValueError("The task source yielded no episodes.")


class BackupAndRestoreHooks(keras.callbacks.BackupAndRestore):
    """`keras.callbacks.BackupAndRestore` with replaceable backup writing and reading.

    Keras's callback writes a backup in `_save_model` (at the end of an
    epoch, or every `save_freq` batches) and reads it in `_load_model`
    (from `on_train_begin`, and once more with the previous backup after an
    `OSError` when `double_checkpoint=True`). Subclasses of this class
    override `_write_backup` and `_read_backup` instead, which default to
    Keras's own behaviour, and call `_save_backup` to save on a schedule
    of their own; `_metadata_path` is the file that names the backup's
    epoch.

    Why private: Keras offers no public hook for what a backup holds; its
    `_save_model`, `_load_model` and `_training_metadata_path` are private.

    Checked with Keras 3.15.1.
    """

    def _save_model(self):
        self._write_backup()

    def _load_model(self):
        self._read_backup()

    def _save_backup(self):
        """Saves a backup now, through any subclass's override of Keras's hook."""
        self._save_model()

    def _write_backup(self):
        """Writes a backup; by default Keras's weights and metadata files."""
        super()._save_model()

    def _read_backup(self):
        """Restores the backup, if any; by default as Keras does."""
        super()._load_model()

    @property
    def _metadata_path(self):
        """The backup's `training_metadata.json`, where Keras looks for it."""
        return self._training_metadata_path


def reclass(obj, cls):
    """Changes the class of a Keras object in place.

    The object keeps its identity and its attributes, and gains the methods
    of `cls`, a subclass of its class; `cls.__init__` does not run, so the
    caller sets any attribute `cls` adds. Used where the object cannot be
    replaced by a new one:

    - a built layer becomes its quantized-kernel twin (a registered
      subclass that saves its kernel quantized): a layer cannot be swapped
      inside a functional or `Sequential` model, the meta-model, the
      optimizer and user code hold references to its variables, and the
      saved file must name the twin's class so it loads back quantized;
    - a copy of a user's `BackupAndRestore` (any subclass) gains the exact
      resumption logic beneath the subclass's own overrides, which must
      keep running (a wrapper callback would bypass them).

    Why private: Python allows it, but whether it is safe depends on Keras
    internals: Keras objects keep their state in the instance `__dict__`
    and not by class, except that `Layer.__new__` stores wrappers of the
    original class's `build` and `quantize` on each layer, so `cls` must
    not override those two methods.

    Checked with Keras 3.15.1.

    Args:
        obj: a Keras layer or callback.
        cls: a subclass of `type(obj)` that adds methods, not state.

    Returns:
        `obj`, now an instance of `cls`.

    Raises:
        TypeError: if `cls` is not a subclass of `type(obj)`, or is a layer
            class that overrides `build` or `quantize`.
    """
    if not issubclass(cls, type(obj)):
        raise TypeError(
            f"reclass: {cls.__name__} is not a subclass of {type(obj).__name__}."
        )
    if isinstance(obj, keras.layers.Layer):
        for name in ("build", "quantize"):
            if getattr(cls, name) is not getattr(type(obj), name):
                raise TypeError(
                    f"reclass: {cls.__name__} overrides `{name}`, which a layer "
                    f"keeps from its original class {type(obj).__name__}."
                )
    obj.__class__ = cls
    return obj


def global_seed_generator():
    """The `keras.random.SeedGenerator` behind unseeded Keras random calls.

    Keras creates it on the first `keras.random` call without a seed (e.g.
    `Dropout` without `seed`) and drops it in `keras.utils.set_random_seed`.
    Exact backups save and restore its state like the Python, NumPy and
    PyTorch random states.

    Why private: it lives in `keras.src.backend.common.global_state`; the
    private `keras.src.random.seed_generator.global_seed_generator()` would
    create one when none exists, which changes the random stream.

    Checked with Keras 3.15.1.

    Returns:
        The generator, or `None` while none exists.
    """
    from keras.src.backend.common import global_state

    return global_state.get_global_attribute("global_seed_generator")


def flatten_layers(layer, include_self=True, recursive=True):
    """Every layer tracked inside `layer`, depth first, each once.

    Unlike `Model.layers` it covers layers that are not models (a custom
    layer's sublayers) and the layers nested at every depth.

    Why private: Keras walks its tracked sublayers with
    `Layer._flatten_layers` (over `Layer._layers`); no public attribute
    lists the sublayers of a layer that is not a model.

    Checked with Keras 3.15.1.

    Args:
        layer: a Keras layer or model.
        include_self: whether `layer` itself comes first. Defaults to
            `True`.
        recursive: whether to include sublayers of sublayers. Defaults to
            `True`.

    Returns:
        A list of layers.
    """
    return layer._flatten_layers(include_self=include_self, recursive=recursive)


def remat_mode(layer):
    """The rematerialization mode `layer` was created with, or `None`.

    A layer created inside `keras.RematScope` recomputes its activations in
    the backward pass: `Layer.__call__` then runs `call` through
    `rematerialized_call`, so calling `layer.call` directly would skip it.

    Why private: the mode is captured at construction as
    `Operation._remat_mode`; `keras.RematScope` only reports the scope
    active now.

    Checked with Keras 3.15.1.

    Args:
        layer: a Keras layer.

    Returns:
        Keras's record of the scope's settings (`mode`,
        `output_size_threshold`, `layer_names`), or `None` for a layer
        without rematerialization.
    """
    return layer._remat_mode


def loss_function_kwargs(loss):
    """The keyword arguments a built-in loss class passes to its function.

    For example `{"from_logits": True, "ignore_class": None, "axis": -1}`
    for `keras.losses.SparseCategoricalCrossentropy(from_logits=True)`.

    Why private: the built-in losses are `LossFunctionWrapper`s keeping
    these in `_fn_kwargs`; `get_config()` does not report them all
    (`SparseCategoricalCrossentropy` leaves out `axis`).

    Checked with Keras 3.15.1.

    Args:
        loss: a `keras.losses.Loss`.

    Returns:
        A new dict; empty for a loss that is not such a wrapper.
    """
    return dict(getattr(loss, "_fn_kwargs", {}))


def default_device():
    """The `torch.device` Keras puts new tensors on (`convert_to_tensor`).

    A GPU when there is one, unless a `keras.device(...)` scope says
    otherwise. metakeras copies large host arrays there itself (through
    pinned memory, see `metakeras.models._checks.to_tensor`) and needs to
    know where Keras would have put them.

    Why private: Keras's torch backend chooses the device in
    `keras.src.backend.torch.core.get_device()`; no public API reports it
    without creating a tensor.

    Checked with Keras 3.15.1.

    Returns:
        A `torch.device`.
    """
    from keras.src.backend.torch.core import get_device

    device = get_device()
    return device if isinstance(device, torch.device) else torch.device(device)
