"""The Keras behaviour each entry of `metakeras._keras_compat` relies on.

Each test names its entry in its assertion messages: a failure after a Keras
upgrade says which private API changed and which entry to revisit.
"""

import contextlib
import copy
import importlib
import inspect
import os
import pkgutil
import re

import keras
import numpy as np
import pytest
import torch

import metakeras
from metakeras import _keras_compat


def dense_model(regularizer=None):
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(2, kernel_regularizer=regularizer)]
    )
    model.compile(optimizer="sgd", loss="mse")
    return model


def data(batches=1, batch_size=4):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batches * batch_size, 3)).astype("float32")
    y = rng.normal(size=(batches * batch_size, 2)).astype("float32")
    return x, y


class Batches(keras.utils.PyDataset):
    """Batch `i` holds inputs filled with `i`, to tell the batches apart."""

    def __init__(self, count=3):
        super().__init__()
        self.count = count

    def __len__(self):
        return self.count

    def __getitem__(self, index):
        return np.full((2, 3), float(index), "float32"), np.zeros((2, 2), "float32")


class EpochRecorder(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append(epoch)


# ------------------------------------------------------------- loss_tracker


def test_loss_tracker_is_the_compiled_loss_metric():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    assert _keras_compat.loss_tracker(model) is None, (
        "_keras_compat.loss_tracker: an uncompiled Keras model no longer has "
        "`_loss_tracker = None`."
    )
    model.compile(optimizer="sgd", loss="mse")
    tracker = _keras_compat.loss_tracker(model)
    assert isinstance(tracker, keras.metrics.Mean) and tracker.name == "loss", (
        "_keras_compat.loss_tracker: `Trainer._loss_tracker` is no longer the "
        f"Mean metric named 'loss' (got {tracker!r})."
    )
    assert model.metrics[0] is tracker, (
        "_keras_compat.loss_tracker: `model.metrics` no longer starts with it."
    )
    x, y = data()
    logs = model.evaluate(x, y, verbose=0, return_dict=True)
    np.testing.assert_allclose(
        logs["loss"],
        float(tracker.result()),
        rtol=1e-6,
        err_msg="_keras_compat.loss_tracker: Keras no longer reports the "
        "tracker's result as the logged loss.",
    )


# ------------------------------------------------------------- compute_loss


def test_compute_loss_is_the_public_total_loss():
    parameters = list(inspect.signature(keras.Model.compute_loss).parameters)
    assert parameters == ["self", "x", "y", "y_pred", "sample_weight", "training"], (
        "_keras_compat.compute_loss: the signature of the public "
        f"`Model.compute_loss` changed: {parameters}."
    )
    model = dense_model(regularizer=keras.regularizers.L2(0.5))
    x, y = data()
    y, y_pred = keras.ops.convert_to_tensor(y), model(x)
    loss = _keras_compat.compute_loss(model, y, y_pred)
    expected = keras.ops.mean(keras.ops.square(y - y_pred)) + sum(model.losses)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loss),
        keras.ops.convert_to_numpy(expected),
        rtol=1e-6,
        err_msg="_keras_compat.compute_loss: `Model.compute_loss` is no longer "
        "the compiled loss plus the regularization losses.",
    )


def test_compute_loss_passes_training_only_to_overrides_that_take_it():
    seen = []

    class WithTraining(keras.Model):
        def compute_loss(self, x, y, y_pred, sample_weight, training=True):
            seen.append(training)
            return keras.ops.zeros(())

    class WithoutTraining(keras.Model):  # written before Keras 3.3
        def compute_loss(self, x, y, y_pred, sample_weight):
            seen.append("old")
            return keras.ops.ones(())

    y = keras.ops.zeros((2, 1))
    _keras_compat.compute_loss(WithTraining(), y, y, training=False)
    value = _keras_compat.compute_loss(WithoutTraining(), y, y, training=False)
    assert seen == [False, "old"] and float(value) == 1.0, (
        "_keras_compat.compute_loss: `training` must reach overrides that take "
        f"it and be left out for those that do not (saw {seen})."
    )


# ----------------------------------------------------------- set_initial_epoch


