"""Multi-process meta-training with `torch.distributed` (launched by `torchrun`).

Data parallelism over the meta-batch: each of the `W` processes (ranks) takes
a disjoint `1/W` share of the tasks of every meta-batch, computes the
meta-gradient of its share, and the meta-gradients are averaged with one
all-reduce before the outer optimizer step. Every rank then applies the same
step to the same weights, so all ranks hold identical weights throughout.

- `initialize()` joins the process group that `torchrun` describes in its
  environment variables (a no-op outside `torchrun`).
- `shard(tasks)` gives this rank its share of every meta-batch of a task
  source. All ranks draw from the *same* seeded sampler, so the union of the
  ranks' tasks is exactly the single-process meta-batch.
- `MetaModel` does the rest once the process group exists: it broadcasts
  rank 0's weights when `fit` starts, averages the meta-gradients and the
  learner's floating state (BatchNormalization moving statistics) over the
  ranks before every outer step, and computes the logged loss and metrics
  over all ranks' tasks.

No `DistributedDataParallel`: the inner loop is a pure function of the
weights (`stateless_call`, `torch.func`), so the meta-gradient is an explicit
`torch.autograd.grad` result, not a `.grad` that DDP's autograd hooks could
bucket; DDP's hooks also misbehave under second-order gradients, cloned
modules and functional calls (the learn2learn issues #128, #170, #197 and
#263). One all-reduce of the finished meta-gradient is simpler and exact.

Example:

```python
# train.py; run with: torchrun --nproc-per-node=2 train.py
import metakeras
from metakeras import distributed

distributed.initialize()  # before building the model
tasks = metakeras.tasks.SinusoidTasks(meta_batch_size=24, seed=0)
model = metakeras.MAML(learner)
model.compile(optimizer="adam", loss="mse")
model.fit(distributed.shard(tasks), epochs=10,
          verbose=1 if distributed.rank() == 0 else 0)
```
"""

import atexit
import contextlib
import datetime
import math
import numbers
import os

import keras
import torch
import torch.distributed as dist

from metakeras import _keras_compat

BACKENDS = ("gloo", "nccl")
DEFAULT_TIMEOUT_S = 1800.0
_TIMEOUT_ENV = "METAKERAS_DIST_TIMEOUT"
_BACKEND_ENV = "METAKERAS_DIST_BACKEND"
_TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")

__all__ = [
    "BACKENDS",
    "BackupAndRestore",
    "all_reduce_mean",
    "broadcast",
    "initialize",
    "is_distributed",
    "rank",
    "shard",
    "world_size",
]


def is_distributed():
    """Whether this process trains together with other processes.

    Returns:
        `True` when a `torch.distributed` process group is initialized and
        holds more than one process; `False` otherwise, in which case every
        helper of this module is a no-op.

    Example:

    >>> from metakeras import distributed
    >>> distributed.is_distributed()  # a plain `python` process
    False
    """
    return _group_ready() and dist.get_world_size() > 1


def rank():
    """This process's rank, `0` for the process that writes files and logs.

    Before `initialize()` it reads `torchrun`'s `RANK` variable, so it can
    decide early which process prints.

    Returns:
        The rank in the process group if one is initialized, else the `RANK`
        environment variable, else `0`.

    Example:

    >>> from metakeras import distributed
    >>> distributed.rank()
    0
    """
    if _group_ready():
        return dist.get_rank()
    return _env_int("RANK", 0)


def world_size():
    """The number of processes training together.

    Returns:
        The size of the process group if one is initialized, else the
        `WORLD_SIZE` environment variable, else `1`.

    Example:

    >>> from metakeras import distributed
    >>> distributed.world_size()
    1
    """
    if _group_ready():
        return dist.get_world_size()
    return _env_int("WORLD_SIZE", 1)


