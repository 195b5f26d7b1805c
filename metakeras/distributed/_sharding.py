"""`shard`: this process's share of every meta-batch of a task source."""

import os

import keras
import torch.distributed as dist

from metakeras._checks import check_int, is_int
from metakeras.distributed._process_group import env_int, group_ready, is_distributed


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
        if not group_ready() and env_int("WORLD_SIZE", 1) > 1:
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
    check_int("world_size", world_size, echo_name=False)
    if not is_int(rank) or not 0 <= rank < world_size:
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
    if is_int(size):
        _check_divisible(int(size), world_size)
    return _Shard(tasks, int(rank), int(world_size))


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
