"""Task sources as batches of episodes: drawing, checking, freezing.

A task source is a `keras.utils.PyDataset` of episode batches (a
`TaskSampler`, `SinusoidTasks`) or one batch of arrays in the episode
contract. `_iter_batches` draws `_Batch`es from it until enough episodes are
collected (calling `on_epoch_end()` between passes, as Keras does), and
`collect_episodes` freezes them into arrays.
"""

import warnings

import keras
import numpy as np

from metakeras._checks import check_int
from metakeras.tasks.episode import EPISODE_KEYS, unpack_episode

__all__ = ["collect_episodes"]

# Per-episode `(T, ways)` integers a task source may add to a batch:
# `TaskSampler` gives each remapped label's original class (and rotation).
_EPISODE_INFO = ("classes", "rotations")


def collect_episodes(tasks, episodes=600):
    """Draws a fixed set of episodes from a task source.

    Useful to freeze a test set and hand the very same episodes to
    `evaluate_episodes`, `model.evaluate` or another tool. Batches are drawn
    exactly as `evaluate_episodes` draws them.

    Args:
        tasks: a `keras.utils.PyDataset` of episode batches, or a dict (or
            tuple) of arrays in the episode contract.
        episodes: number of episodes, or `None` for one pass over `tasks`.
            Defaults to `600`.

    Returns:
        A dict of NumPy arrays in the episode contract with `episodes` tasks,
        plus `"classes"` (and `"rotations"`) `(episodes, ways)` when the
        source provides them.

    Raises:
        ValueError: if `episodes` is invalid or the source cannot provide
            that many distinct episodes.

    Example:

    >>> from metakeras.tasks import SinusoidTasks
    >>> test = collect_episodes(SinusoidTasks(meta_batch_size=4, seed=0), 10)
    >>> test["support_x"].shape
    (10, 5, 1)
    """
    episodes = _check_episodes(episodes)
    batches = list(_iter_batches(tasks, episodes))
    collected = {
        key: np.concatenate([b.arrays[i] for b in batches])
        for i, key in enumerate(EPISODE_KEYS)
    }
    for key in _EPISODE_INFO:
        if all(key in b.info for b in batches):
            collected[key] = np.concatenate([b.info[key] for b in batches])
    return collected


class _Batch:
    """One batch of episodes as NumPy arrays, trimmed to what is needed."""

    def __init__(self, arrays, info):
        self.arrays = arrays
        self.info = info

    def __len__(self):
        return len(self.arrays[0])


def _check_episodes(episodes):
    if episodes is None:
        return None
    check_int(
        "episodes",
        episodes,
        expected="a positive integer, None for every episode of one pass over "
        "`tasks`, or 'auto'",
    )
    return int(episodes)


def _to_numpy(value):
    if isinstance(value, np.ndarray):
        return value
    return np.asarray(keras.ops.convert_to_numpy(value))


def _as_batch(item, where):
    try:
        arrays = unpack_episode(item)
    except ValueError as error:
        raise ValueError(f"{where} is not an episode batch: {error}") from None
    arrays = [_to_numpy(a) for a in arrays]
    tasks = len(arrays[0])
    for key, array in zip(EPISODE_KEYS, arrays):
        if array.ndim < 2 or len(array) != tasks:
            raise ValueError(
                f"{where}: `{key}` must have shape (tasks, examples, ...) with "
                f"{tasks} tasks like `support_x`; got shape {array.shape}."
            )
    data = item
    if isinstance(item, (tuple, list)) and item and isinstance(item[0], dict):
        data = item[0]
    info = {}
    for key in _EPISODE_INFO:
        if not isinstance(data, dict) or data.get(key) is None:
            continue
        info[key] = _to_numpy(data[key])
        if info[key].ndim != 2 or len(info[key]) != tasks:
            raise ValueError(
                f"{where}: `{key}` must have shape (tasks, ways) = ({tasks}, "
                f"ways); got shape {info[key].shape}."
            )
    return _Batch(arrays, info)


def _trim(batch, count):
    if count >= len(batch):
        return batch
    info = {key: value[:count] for key, value in batch.info.items()}
    return _Batch([a[:count] for a in batch.arrays], info)


def _iter_batches(tasks, episodes, up_to=False):
    """Yields `_Batch`es from a task source until `episodes` are drawn.

    With `up_to`, a `PyDataset` that gives the same episodes on every pass
    ends after its distinct episodes (with a warning) instead of raising.
    """
    if isinstance(tasks, keras.utils.PyDataset):
        yield from _iter_dataset(tasks, episodes, up_to)
        return
    if isinstance(tasks, dict) or (
        isinstance(tasks, (tuple, list)) and len(tasks) == 4
    ):
        batch = _as_batch(tasks, "`tasks`")
        available = len(batch)
        if episodes is not None and available < episodes:
            raise ValueError(
                f"`tasks` holds {available} episodes, fewer than "
                f"episodes={episodes}. Pass episodes<={available} (or None), or a "
                "task source that can draw more (a PyDataset such as a "
                "TaskSampler)."
            )
        yield _trim(batch, available if episodes is None else episodes)
        return
    raise ValueError(
        "`tasks` must be a keras.utils.PyDataset of episode batches (e.g. "
        "SinusoidTasks, TaskSampler) or one batch in the episode contract (a "
        f"dict with keys {list(EPISODE_KEYS)}, or a tuple of those four "
        f"arrays). Received: {type(tasks).__name__}."
    )


def _iter_dataset(tasks, episodes, up_to=False):
    try:
        num_batches = tasks.num_batches
    except NotImplementedError:
        num_batches = None
    if num_batches is None and episodes is None:
        raise ValueError(
            "episodes=None means one pass over `tasks`, but this PyDataset is "
            "infinite (num_batches is None); pass a positive integer `episodes`."
        )
    if num_batches == 0:
        raise ValueError("`tasks` holds no batches (num_batches == 0).")
    drawn = 0
    first = None
    while True:
        index = 0
        while num_batches is None or index < num_batches:
            batch = _as_batch(tasks[index], f"Batch {index} of `tasks`")
            if len(batch) == 0:
                raise ValueError(f"Batch {index} of `tasks` holds no episodes.")
            if index == 0:
                if first is None:
                    first = batch
                elif _same_episodes(first, batch):
                    if up_to:
                        warnings.warn(
                            f"`tasks` ({type(tasks).__name__}) gives the same "
                            f"{drawn} episodes on every pass, fewer than "
                            f"{episodes}: scored those {drawn}.",
                            stacklevel=4,
                        )
                        return
                    raise ValueError(
                        f"`tasks` ({type(tasks).__name__}) gives the same "
                        f"{drawn} episodes on every pass (on_epoch_end() draws "
                        f"no new ones), so it cannot provide episodes={episodes} "
                        f"distinct episodes. Pass episodes<={drawn}, or a source "
                        "with more batches or that resamples each epoch (e.g. "
                        "resample=True)."
                    )
            wanted = len(batch) if episodes is None else episodes - drawn
            batch = _trim(batch, wanted)
            drawn += len(batch)
            yield batch
            if episodes is not None and drawn >= episodes:
                return
            index += 1
        if episodes is None:
            return
        # One pass was not enough: move the source on, as Keras does between
        # epochs, so a resampling source draws new tasks.
        tasks.on_epoch_end()


def _same_episodes(a, b):
    return len(a) == len(b) and all(
        x.shape == y.shape and np.array_equal(x, y) for x, y in zip(a.arrays, b.arrays)
    )