def test_set_initial_epoch_from_on_train_begin_starts_fit_there():
    class StartAt(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            _keras_compat.set_initial_epoch(self.model, 2)

    model = dense_model()
    x, y = data()
    recorder = EpochRecorder()
    model.fit(x, y, epochs=4, verbose=0, callbacks=[StartAt(), recorder])
    assert recorder.epochs == [2, 3], (
        "_keras_compat.set_initial_epoch: `fit` no longer reads "
        f"`Trainer._initial_epoch` after `on_train_begin` (ran {recorder.epochs})."
    )
    again = EpochRecorder()
    model.fit(x, y, epochs=4, verbose=0, callbacks=[again])
    assert again.epochs == [2, 3], (
        "_keras_compat.set_initial_epoch: `fit` now clears `_initial_epoch`; "
        "the reset in `_ExactBackup.on_train_end` may be unnecessary."
    )
    _keras_compat.set_initial_epoch(model, None)
    reset = EpochRecorder()
    model.fit(x, y, epochs=2, verbose=0, callbacks=[reset])
    assert reset.epochs == [0, 1], (
        "_keras_compat.set_initial_epoch: `None` no longer restores `fit`'s "
        "own initial epoch."
    )


# ----------------------------------------------------------------- BuildHook


def test_symbolic_build_is_the_hook_keras_calls():
    signature = inspect.signature(keras.Model._symbolic_build)
    assert list(signature.parameters) == ["self", "iterator", "data_batch"], (
        "_keras_compat.BuildHook: `Trainer._symbolic_build` changed its "
        f"signature: {signature}."
    )
    source = inspect.getsource(keras.Model._symbolic_build)
    last = [line.strip() for line in source.splitlines() if line.strip()][-1]
    assert last == "self._post_build()", (
        "_keras_compat.BuildHook: Keras's `_symbolic_build` no longer ends with "
        f"`self._post_build()` (ends with {last!r}); the hook must do the same."
    )
    assert callable(getattr(keras.layers.Layer, "_post_build", None)), (
        "_keras_compat.BuildHook: `Layer._post_build` is gone."
    )


class Probe(_keras_compat.BuildHook, keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(2)
        self.batches = []

    def call(self, x):
        return self.dense(x)

    def _build_for_steps(self, first_batch):
        batch = first_batch()
        self.batches.append(batch)
        if not self.built:
            self(keras.ops.convert_to_tensor(batch[0]))


def test_build_hook_replaces_keras_symbolic_build():
    model = Probe()
    model.compile(optimizer="sgd", loss="mse")
    model.fit(Batches(), epochs=1, verbose=0, shuffle=False)
    assert len(model.batches) == 1, (
        "_keras_compat.BuildHook: `fit` did not call `_symbolic_build` once "
        f"(called {len(model.batches)} times)."
    )
    x, _ = model.batches[0]
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(x),
        np.zeros((2, 3)),
        err_msg="_keras_compat.BuildHook: the first batch read from Keras's epoch "
        "iterator is not the data's first batch (its items changed).",
    )
    model.evaluate(Batches(), verbose=0)
    x, y = data(batch_size=2)
    model.train_on_batch(x, y)
    model.test_on_batch(x, y)
    assert len(model.batches) == 4, (
        "_keras_compat.BuildHook: `evaluate`, `train_on_batch` and "
        "`test_on_batch` no longer all call `_symbolic_build`."
    )
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(model.batches[2][0]),
        x,
        err_msg="_keras_compat.BuildHook: `train_on_batch` no longer passes its "
        "data as `data_batch`.",
    )


# ------------------------------------------------------ BackupAndRestoreHooks


class RecordingBackup(_keras_compat.BackupAndRestoreHooks):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = []

    def _write_backup(self):
        self.calls.append("write")
        super()._write_backup()

    def _read_backup(self):
        self.calls.append("read")
        super()._read_backup()