def initialize(backend=None, timeout=None):
    """Joins the process group that `torchrun` set up for this process.

    Call it once per process, before building the model: with `nccl` it
    also selects this process's GPU (`LOCAL_RANK`), where Keras then puts
    the model. Outside `torchrun` (no `RANK`, `WORLD_SIZE`, `MASTER_ADDR`,
    `MASTER_PORT` in the environment) it does nothing, so one script runs
    both ways. Calling it again is a no-op. The process group is destroyed
    when the process exits.

    A process that stops answering cannot hang the others forever: joining
    and every later collective operation give up after `timeout` seconds
    with an error. Under `torchrun`, a process that fails makes `torchrun`
    stop the others and exit with a non-zero code.

    Args:
        backend: `"gloo"` (CPU) or `"nccl"` (one CUDA GPU per process).
            Defaults to `None`: the `METAKERAS_DIST_BACKEND` environment
            variable if set, else `"nccl"` when Keras runs on a CUDA device
            and `"gloo"` otherwise.
        timeout: seconds to wait for the other processes, when joining and
            in every collective operation; a number or a
            `datetime.timedelta`. Defaults to `None`: the
            `METAKERAS_DIST_TIMEOUT` environment variable if set, else
            1800 (30 minutes).

    Returns:
        `True` if this process is now part of a process group, `False`
        outside `torchrun`.

    Raises:
        ValueError: for an unknown or unavailable backend, a non-positive
            timeout, incomplete `torchrun` variables, or `LOCAL_RANK`
            without a matching GPU.
        RuntimeError: if the other processes do not join within `timeout`.

    Example:

    ```python
    # torchrun --nproc-per-node=2 train.py
    from metakeras import distributed
    distributed.initialize()  # gloo on CPU, nccl on GPUs
    print(distributed.rank(), "of", distributed.world_size())
    ```
    """
    if _group_ready():
        return True
    present = [name for name in _TORCHRUN_ENV if name in os.environ]
    if not present:
        return False
    if len(present) < len(_TORCHRUN_ENV):
        missing = [name for name in _TORCHRUN_ENV if name not in os.environ]
        raise ValueError(
            "metakeras.distributed.initialize() found some torchrun variables "
            f"({', '.join(present)}) but not {', '.join(missing)}. Launch with "
            "`torchrun --nproc-per-node=N script.py`, or set all of "
            f"{', '.join(_TORCHRUN_ENV)}."
        )
    backend = _resolve_backend(backend)
    seconds = _resolve_timeout(timeout)
    if backend == "nccl":
        local = _env_int("LOCAL_RANK", 0)
        count = torch.cuda.device_count()
        if local >= count:
            raise ValueError(
                f"backend 'nccl' needs one GPU per process, but LOCAL_RANK={local} "
                f"and {count} GPU(s) are visible. Launch at most {count} "
                "process(es) per node (`--nproc-per-node`), or use backend='gloo'."
            )
        torch.cuda.set_device(local)
    try:
        dist.init_process_group(
            backend=backend, timeout=datetime.timedelta(seconds=seconds)
        )
    except (RuntimeError, ValueError) as error:
        raise RuntimeError(
            f"Process {os.environ['RANK']} of {os.environ['WORLD_SIZE']} could not "
            f"join the {backend} process group at {os.environ['MASTER_ADDR']}:"
            f"{os.environ['MASTER_PORT']} within {seconds:g} s: "
            f"{str(error).rstrip('.')}. Check "
            "that every process was started (same --nnodes, --nproc-per-node "
            "and --rdzv-endpoint on every node) and can reach that address."
        ) from error
    atexit.register(_shutdown)
    return True


