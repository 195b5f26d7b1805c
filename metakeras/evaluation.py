"""Episodic evaluation: few-shot results as means with confidence intervals."""

import numpy as np
import pandas as pd

Z_95 = 1.96


def confidence_interval(values):
    """Mean and 95% confidence half-width of per-episode scores.

    Few-shot results vary from episode to episode, so a mean is reported with
    the half-width `1.96 * std / sqrt(n)` of its normal-approximation 95%
    confidence interval (sample standard deviation, `ddof=1`).

    Args:
        values: 1-D array-like of per-episode scores (at least one).

    Returns:
        A tuple `(mean, half_width)`; `half_width` is `nan` for one value.

    Example:

    >>> mean, ci = confidence_interval([0.5, 0.7, 0.6])
    >>> round(mean, 2)
    0.6
    """
    values = np.asarray(values, dtype="float64").ravel()
    if values.size == 0:
        raise ValueError("`values` is empty: need at least one episode score.")
    if not np.all(np.isfinite(values)):
        raise ValueError("`values` contains NaN or infinite scores.")
    if values.size == 1:
        return float(values[0]), float("nan")
    half = Z_95 * values.std(ddof=1) / np.sqrt(values.size)
    return float(values.mean()), float(half)


def summarize(scores, by=None):
    """Summarizes per-episode scores as mean, std and 95% CI half-width.

    Args:
        scores: a `pandas.DataFrame` with one row per episode; every numeric
            column not in `by` is summarized.
        by: optional column name(s) to group by (e.g. the model or the number
            of shots). Defaults to `None`.

    Returns:
        A `pandas.DataFrame` with columns `metric`, `mean`, `std`, `ci95`,
        `episodes` (and the `by` columns).
    """
    if not isinstance(scores, pd.DataFrame):
        raise ValueError(
            f"`scores` must be a pandas DataFrame; received {type(scores).__name__}."
        )
    keys = [] if by is None else ([by] if isinstance(by, str) else list(by))
    missing = [k for k in keys if k not in scores.columns]
    if missing:
        raise ValueError(
            f"`by` names unknown column(s) {missing}; "
            f"columns are {list(scores.columns)}."
        )
    metrics = [
        c
        for c in scores.columns
        if c not in keys and pd.api.types.is_numeric_dtype(scores[c])
    ]
    groups = scores.groupby(keys, sort=False) if keys else [((), scores)]
    rows = []
    for key, frame in groups:
        key = key if isinstance(key, tuple) else (key,)
        for metric in metrics:
            mean, half = confidence_interval(frame[metric].to_numpy())
            rows.append(
                {
                    **dict(zip(keys, key)),
                    "metric": metric,
                    "mean": mean,
                    "std": float(frame[metric].std(ddof=1))
                    if len(frame) > 1
                    else float("nan"),
                    "ci95": half,
                    "episodes": len(frame),
                }
            )
    return pd.DataFrame(rows)