def test_backup_hooks_are_called_where_keras_saves_and_loads(tmp_path):
    backup_dir = str(tmp_path / "backup")
    callback = RecordingBackup(backup_dir, delete_checkpoint=False)
    assert callback._metadata_path == os.path.join(
        backup_dir, "training_metadata.json"
    ), "_keras_compat.BackupAndRestoreHooks: Keras's metadata file moved."
    model = dense_model()
    x, y = data(batches=4, batch_size=2)
    model.fit(x, y, batch_size=2, epochs=2, verbose=0, callbacks=[callback])
    assert callback.calls == ["read", "write", "write"], (
        "_keras_compat.BackupAndRestoreHooks: Keras no longer calls `_load_model` "
        "once at the start and `_save_model` after every epoch "
        f"(calls: {callback.calls})."
    )
    assert sorted(os.listdir(backup_dir)) == [
        "latest.weights.h5",
        "training_metadata.json",
    ], "_keras_compat.BackupAndRestoreHooks: Keras's own backup files changed."
    batches = RecordingBackup(backup_dir, save_freq=2, delete_checkpoint=False)
    recorder = EpochRecorder()
    model.fit(x, y, batch_size=2, epochs=3, verbose=0, callbacks=[batches, recorder])
    assert recorder.epochs == [2], (
        "_keras_compat.BackupAndRestoreHooks: Keras's `_load_model` no longer "
        f"resumes at the saved epoch (ran {recorder.epochs})."
    )
    assert batches.calls == ["read", "write", "write"], (
        "_keras_compat.BackupAndRestoreHooks: `save_freq=2` over 4 batches no "
        f"longer calls `_save_model` twice (calls: {batches.calls})."
    )


def test_save_backup_goes_through_overrides_of_keras_hook(tmp_path):
    class Gated(RecordingBackup):
        def _save_model(self):
            self.calls.append("gate")
            super()._save_model()

    callback = Gated(str(tmp_path))
    callback.set_model(dense_model())
    callback._save_backup()
    assert callback.calls == ["gate", "write"], (
        "_keras_compat.BackupAndRestoreHooks: `_save_backup` must run a "
        f"subclass's `_save_model` override (calls: {callback.calls})."
    )


def test_exact_backups_count_batches_as_keras_does(tmp_path):
    """Not an entry: `_ExactBackup` counts batches itself, as Keras would."""
    from metakeras.models._resume import _ExactBackup

    keras_callback = keras.callbacks.BackupAndRestore(str(tmp_path), save_freq=3)
    exact = _ExactBackup(str(tmp_path), save_freq=3)
    exact._last_batch = exact._batches_since_save = 0
    # Two epochs of 7 batches, then steps_per_execution=2 (indices jump).
    for batch in [*range(7), *range(7), 1, 3, 5, 1, 3, 5]:
        assert exact._save_due(batch) == keras_callback._should_save_on_batch(batch), (
            f"_ExactBackup._save_due disagrees with Keras at batch {batch}."
        )


# ------------------------------------------------------------------ reclass


@keras.saving.register_keras_serializable(package="test_keras_compat")
class LoudDense(keras.layers.Dense):
    def get_config(self):
        return dict(super().get_config(), loud=True)

    @classmethod
    def from_config(cls, config):
        config.pop("loud")
        return super().from_config(config)


def test_reclass_keeps_a_built_layer_and_its_variables():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    layer = model.layers[0]
    kernel = layer.kernel
    x, _ = data()
    before = keras.ops.convert_to_numpy(model(x))
    assert "build" in vars(layer) and "quantize" in vars(layer), (
        "_keras_compat.reclass: `Layer.__new__` no longer stores `build` and "
        "`quantize` on the instance; the check on them may be relaxed."
    )
    assert _keras_compat.reclass(layer, LoudDense) is layer
    assert type(model.layers[0]) is LoudDense and layer.kernel is kernel
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(model(x)),
        before,
        err_msg="_keras_compat.reclass: a reclassed layer computes differently.",
    )
    config = keras.saving.serialize_keras_object(layer)
    assert config["registered_name"] == "test_keras_compat>LoudDense", (
        "_keras_compat.reclass: serialization no longer names the new class "
        f"(got {config.get('registered_name')!r})."
    )
    assert config["config"]["loud"] is True


def test_reclass_refuses_what_it_cannot_do():
    class Rebuilding(keras.layers.Dense):
        def build(self, input_shape):
            super().build(input_shape)

    with pytest.raises(TypeError, match="build"):
        _keras_compat.reclass(keras.layers.Dense(2), Rebuilding)
    with pytest.raises(TypeError, match="subclass"):
        _keras_compat.reclass(keras.layers.Dense(2), keras.layers.Conv1D)


def test_reclass_keeps_a_callback_copy(tmp_path):
    class Marked(keras.callbacks.BackupAndRestore):
        marked = True

    original = keras.callbacks.BackupAndRestore(str(tmp_path), save_freq=3)
    callback = _keras_compat.reclass(copy.copy(original), Marked)
    assert type(original) is keras.callbacks.BackupAndRestore
    assert callback.marked and callback.save_freq == 3, (
        "_keras_compat.reclass: a reclassed callback lost its state."
    )
    assert callback.backup_dir == str(tmp_path)