def shard(tasks, rank=None, world_size=None):
    """This process's share of every meta-batch of a task source.

    Item `i` of the result is the `rank`-th of `world_size` equal, disjoint
    slices (along the task axis) of item `i` of `tasks`. Give every process
    the same seeded task source: the union of the processes' slices is then
    exactly the meta-batch one process would train on, and `W` processes
    with a global `meta_batch_size` of `B` train like one process with
    meta-batch `B`, each doing `B / W` of the work. Let the ranks walk the
    batches in the same order too: seed Keras identically on every rank
    (`keras.utils.set_random_seed`), or `fit(..., shuffle=False)`.

    Batches may be episode dicts (extra keys such as `classes` are sliced
    when they have the task axis) or 4-tuples in the episode contract.
    Every process still draws the whole meta-batch before slicing it, which
    costs little beside the inner loop.

    Args:
        tasks: a `keras.utils.PyDataset` of meta-batches, such as
            `metakeras.tasks.TaskSampler` or `SinusoidTasks`.
        rank: which share to take, in `[0, world_size)`. Defaults to `None`
            (this process's rank).
        world_size: the number of shares. Defaults to `None` (the number of
            processes).

    Returns:
        A `keras.utils.PyDataset` of this rank's shares, or `tasks` itself
        when there is a single share. Its `tasks` attribute is the source;
        `on_epoch_end` is passed on to it.

    Raises:
        ValueError: if the meta-batch size is not divisible by `world_size`,
            if `rank` is out of range, or if `tasks` is not a `PyDataset`.

    Example:

    >>> from metakeras.tasks import SinusoidTasks
    >>> tasks = SinusoidTasks(meta_batch_size=4, seed=0)
    >>> shard(tasks, rank=1, world_size=2)[0]["support_x"].shape
    (2, 5, 1)
    """
    if world_size is None or rank is None:
        if not _group_ready() and _env_int("WORLD_SIZE", 1) > 1:
            raise ValueError(
                "shard() runs under torchrun (WORLD_SIZE="
                f"{os.environ['WORLD_SIZE']}) but no process group exists yet, so "
                "the processes could not average their meta-gradients. Call "
                "metakeras.distributed.initialize() first."
            )
        if world_size is None:
            world_size = dist.get_world_size() if is_distributed() else 1
        if rank is None:
            rank = dist.get_rank() if is_distributed() else 0
    if not _is_positive_int(world_size):
        raise ValueError(
            f"`world_size` must be a positive integer. Received: {world_size!r}"
        )
    if not _is_int(rank) or not 0 <= rank < world_size:
        raise ValueError(
            f"`rank` must be an integer in [0, {world_size}) for "
            f"world_size={world_size}. Received: rank={rank!r}"
        )
    if not isinstance(tasks, keras.utils.PyDataset):
        raise ValueError(
            "`tasks` must be a keras.utils.PyDataset of meta-batches (e.g. "
            "metakeras.tasks.TaskSampler). Received: "
            f"{type(tasks).__name__}"
        )
    if world_size == 1:
        return tasks
    size = getattr(tasks, "meta_batch_size", None)
    if _is_int(size):
        _check_divisible(int(size), world_size)
    return _Shard(tasks, int(rank), int(world_size))


def all_reduce_mean(tensors):
    """Averages floating tensors over all processes, in one all-reduce.

    Tensors are packed into one buffer per dtype and device, so a model's
    whole gradient costs one collective operation, not one per variable.
    Non-floating tensors (step counters, seeds) are returned unchanged.

    Args:
        tensors: a `torch.Tensor` or a nested list, tuple or dict of them,
            the same structure (shapes and dtypes) on every process.

    Returns:
        The same structure: each floating tensor replaced by its mean over
        the processes (a new tensor), other values as given. Without a
        process group of more than one process, `tensors` itself.

    Example:

    ```python
    # in every process of a torchrun job
    grads = distributed.all_reduce_mean([g1, g2])  # identical on all ranks
    ```
    """
    if not is_distributed():
        return tensors
    flat = keras.tree.flatten(tensors)
    picked = [
        i
        for i, value in enumerate(flat)
        if isinstance(value, torch.Tensor) and value.is_floating_point()
    ]
    reduced = _all_reduce([flat[i] for i in picked], dist.ReduceOp.SUM)
    scale = 1.0 / dist.get_world_size()
    for i, value in zip(picked, reduced):
        flat[i] = value.mul_(scale)
    return keras.tree.pack_sequence_as(tensors, flat)


def broadcast(variables, source=0):
    """Copies the values of Keras variables from one process to all others.

    `MetaModel.fit` calls it on the model's weights and optimizer state when
    training starts, so the processes start identical even when their
    random seeds differ.

    Args:
        variables: a list of `keras.Variable` (e.g. `model.weights`), the
            same variables in the same order on every process.
        source: the rank whose values are copied. Defaults to `0`.

    Returns:
        `None`; the variables are assigned in place.

    Example:

    ```python
    distributed.broadcast(model.weights)  # every rank now holds rank 0's
    ```
    """
    if not is_distributed():
        return
    variables = list(variables)
    values = _pack_groups([v.value.detach() for v in variables])
    for buffer, _ in values:
        dist.broadcast(buffer, src=source)
    with torch.no_grad():
        for variable, value in zip(variables, _unpack_groups(values, len(variables))):
            variable.assign(value)


