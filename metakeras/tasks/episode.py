"""The episode batch contract shared by samplers, models and evaluators.

One meta-batch holds T tasks. Each task has a support set (the few labelled
examples a model adapts on) and a query set (the examples it is scored on):

- `support_x`: `(T, N*K, *features)`
- `support_y`: `(T, N*K, *targets)`
- `query_x`: `(T, N*Q, *features)`
- `query_y`: `(T, N*Q, *targets)`

Classification labels are integers remapped to `0..N-1` inside each episode;
regression targets are floats (for example `(T, K, 1)` for a scalar output).
A batch is a dict with these four keys, or a tuple in this order.
"""

import numpy as np
import torch

EPISODE_KEYS = ("support_x", "support_y", "query_x", "query_y")


def unpack_episode(data):
    """Returns the four episode tensors from a dict or a 4-tuple.

    Keras hands `train_step` the batch itself or a tuple `(batch, None, ...)`
    around it (as `train_on_batch` does); both are accepted.

    Args:
        data: dict with the keys `support_x`, `support_y`, `query_x`,
            `query_y`, or a tuple/list of those four in this order.

    Returns:
        A tuple `(support_x, support_y, query_x, query_y)`.

    Raises:
        ValueError: if a key is missing or the structure is not an episode.

    Example:

    >>> import numpy as np
    >>> batch = {k: np.zeros((2, 3, 1)) for k in EPISODE_KEYS}
    >>> [a.shape for a in unpack_episode(batch)][0]
    (2, 3, 1)
    """
    if (
        isinstance(data, (tuple, list))
        and data
        and _is_mapping(data[0])
        and all(item is None for item in data[1:])
    ):
        data = data[0]
    if _is_mapping(data):
        missing = [key for key in EPISODE_KEYS if key not in data]
        if missing:
            raise ValueError(
                f"Episode batch is missing key(s) {missing}; expected the keys "
                f"{list(EPISODE_KEYS)}. Received keys: {sorted(data)}."
            )
        return tuple(data[key] for key in EPISODE_KEYS)
    if isinstance(data, (tuple, list)) and len(data) == 4:
        return tuple(data)
    raise ValueError(
        "An episode batch must be a dict with keys "
        f"{list(EPISODE_KEYS)} or a tuple of those four arrays. "
        f"Received: {type(data).__name__}"
        + (f" of length {len(data)}" if isinstance(data, (tuple, list)) else "")
    )


def validate_episode(support_x, support_y, query_x, query_y, num_classes=None):
    """Checks one meta-batch against the episode contract.

    Args:
        support_x: support inputs, `(T, N*K, *features)`.
        support_y: support targets, `(T, N*K, *targets)`.
        query_x: query inputs, `(T, N*Q, *features)`.
        query_y: query targets, `(T, N*Q, *targets)`.
        num_classes: if given and the targets are integers, labels must lie
            in `[0, num_classes)`. Defaults to `None` (no range check).

    Raises:
        ValueError: naming the offending argument, for wrong ranks, mismatched
            task/example counts, mismatched feature shapes, empty sets,
            non-finite values or labels out of range.

    Example:

    >>> import numpy as np
    >>> x, y = np.zeros((2, 4, 3), "float32"), np.zeros((2, 4), "int64")
    >>> validate_episode(x, y, x, y, num_classes=2)  # passes silently
    """
    arrays = {
        "support_x": support_x,
        "support_y": support_y,
        "query_x": query_x,
        "query_y": query_y,
    }
    for name, value in arrays.items():
        if len(value.shape) < 2:
            raise ValueError(
                f"`{name}` must have a leading task axis and an example axis, "
                f"i.e. shape (tasks, examples, ...). Received shape "
                f"{tuple(value.shape)}."
            )
    tasks = support_x.shape[0]
    if tasks == 0:
        raise ValueError(
            "`support_x` holds no tasks: its leading (task) axis is empty "
            f"(shape {tuple(support_x.shape)})."
        )
    for name, value in arrays.items():
        if value.shape[0] != tasks:
            raise ValueError(
                f"All episode arrays must hold the same number of tasks; "
                f"`support_x` has {tasks} but `{name}` has {value.shape[0]} "
                f"(shape {tuple(value.shape)})."
            )
    for x_name, y_name in (("support_x", "support_y"), ("query_x", "query_y")):
        if arrays[x_name].shape[1] != arrays[y_name].shape[1]:
            raise ValueError(
                f"`{x_name}` and `{y_name}` must hold the same number of "
                f"examples per task; got shapes {tuple(arrays[x_name].shape)} "
                f"and {tuple(arrays[y_name].shape)}."
            )
        if arrays[x_name].shape[1] == 0:
            raise ValueError(
                f"`{x_name}` holds no examples (shape {tuple(arrays[x_name].shape)})."
            )
    if tuple(support_x.shape[2:]) != tuple(query_x.shape[2:]):
        raise ValueError(
            "`support_x` and `query_x` must have the same feature shape; got "
            f"{tuple(support_x.shape[2:])} and {tuple(query_x.shape[2:])}."
        )
    if tuple(support_y.shape[2:]) != tuple(query_y.shape[2:]):
        raise ValueError(
            "`support_y` and `query_y` must have the same target shape; got "
            f"{tuple(support_y.shape[2:])} and {tuple(query_y.shape[2:])}."
        )
    for name, value in arrays.items():
        if _is_floating(value) and not bool(_all_finite(value)):
            raise ValueError(
                f"`{name}` contains NaN or infinite values; clean or impute the "
                "data before meta-training."
            )
    if num_classes is not None:
        for name in ("support_y", "query_y"):
            value = arrays[name]
            if tuple(value.shape[2:]) not in ((), (1,)):
                continue  # one target per output: multi-output regression
            if _is_floating(value):
                fractional = _fractional(value)
                if fractional is not None:
                    raise ValueError(
                        f"`{name}` holds the fractional label {fractional!r}, but the "
                        f"learner predicts {num_classes} classes: classification labels "
                        f"must be whole class indices 0..{num_classes - 1} (remapped "
                        "per episode)."
                    )
            low, high = int(_min(value)), int(_max(value))
            if low < 0 or high >= num_classes:
                raise ValueError(
                    f"`{name}` holds labels in [{low}, {high}], but the learner "
                    f"predicts {num_classes} classes: labels must lie in "
                    f"[0, {num_classes - 1}] (remapped per episode)."
                )


def _is_mapping(value):
    return isinstance(value, dict)


def _is_floating(value):
    if isinstance(value, torch.Tensor):
        return value.is_floating_point()
    return np.issubdtype(np.asarray(value).dtype, np.floating)


def _all_finite(value):
    if isinstance(value, torch.Tensor):
        return torch.isfinite(value).all()
    return np.isfinite(np.asarray(value)).all()


def _fractional(value):
    """The first value that is not a whole number, or None."""
    if isinstance(value, torch.Tensor):
        bad = value[value != torch.round(value)]
        return float(bad[0]) if bad.numel() else None
    value = np.asarray(value)
    bad = value[value != np.round(value)]
    return float(bad[0]) if bad.size else None


def _min(value):
    return value.min() if isinstance(value, torch.Tensor) else np.min(value)


def _max(value):
    return value.max() if isinstance(value, torch.Tensor) else np.max(value)
