"""Regression episodes drawn within groups of rows: one group, one task."""

import numpy as np

from metakeras._checks import check_flag, check_positive_ints, resolve_seed
from metakeras.tasks._seeded import SeededTasks


class GroupedTasks(SeededTasks):
    """Meta-batches of regression episodes, each drawn within one group of rows.

    The rows of `x, y` belong to tasks named by `groups` (a user, a site, a
    sinusoid). Every episode picks a group (without replacement within a
    meta-batch when there are at least `meta_batch_size` groups), then
    `shots + queries` distinct rows of it: the first `shots` are the support
    set, the rest the query set. Every item is one meta-batch in the episode
    contract (`metakeras.tasks.episode`):

    - `support_x`: `(T, shots, *features)` float32
    - `support_y`: `(T, shots, targets)` float32
    - `query_x`: `(T, queries_, *features)` float32
    - `query_y`: `(T, queries_, targets)` float32

    A 1-D `y` is one target (`targets == 1`). Every group needs at least
    `shots + 1` rows; the query rows per episode are lowered to what the
    smallest group allows (the attribute `queries`), so that small groups
    still serve as tasks. `MetaRegressor.fit(X, y, groups=...)` meta-trains
    on these episodes.

    Batches are a pure function of `(seed, epoch, index)`, like
    `TaskSampler`'s, so any worker produces the same batch for the same index
    and a seeded run repeats exactly. With `resample=True` each epoch draws
    new episodes; with `False` every epoch sees the same ones.

    Args:
        x: features, `(num_rows, *features)`, numeric and finite.
        y: targets, `(num_rows,)` or `(num_rows, targets)`, numeric and
            finite.
        groups: task label of every row, `(num_rows,)`, integers or strings.
            Defaults to `None` (all rows are one task).
        shots: support rows per episode (K). Defaults to `5`.
        queries: wanted query rows per episode; lowered to what the
            smallest group allows. Defaults to `10`.
        meta_batch_size: episodes per batch (T). Defaults to `8`.
        steps: batches per epoch. Defaults to `100`.
        seed: integer seed. Defaults to `None` (a random seed, drawn once).
        resample: draw new episodes every epoch. Defaults to `True`.
        **kwargs: `workers`, `use_multiprocessing`, `max_queue_size` of
            `keras.utils.PyDataset`.

    Attributes:
        queries: query rows per episode actually drawn.
        num_groups: the number of groups (tasks).
        group_labels: the distinct labels of `groups`, sorted.

    Raises:
        ValueError: for sizes that are not positive integers, `x`, `y` and
            `groups` of different lengths, non-numeric or non-finite `x` or
            `y`, or a group with fewer than `shots + 1` rows (naming it).

    Example:

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.uniform(-5, 5, size=(60, 1))
    >>> groups = np.repeat([0, 1, 2], 20)          # three tasks of 20 rows
    >>> y = np.sin(x[:, 0] - groups)               # each task its own phase
    >>> tasks = GroupedTasks(x, y, groups, shots=5, queries=10,
    ...                      meta_batch_size=4, steps=10, seed=0)
    >>> batch = tasks[0]
    >>> batch["support_x"].shape, batch["query_y"].shape
    ((4, 5, 1), (4, 10, 1))

    `metakeras.MAML(learner).fit(tasks, epochs=10)` meta-trains on them.
    """

    def __init__(
        self,
        x,
        y,
        groups=None,
        shots=5,
        queries=10,
        meta_batch_size=8,
        steps=100,
        seed=None,
        resample=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_positive_ints(
            shots=shots, queries=queries, meta_batch_size=meta_batch_size, steps=steps
        )
        seed = resolve_seed(seed)
        check_flag("resample", resample, echo_name=False)
        self.x = _finite_float32(x, "x")
        y = _finite_float32(y, "y")
        if y.ndim not in (1, 2):
            raise ValueError(
                "`y` must have shape (rows,) or (rows, targets). Received shape "
                f"{y.shape}."
            )
        self.y = y.reshape(len(y), -1)
        groups = np.zeros(len(self.x), "int64") if groups is None else groups
        groups = np.asarray(groups)
        if groups.ndim != 1:
            raise ValueError(
                f"`groups` must be a 1-D array of task labels. Received shape "
                f"{groups.shape}."
            )
        if not len(self.x) == len(self.y) == len(groups):
            raise ValueError(
                "`x`, `y` and `groups` must hold the same number of rows (got "
                f"len(x)={len(self.x)}, len(y)={len(self.y)}, "
                f"len(groups)={len(groups)})."
            )
        self.group_labels, codes = np.unique(groups, return_inverse=True)
        sizes = np.bincount(codes, minlength=len(self.group_labels))
        _check_group_sizes(self.group_labels, sizes, int(shots))
        self.members = [np.flatnonzero(codes == g) for g in range(len(sizes))]
        self.num_groups = len(self.group_labels)
        self.shots = int(shots)
        self.queries = int(min(queries, sizes.min() - shots))
        self.meta_batch_size = int(meta_batch_size)
        self.steps = int(steps)
        self.seed = int(seed)
        self.resample = resample
        self.epoch = 0

    def __getitem__(self, index):
        rng = self._rng(index)
        t = self.meta_batch_size
        chosen = rng.choice(self.num_groups, t, replace=t > self.num_groups)
        per_task = self.shots + self.queries
        rows = np.stack(
            [rng.choice(self.members[g], per_task, replace=False) for g in chosen]
        )
        support, query = rows[:, : self.shots], rows[:, self.shots :]
        return {
            "support_x": self.x[support],
            "support_y": self.y[support],
            "query_x": self.x[query],
            "query_y": self.y[query],
        }


def _finite_float32(values, name):
    """`values` as a float32 array, refusing non-numeric and non-finite data."""
    array = np.asarray(values)
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise ValueError(f"`{name}` must be numeric; received dtype {array.dtype}.")
    array = array.astype("float32", copy=False)
    if array.ndim == 0:
        raise ValueError(f"`{name}` must be an array of rows; received a scalar.")
    bad = ~np.isfinite(array.reshape(len(array), -1)).all(axis=1)
    if bad.any():
        where = np.flatnonzero(bad)
        raise ValueError(
            f"`{name}` contains NaN or infinite values in {len(where)} row(s), "
            f"e.g. at index {where[:5].tolist()}; clean or drop them first."
        )
    return array


def _check_group_sizes(labels, sizes, shots):
    """Raises unless every group has `shots + 1` rows, naming the small ones."""
    needed = shots + 1
    small = np.flatnonzero(sizes < needed)
    if not small.size:
        return
    detail = ", ".join(
        f"task {labels[i].item()!r} has {sizes[i]} sample{'s' if sizes[i] != 1 else ''}"
        for i in small[:5]
    )
    raise ValueError(
        f"Every task needs at least shots + 1 = {needed} rows (shots={shots} "
        f"support rows and at least one query row), but {small.size} task(s) "
        f"have fewer: {detail}{' ...' if small.size > 5 else ''}. Lower `shots`, "
        "or merge or drop small groups."
    )
