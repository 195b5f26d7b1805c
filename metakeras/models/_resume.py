"""Exact resumption of an interrupted `MetaModel.fit` from a Keras backup.

Keras's `BackupAndRestore` restores the weights, the optimizer state and the
epoch number, and restarts that epoch from its first batch. That is not
enough to continue *exactly* where a killed run stopped:

- a backup written mid-epoch (`save_freq=<int>`) would replay the epoch's
  first batches on weights that have already learned from them;
- the task source's position (`TaskSampler.epoch`, which seeds its episodes)
  restarts at 0 in a new process;
- the random states that training consumes are not saved: Python's `random`
  (Keras shuffles a `PyDataset`'s batch order with it), NumPy's, PyTorch's
  (the inner loop's mini-batch permutations, the data loader's seed) and the
  Keras seed-generator states (Dropout), which `save_weights` leaves out;
- the backup files are written in place, so a kill during a write leaves a
  truncated file, and the weights and the metadata can disagree.

`MetaModel.fit` therefore runs every `keras.callbacks.BackupAndRestore` it is
given (also subclasses such as `metakeras.distributed.BackupAndRestore`) with
the logic of `_ExactBackup` mixed in: each backup is a new pair of files
(`ckpt-<id>.weights.h5` and `ckpt-<id>.state.npz`, both written to a
temporary name and renamed), committed by atomically replacing
`training_metadata.json`, which names the pair. On restore the epoch is
re-entered with the random state it had when it began (so Keras draws the
same batch order), the batches the backup already covers are fetched but not
trained on, and the random states, metric states and seed generators of the
moment of the backup are put back before the next batch.
"""

import contextlib
import copy
import json
import os
import random
import uuid

import keras
import numpy as np
import torch

from metakeras import _keras_compat
from metakeras._checks import is_int
from metakeras._io import atomic_path

_PREFIX = "ckpt-"
_FORMAT = 1


def exact_backups(callbacks, task_source):
    """Returns `callbacks` with every `BackupAndRestore` made exact.

    The callbacks given are not modified: a backup callback is replaced by a
    copy whose class mixes in `_ExactBackup` (`_keras_compat.reclass`).

    Args:
        callbacks: the `callbacks` argument of `fit`.
        task_source: the `x` argument of `fit`, whose position (an integer
            `epoch` attribute, also behind a `.tasks` wrapper) is saved.

    Returns:
        A new list of callbacks, or `callbacks` itself when it is `None` or
        a `keras.callbacks.CallbackList`.
    """
    if callbacks is None or isinstance(callbacks, keras.callbacks.CallbackList):
        return callbacks
    result = []
    for callback in callbacks:
        if isinstance(callback, keras.callbacks.BackupAndRestore):
            callback = copy.copy(callback)
            if not isinstance(callback, _ExactBackup):
                _keras_compat.reclass(callback, _exact_class(type(callback)))
            callback._task_source = task_source
        result.append(callback)
    return result


_CLASSES = {}


def _exact_class(cls):
    if issubclass(_ExactBackup, cls):
        return _ExactBackup
    if cls not in _CLASSES:
        # The subclass's own overrides (e.g. rank-0-only writing) run first
        # and reach `_ExactBackup` through `super()`.
        _CLASSES[cls] = type(cls.__name__, (cls, _ExactBackup), {})
    return _CLASSES[cls]