# ------------------------------------------------------ global_seed_generator


def test_global_seed_generator_drives_unseeded_random_calls():
    keras.utils.set_random_seed(1)
    assert _keras_compat.global_seed_generator() is None, (
        "_keras_compat.global_seed_generator: `set_random_seed` no longer "
        "drops the global generator."
    )
    keras.random.normal((2,))
    generator = _keras_compat.global_seed_generator()
    assert isinstance(generator, keras.random.SeedGenerator), (
        "_keras_compat.global_seed_generator: no generator under the global "
        f"attribute 'global_seed_generator' (got {generator!r})."
    )
    state = keras.ops.convert_to_numpy(generator.state)
    first = keras.ops.convert_to_numpy(keras.random.normal((3,)))
    generator.state.assign(state)
    again = keras.ops.convert_to_numpy(keras.random.normal((3,)))
    np.testing.assert_array_equal(
        first,
        again,
        err_msg="_keras_compat.global_seed_generator: restoring its state no "
        "longer repeats the unseeded draws.",
    )
    assert _keras_compat.global_seed_generator() is generator


def test_default_device_is_where_keras_puts_new_tensors():
    device = _keras_compat.default_device()
    assert isinstance(device, torch.device)
    assert keras.ops.convert_to_tensor(np.zeros(2)).device == device, (
        "_keras_compat.default_device: `get_device()` is no longer the device "
        "of `convert_to_tensor`."
    )
    with keras.device("cpu"):
        assert _keras_compat.default_device() == torch.device("cpu"), (
            "_keras_compat.default_device: a `keras.device` scope no longer "
            "sets the device `get_device()` reports."
        )


# ------------------------------------------------------------ flatten_layers


class Block(keras.layers.Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.norm = keras.layers.BatchNormalization()
        self.dense = keras.layers.Dense(3)

    def call(self, x, training=None):
        return self.dense(self.norm(x, training=training))


def test_flatten_layers_finds_sublayers_of_plain_layers():
    block = Block()
    inner = keras.Sequential([keras.Input((3,)), block])
    head = keras.layers.Dense(1)
    model = keras.Sequential([keras.Input((3,)), inner, head])
    layers = _keras_compat.flatten_layers(model)
    assert layers[0] is model, "_keras_compat.flatten_layers: `include_self`."
    for layer in (inner, block, block.norm, block.dense, head):
        assert any(found is layer for found in layers), (
            f"_keras_compat.flatten_layers: {layer.name} is missing."
        )
    assert len({id(layer) for layer in layers}) == len(layers), (
        "_keras_compat.flatten_layers: a layer is listed twice."
    )
    direct = _keras_compat.flatten_layers(model, include_self=False, recursive=False)
    assert not any(found is block.norm for found in direct) and any(
        found is inner for found in direct
    ), "_keras_compat.flatten_layers: `recursive=False` is not one level."
    assert _keras_compat.flatten_layers(head, include_self=False) == [], (
        "_keras_compat.flatten_layers: a Dense layer has sublayers."
    )
    assert [layer.name for layer in model.layers] == [inner.name, head.name]


# ---------------------------------------------------------------- remat_mode


def test_remat_mode_is_captured_at_construction_and_used_by_call(monkeypatch):
    assert _keras_compat.remat_mode(keras.layers.Dense(2)) is None, (
        "_keras_compat.remat_mode: a layer outside RematScope has a mode."
    )
    with keras.RematScope(mode="full"):
        layer = keras.layers.Dense(2)
    mode = _keras_compat.remat_mode(layer)
    assert getattr(mode, "mode", None) == "full", (
        f"_keras_compat.remat_mode: expected the mode 'full', got {mode!r}."
    )
    layer.build((None, 3))
    calls = []
    original = layer.rematerialized_call

    def recording(*args, **kwargs):
        calls.append(True)
        return original(*args, **kwargs)

    monkeypatch.setattr(layer, "rematerialized_call", recording)
    layer(keras.ops.ones((1, 3)))
    assert calls, (
        "_keras_compat.remat_mode: `Layer.__call__` no longer goes through "
        "`rematerialized_call` for a layer with a mode, so `stateless_forward` "
        "need not exclude such layers."
    )


# ------------------------------------------------------ loss_function_kwargs


def test_loss_function_kwargs_are_what_the_loss_function_gets():
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, axis=-1)
    kwargs = _keras_compat.loss_function_kwargs(loss)
    assert kwargs == {"from_logits": True, "ignore_class": None, "axis": -1}, (
        "_keras_compat.loss_function_kwargs: `LossFunctionWrapper._fn_kwargs` "
        f"changed: {kwargs}."
    )
    assert "axis" not in loss.get_config(), (
        "_keras_compat.loss_function_kwargs: `get_config()` now reports `axis`; "
        "it could replace the private `_fn_kwargs`."
    )
    kwargs["from_logits"] = False
    assert _keras_compat.loss_function_kwargs(loss)["from_logits"] is True
    y = keras.ops.convert_to_tensor([0, 2])
    logits = keras.ops.convert_to_tensor([[1.0, 2.0, 0.5], [0.1, 0.2, 3.0]])
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loss(y, logits)),
        keras.ops.convert_to_numpy(
            keras.ops.mean(
                keras.losses.sparse_categorical_crossentropy(
                    y, logits, **_keras_compat.loss_function_kwargs(loss)
                )
            )
        ),
        rtol=1e-6,
        err_msg="_keras_compat.loss_function_kwargs: the loss no longer calls its "
        "function with these keyword arguments.",
    )
    assert _keras_compat.loss_function_kwargs(keras.losses.MeanSquaredError()) == {}