class BackupAndRestore(_keras_compat.BackupAndRestoreHooks):
    """`keras.callbacks.BackupAndRestore` for multi-process training.

    Every process must resume at the same epoch from the same weights, so
    every process *reads* the backup when training starts; only rank 0
    *writes* it (and deletes it at the end when `delete_checkpoint=True`),
    so the processes never race on the files. Put `backup_dir` on a file
    system that every node can read (in a single process this is exactly
    Keras's callback). `metakeras train` uses it.

    Args:
        backup_dir: the folder of the backup, as in Keras.
        save_freq: `"epoch"` or a number of batches, as in Keras. Defaults
            to `"epoch"`.
        double_checkpoint: keep the previous backup too, as in Keras.
            Defaults to `False`.
        delete_checkpoint: delete the backup when training ends. Defaults
            to `True`.

    Example:

    ```python
    model.fit(distributed.shard(tasks), epochs=10, callbacks=[
        distributed.BackupAndRestore("run/backup")])
    ```
    """

    def __init__(
        self,
        backup_dir,
        save_freq="epoch",
        double_checkpoint=False,
        delete_checkpoint=True,
    ):
        super().__init__(
            backup_dir,
            save_freq=save_freq,
            double_checkpoint=double_checkpoint,
            delete_checkpoint=delete_checkpoint,
        )

    def _write_backup(self):
        if rank() == 0:
            super()._write_backup()

    def on_train_end(self, logs=None):
        # Only rank 0 deletes the backup; the rest of the hook runs on all.
        delete = self.delete_checkpoint
        self.delete_checkpoint = delete and rank() == 0
        try:
            super().on_train_end(logs)
        finally:
            self.delete_checkpoint = delete


# -------------------------------------------------------------- internals


def _metrics_result(model, compute):
    """`compute()` (a model's metric results) over every process's data.

    Keras metrics keep additive states (totals and counts, confusion
    counts), so summing the states over the processes and computing the
    result gives the metric of the union of the processes' examples, the
    same number one process would report. The local states are restored
    afterwards, so the next update accumulates locally again.
    """
    if not is_distributed():
        return compute()
    variables = model.metrics_variables
    local = [v.value.detach().clone() for v in variables]
    summed = _all_reduce([value.clone() for value in local], dist.ReduceOp.SUM)
    with torch.no_grad():
        try:
            for variable, value in zip(variables, summed):
                variable.assign(value)
            # Results may alias the state tensors restored below.
            return keras.tree.map_structure(_detached_copy, compute())
        finally:
            for variable, value in zip(variables, local):
                variable.assign(value)


def _detached_copy(value):
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    return value


def _all_reduce(tensors, op):
    """All-reduces a list of tensors in one operation per dtype and device."""
    if not tensors:
        return []
    groups = _pack_groups(tensors)
    for buffer, _ in groups:
        dist.all_reduce(buffer, op=op)
    return _unpack_groups(groups, len(tensors))


def _pack_groups(tensors):
    """`[(flat buffer, [(position, tensor), ...]), ...]`, one per dtype/device."""
    groups = {}
    for position, tensor in enumerate(tensors):
        groups.setdefault((tensor.dtype, tensor.device), []).append((position, tensor))
    return [
        (torch.cat([t.detach().reshape(-1) for _, t in members]), members)
        for members in groups.values()
    ]


def _unpack_groups(groups, count):
    out = [None] * count
    for buffer, members in groups:
        offset = 0
        for position, tensor in members:
            size = tensor.numel()
            out[position] = buffer[offset : offset + size].view(tensor.shape)
            offset += size
    return out