class _ExactBackup(_keras_compat.BackupAndRestoreHooks):
    """`keras.callbacks.BackupAndRestore` with exact, crash-consistent resume.

    It counts the epochs and batches itself (Keras's callback keeps the
    same counts in private attributes) and replaces what a backup holds
    through `_write_backup` and `_read_backup`.
    """

    _task_source = None

    def on_train_begin(self, logs=None):
        self._pending = None
        self._replay = 0
        self._train_function = None
        self._epoch_rng = None
        self._batches_done = 0
        self._epoch_in_progress = 0
        self._last_batch = 0
        self._batches_since_save = 0
        super().on_train_begin(logs)

    def on_epoch_begin(self, epoch, logs=None):
        # Set here, not only in `on_epoch_end` as Keras does, so that a batch
        # backup in the first epoch after a restore records this epoch.
        self._epoch_in_progress = epoch
        pending = self._pending
        if pending is not None and epoch == pending["epoch"]:
            if pending["batches"]:
                _set_rng(pending["epoch_rng"])
                self._start_replay(pending)
            else:
                _set_rng(pending["rng"])
                self._pending = None
        # Restored above, this equals the snapshot of the interrupted run.
        self._epoch_rng = _get_rng()

    def on_train_batch_end(self, batch, logs=None):
        if self._replay:
            self._last_batch = batch
            self._replay -= 1
            if not self._replay:
                self._end_replay()
            return
        if self._save_due(batch):
            self._batches_done = batch + 1
            self._save_backup()

    def on_epoch_end(self, epoch, logs=None):
        self._epoch_in_progress = epoch + 1
        self._last_batch = 0
        if self.save_freq == "epoch":
            self._batches_done = 0
            self._save_backup()

    def on_train_end(self, logs=None):
        if self._train_function is not None:
            self.model.train_function = self._train_function
            self._train_function = None
        # Keras never clears it, so a later `fit` would skip epochs.
        _keras_compat.set_initial_epoch(self.model, None)
        super().on_train_end(logs)

    def _save_due(self, batch):
        """Whether a backup is due after `batch`, counted as Keras counts.

        Batch indices may jump by more than one (`steps_per_execution`); an
        index not above the last one starts a new epoch.
        """
        if self.save_freq == "epoch":
            return False
        if batch <= self._last_batch:
            self._batches_since_save += batch + 1
        else:
            self._batches_since_save += batch - self._last_batch
        self._last_batch = batch
        if self._batches_since_save >= self.save_freq:
            self._batches_since_save = 0
            return True
        return False

    # ---------------------------------------------------------------- replay

    def _start_replay(self, pending):
        """Fetches the batches the backup covers without training on them."""
        model = self.model
        self._replay = pending["batches"]
        self._train_function = model.train_function
        restored = []

        def replay(data):
            if not restored:
                _assign(model.metrics_variables, pending["metrics"])
                restored.append(True)
            return model.get_metrics_result()

        model.train_function = replay

    def _end_replay(self):
        pending = self._pending
        self.model.train_function = self._train_function
        self._train_function = None
        _set_rng(pending["rng"])
        self._batches_since_save = pending["since_save"]
        self._pending = None

    # ------------------------------------------------------------ save, load

    def _write_backup(self):
        model = self.model
        os.makedirs(self.backup_dir, exist_ok=True)
        name = f"{_PREFIX}{uuid.uuid4().hex[:16]}"
        weights = os.path.join(self.backup_dir, f"{name}.weights.h5")
        with atomic_path(weights) as tmp:
            model.save_weights(tmp)
        state = {
            "variables": [_numpy(v) for v in model.non_trainable_variables],
            "metrics": [_numpy(v) for v in model.metrics_variables],
            "rng": _get_rng(),
            "epoch_rng": self._epoch_rng or _get_rng(),
        }
        state_path = os.path.join(self.backup_dir, f"{name}.state.npz")
        with atomic_path(state_path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **_flatten_state(state))
        source = _position_holder(self._task_source)
        metadata = {
            # Keras's keys and meaning: the epoch in progress (or the next
            # one after an end-of-epoch backup) and the last batch index.
            "epoch": int(self._epoch_in_progress),
            "batch": int(self._last_batch),
            "batches_done": int(self._batches_done),
            "steps": (self.params or {}).get("steps"),
            "since_save": int(self._batches_since_save),
            "task_source_epoch": None if source is None else int(source.epoch),
            "checkpoint": name,
            "format": _FORMAT,
        }
        with atomic_path(self._metadata_path) as tmp, open(tmp, "w") as f:
            json.dump(metadata, f)
        # Older pairs are unreferenced once the metadata names the new one.
        for entry in os.listdir(self.backup_dir):
            if entry.startswith(_PREFIX) and not entry.startswith(name + "."):
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(self.backup_dir, entry))

    def _read_backup(self):
        metadata = _read_metadata(self._metadata_path)
        if metadata is None or "checkpoint" not in metadata:
            # Nothing saved yet, or a backup written by Keras's own callback.
            super()._read_backup()
            source = _position_holder(self._task_source)
            epoch = metadata.get("epoch", 0) if metadata else 0
            if source is not None and epoch and getattr(source, "resample", True):
                source.epoch += int(epoch)
            return
        model = self.model
        if not model.built:
            raise ValueError(
                "To use BackupAndRestore the model must be built before `fit()`; "
                "call it on a batch of data first."
            )
        steps = (self.params or {}).get("steps")
        known = metadata["steps"] is not None and steps is not None
        if known and (metadata["steps"] != steps or metadata["batches_done"] > steps):
            raise ValueError(
                f"The backup in {self.backup_dir!r} was written by a run with "
                f"{metadata['steps']} batches per epoch, but this `fit` has "
                f"{steps}; it cannot be resumed exactly. Use the same task "
                "source, or delete the backup folder to start over."
            )
        name = metadata["checkpoint"]
        weights = os.path.join(self.backup_dir, f"{name}.weights.h5")
        state_path = os.path.join(self.backup_dir, f"{name}.state.npz")
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        try:
            model.load_weights(weights)
            with np.load(state_path, allow_pickle=False) as data:
                state = _unflatten_state(dict(data))
        except Exception as error:
            raise ValueError(
                f"The backup in {self.backup_dir!r} is damaged: cannot read "
                f"{os.path.basename(weights)!r} or {os.path.basename(state_path)!r} "
                f"({type(error).__name__}: {error}). Delete the folder to start "
                "over."
            ) from error
        variables = model.non_trainable_variables
        if len(variables) != len(state["variables"]) or any(
            tuple(v.shape) != value.shape
            for v, value in zip(variables, state["variables"])
        ):
            raise ValueError(
                f"The backup in {self.backup_dir!r} holds a different model (its "
                "non-trainable variables do not match); delete the folder to "
                "start over."
            )
        _assign(variables, state["variables"])
        source = _position_holder(self._task_source)
        if source is not None and metadata["task_source_epoch"] is not None:
            source.epoch = int(metadata["task_source_epoch"])
        _keras_compat.set_initial_epoch(model, int(metadata["epoch"]))
        self._epoch_in_progress = int(metadata["epoch"])
        metrics = state["metrics"]
        if _world_size() > 1:
            metrics = None  # Per-process metric states; let each rank recount.
        self._pending = {
            "epoch": int(metadata["epoch"]),
            "batches": int(metadata["batches_done"]),
            "since_save": int(metadata.get("since_save", 0)),
            "rng": state["rng"],
            "epoch_rng": state["epoch_rng"],
            "metrics": metrics,
        }


