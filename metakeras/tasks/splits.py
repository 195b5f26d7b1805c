"""Disjoint meta-train / validation / test class splits."""

import numpy as np

from metakeras._checks import check_int

DEFAULT_FRACTIONS = (0.6, 0.2, 0.2)


def split_classes(labels, fractions=None, seed=0, splits=None):
    """Splits the classes of a dataset into disjoint sets, reproducibly.

    Meta-learning is evaluated on classes never seen in meta-training, so the
    split is over classes, not examples. Either shuffle the classes with
    `seed` and cut them by `fractions`, or check explicit lists (`splits`)
    against the labels. No class is in two splits.

    The seed defaults to `0` rather than `None` so that separate scripts
    (training, evaluation) that split the same labels agree on the split
    without passing a seed around.

    Args:
        labels: the class labels: per-example labels (repeats are fine) or
            the list of classes, integers or strings.
        fractions: share of the classes in each split, e.g. `(0.6, 0.2,
            0.2)`; positive, summing to at most 1 (what is left over is
            unused). Split sizes are `round(cumsum(fractions) * classes)`
            differences. Defaults to `None` (`(0.6, 0.2, 0.2)` unless
            `splits` is given).
        seed: integer seed of the shuffle. Defaults to `0`.
        splits: explicit class lists, e.g. `(train_classes, val_classes,
            test_classes)`, instead of `fractions`; they are checked and
            returned sorted. Defaults to `None`.

    Returns:
        A tuple of NumPy arrays of labels, one per split, each sorted.

    Raises:
        ValueError: if both `fractions` and `splits` are given, a fraction is
            not positive, the fractions sum above 1, a split would be empty,
            or an explicit split holds an unknown or repeated class.

    Example:

    >>> train, val, test = split_classes(range(10), fractions=(0.6, 0.2, 0.2))
    >>> len(train), len(val), len(test)
    (6, 2, 2)
    >>> set(train) & set(test)
    set()
    """
    classes = np.unique(np.asarray(labels))
    if classes.size == 0:
        raise ValueError("`labels` holds no classes to split.")
    if splits is not None:
        if fractions is not None:
            raise ValueError(
                "Pass either `fractions` or `splits`, not both. Received "
                f"fractions={fractions!r} and {len(splits)} explicit splits."
            )
        return _check_explicit(classes, splits)
    if fractions is None:
        fractions = DEFAULT_FRACTIONS
    check_int("seed", seed, 0, echo_name=False)
    fractions = _check_fractions(fractions)
    shuffled = np.random.default_rng(seed).permutation(classes)
    bounds = np.round(np.cumsum(fractions) * classes.size).astype(int)
    starts = np.concatenate([[0], bounds[:-1]])
    result = []
    for i, (start, stop) in enumerate(zip(starts, bounds)):
        if stop <= start:
            raise ValueError(
                f"fractions={tuple(fractions)} of {classes.size} classes leaves "
                f"split {i} empty; use fewer splits or larger fractions."
            )
        result.append(np.sort(shuffled[start:stop]))
    return tuple(result)


def _check_fractions(fractions):
    try:
        values = [float(f) for f in fractions]
    except (TypeError, ValueError):
        raise ValueError(
            f"`fractions` must be a sequence of numbers. Received: {fractions!r}"
        ) from None
    if not values or any(not np.isfinite(f) or f <= 0 for f in values):
        raise ValueError(
            f"`fractions` must be positive numbers. Received: {fractions!r}"
        )
    if sum(values) > 1 + 1e-9:
        raise ValueError(
            f"`fractions` must sum to at most 1. Received: {fractions!r} "
            f"(sum {sum(values):g})."
        )
    return values


def _check_explicit(classes, splits):
    result = []
    seen = {}
    for i, split in enumerate(splits):
        values = np.asarray(list(split))
        if values.size == 0:
            raise ValueError(f"`splits[{i}]` is empty.")
        unique, counts = np.unique(values, return_counts=True)
        if (counts > 1).any():
            raise ValueError(
                f"`splits[{i}]` repeats class(es) {unique[counts > 1].tolist()}."
            )
        known = _isin(unique, classes)
        if not known.all():
            raise ValueError(
                f"`splits[{i}]` holds class(es) not in `labels`: "
                f"{unique[~known].tolist()[:10]} ({classes.size} classes in "
                "`labels`)."
            )
        for value in unique.tolist():
            if value in seen:
                raise ValueError(
                    f"Class {value!r} is in both `splits[{seen[value]}]` and "
                    f"`splits[{i}]`; splits must not share classes."
                )
            seen[value] = i
        result.append(unique)
    return tuple(result)


def _isin(values, reference):
    """`np.isin` that treats labels of unrelated dtypes (str vs int) as absent."""
    kinds = {values.dtype.kind, reference.dtype.kind}
    if len(kinds) > 1 and not kinds <= set("biuf"):
        return np.zeros(values.shape, dtype=bool)
    return np.isin(values, reference)