class _Shard(keras.utils.PyDataset):
    """One rank's slice of every meta-batch of `tasks` (see `shard`)."""

    def __init__(self, tasks, rank, world_size):
        super().__init__(
            workers=tasks.workers,
            use_multiprocessing=tasks.use_multiprocessing,
            max_queue_size=tasks.max_queue_size,
        )
        self.tasks = tasks
        self.rank = rank
        self.world_size = world_size

    @property
    def meta_batch_size(self):
        size = getattr(self.tasks, "meta_batch_size", None)
        return None if size is None else size // self.world_size

    def __len__(self):
        return len(self.tasks)

    @property
    def num_batches(self):
        return self.tasks.num_batches

    def __getitem__(self, index):
        return _slice_batch(self.tasks[index], self.rank, self.world_size)

    def on_epoch_begin(self):
        self.tasks.on_epoch_begin()

    def on_epoch_end(self):
        self.tasks.on_epoch_end()


def _slice_batch(batch, rank, world_size):
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], dict):
        return type(batch)([_slice_batch(batch[0], rank, world_size), *batch[1:]])
    values = list(batch.values()) if isinstance(batch, dict) else list(batch)
    if not values or not hasattr(values[0], "shape") or not len(values[0].shape):
        raise ValueError(
            "shard() expects meta-batches in the episode contract (a dict with "
            "`support_x`, ... or a 4-tuple of arrays with a leading task axis). "
            f"Received: {type(batch).__name__}"
        )
    size = int(values[0].shape[0])
    _check_divisible(size, world_size)
    step = size // world_size
    start, stop = rank * step, (rank + 1) * step

    def cut(value):
        if hasattr(value, "shape") and len(value.shape) and value.shape[0] == size:
            return value[start:stop]
        return value

    if isinstance(batch, dict):
        return {key: cut(value) for key, value in batch.items()}
    return type(batch)(cut(value) for value in batch)


def _check_divisible(size, world_size):
    if size % world_size:
        lower = size - size % world_size
        choices = f"{lower} or {lower + world_size}" if lower else f"{world_size}"
        raise ValueError(
            f"`meta_batch_size` must be divisible by the number of processes so "
            f"that every process gets an equal share of each meta-batch (got "
            f"meta_batch_size={size}, world_size={world_size}). Use a multiple "
            f"of {world_size}, e.g. {choices}."
        )


def _resolve_backend(backend):
    if backend is None:
        backend = os.environ.get(_BACKEND_ENV) or None
    if backend is None:
        # The device Keras's torch backend picks: `KERAS_TORCH_DEVICE`, else
        # CUDA when available.
        default = "cuda" if torch.cuda.is_available() else "cpu"
        device = os.environ.get("KERAS_TORCH_DEVICE", default)
        cuda = device.startswith("cuda") and torch.cuda.is_available()
        backend = "nccl" if cuda and dist.is_nccl_available() else "gloo"
    if backend not in BACKENDS:
        raise ValueError(
            f"`backend` must be one of {BACKENDS} (or None to choose from the "
            f"device). Received: backend={backend!r}"
        )
    if not dist.is_backend_available(backend):
        raise ValueError(
            f"backend {backend!r} is not available in this PyTorch build "
            f"(torch {torch.__version__}); use 'gloo' on CPU."
        )
    return backend


def _resolve_timeout(timeout):
    source = "timeout"
    if timeout is None and os.environ.get(_TIMEOUT_ENV):
        source, timeout = _TIMEOUT_ENV, os.environ[_TIMEOUT_ENV]
        with contextlib.suppress(ValueError):  # else reported below
            timeout = float(timeout)
    if timeout is None:
        return DEFAULT_TIMEOUT_S
    if isinstance(timeout, datetime.timedelta):
        timeout = timeout.total_seconds()
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, numbers.Real)
        or not math.isfinite(timeout)
        or timeout <= 0
    ):
        raise ValueError(
            f"`{source}` must be a positive number of seconds or a "
            f"datetime.timedelta. Received: {timeout!r}"
        )
    return float(timeout)


def _group_ready():
    return dist.is_available() and dist.is_initialized()


def _env_int(name, default):
    value = os.environ.get(name)
    try:
        return int(value) if value is not None else default
    except ValueError:
        raise ValueError(
            f"The environment variable {name} must be an integer; it is {value!r}."
        ) from None


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_positive_int(value):
    return _is_int(value) and value >= 1


def _shutdown():
    if _group_ready():
        # Shutting down anyway; a peer may already be gone.
        with contextlib.suppress(Exception):
            dist.destroy_process_group()