# ---------------------------------------------------- shadowed private names


def _keras_private_names(cls):
    names = set()
    for base in cls.__mro__:
        if not base.__module__.startswith("keras."):
            continue
        names.update(n for n in vars(base) if re.fullmatch(r"_[a-z]\w*", n))
        with contextlib.suppress(OSError, TypeError):  # no source: C classes
            names.update(re.findall(r"self\.(_[a-z]\w*)", inspect.getsource(base)))
    return names


def _metakeras_keras_subclasses():
    for info in pkgutil.walk_packages(metakeras.__path__, "metakeras."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for cls in vars(module).values():
            if (
                inspect.isclass(cls)
                and cls.__module__ == module.__name__
                and any(b.__module__.startswith("keras.") for b in cls.__mro__)
            ):
                yield cls


def _own_parts(cls):
    """`cls` and the metakeras mixins it inherits (`MetaModel`'s), not compat's."""
    return [cls] + [
        base
        for base in cls.__mro__[1:]
        if base.__module__.startswith("metakeras.")
        and base.__module__ != "metakeras._keras_compat"
        and not any(b.__module__.startswith("keras.") for b in base.__mro__)
    ]


# The Keras private names that compat classes use on purpose. (`BuildHook`
# is a plain mixin, not a Keras subclass, so it is not checked here.)
_IN_COMPAT = {
    "metakeras._keras_compat.BackupAndRestoreHooks": {
        "_save_model",
        "_load_model",
        "_training_metadata_path",
    },
}


def test_no_metakeras_class_touches_keras_private_names_outside_compat():
    """Private Keras members on `self` are reached only in `_keras_compat`.

    A metakeras subclass of a Keras class that defines or uses a name Keras
    also uses privately either depends on Keras internals (move it to
    `_keras_compat`) or shadows them by accident (rename it); either way a
    Keras upgrade that adds the name breaks it silently.
    """
    clashes = {}
    for cls in _metakeras_keras_subclasses():
        own = set()
        for part in _own_parts(cls):
            own |= {n for n in vars(part) if re.fullmatch(r"_[a-z]\w*", n)}
            own |= set(re.findall(r"self\.(_[a-z]\w*)", inspect.getsource(part)))
        name = f"{cls.__module__}.{cls.__name__}"
        shared = own & _keras_private_names(cls) - _IN_COMPAT.get(name, set())
        if shared:
            clashes[name] = sorted(shared)
    assert not clashes, (
        "Private Keras names used outside metakeras._keras_compat (or "
        f"shadowed by accident): {clashes}."
    )


def test_keras_src_is_imported_only_by_compat():
    root = os.path.dirname(metakeras.__file__)
    users = []
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            if not name.endswith(".py") or name == "_keras_compat.py":
                continue
            with open(path, encoding="utf-8") as f:
                if "keras.src" in f.read():
                    users.append(os.path.relpath(path, root))
    assert not users, f"`keras.src` outside metakeras._keras_compat: {users}."