# ------------------------------------------------------------------- helpers


def _read_metadata(path):
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            metadata = json.load(f)
        int(metadata["epoch"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(
            f"The backup metadata {path!r} is unreadable ({error}); delete its "
            "folder to start over."
        ) from error
    return metadata


def _position_holder(source):
    """The object whose integer `epoch` seeds the task source's episodes."""
    for _ in range(4):
        if source is None:
            return None
        epoch = getattr(source, "epoch", None)
        if is_int(epoch):
            return source
        source = getattr(source, "tasks", None)
    return None


def _numpy(variable):
    return np.array(keras.ops.convert_to_numpy(variable.value))


def _assign(variables, values):
    if values is None:
        return
    for variable, value in zip(variables, values):
        variable.assign(value)


def _world_size():
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return 1


def _get_rng():
    """Every random state that training consumes, as NumPy arrays."""
    version, words, gauss = random.getstate()
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state = {
        "python_version": np.int64(version),
        "python_words": np.asarray(words, dtype="uint64"),
        "python_gauss": np.float64(np.nan if gauss is None else gauss),
        "numpy_keys": np.asarray(keys, dtype="uint32"),
        "numpy_meta": np.asarray([position, has_gauss], dtype="int64"),
        "numpy_cached": np.float64(cached),
        "torch": torch.get_rng_state().numpy(),
    }
    if torch.cuda.is_available():
        for i, value in enumerate(torch.cuda.get_rng_state_all()):
            state[f"cuda_{i}"] = value.numpy()
    generator = _keras_compat.global_seed_generator()
    if generator is not None:
        state["keras_seed"] = _numpy(generator.state)
    return state


def _set_rng(state):
    gauss = float(state["python_gauss"])
    random.setstate(
        (
            int(state["python_version"]),
            tuple(int(w) for w in state["python_words"]),
            None if np.isnan(gauss) else gauss,
        )
    )
    position, has_gauss = (int(v) for v in state["numpy_meta"])
    np.random.set_state(
        (
            "MT19937",
            state["numpy_keys"],
            position,
            has_gauss,
            float(state["numpy_cached"]),
        )
    )
    torch.set_rng_state(torch.from_numpy(np.array(state["torch"], dtype="uint8")))
    cuda = sorted(k for k in state if k.startswith("cuda_"))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(
            [torch.from_numpy(np.array(state[k], dtype="uint8")) for k in cuda]
        )
    generator = _keras_compat.global_seed_generator()
    if generator is not None and "keras_seed" in state:
        generator.state.assign(state["keras_seed"])


def _flatten_state(state):
    flat = {}
    for group in ("variables", "metrics"):
        flat[f"{group}__count"] = np.int64(len(state[group]))
        for i, value in enumerate(state[group]):
            flat[f"{group}__{i}"] = value
    for group in ("rng", "epoch_rng"):
        for key, value in state[group].items():
            flat[f"{group}__{key}"] = value
    return flat


def _unflatten_state(flat):
    state = {}
    for group in ("variables", "metrics"):
        count = int(flat[f"{group}__count"])
        state[group] = [flat[f"{group}__{i}"] for i in range(count)]
    for group in ("rng", "epoch_rng"):
        prefix = f"{group}__"
        state[group] = {
            key[len(prefix) :]: value
            for key, value in flat.items()
            if key.startswith(prefix)
        }
    return state
