"""Means with 95% confidence intervals of per-episode scores.

A few-shot score is a mean over many test episodes; these helpers give it
with the half-width of its normal-approximation 95% confidence interval,
for one model (`confidence_interval`, `summarize`) or for two models scored
on the same episodes (`paired_difference`).
"""

import numpy as np
import pandas as pd

__all__ = ["confidence_interval", "paired_difference", "summarize"]

# The 97.5% quantile of the standard normal: a 95% two-sided interval.
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


def paired_difference(scores, baseline_scores):
    """Mean and 95% confidence half-width of paired per-episode differences.

    When two models are scored on the same episodes, the episode-to-episode
    variation (easy and hard episodes) is shared, so the interval of the
    per-episode differences `scores - baseline_scores` is much narrower than
    the two separate intervals suggest.

    Args:
        scores: 1-D array-like of per-episode scores.
        baseline_scores: 1-D array-like of scores on the same episodes, in the
            same order.

    Returns:
        A tuple `(mean_difference, half_width)`, as `confidence_interval`
        returns for the differences.

    Raises:
        ValueError: if the two arrays differ in length or are empty.

    Example:

    >>> mean, ci = paired_difference([0.9, 0.8, 0.7], [0.8, 0.7, 0.7])
    >>> round(mean, 3)
    0.067
    """
    scores = np.asarray(scores, dtype="float64").ravel()
    baseline_scores = np.asarray(baseline_scores, dtype="float64").ravel()
    if scores.shape != baseline_scores.shape:
        raise ValueError(
            "`scores` and `baseline_scores` must hold one score per episode for "
            f"the same episodes; got {scores.size} and {baseline_scores.size} "
            "scores."
        )
    return confidence_interval(scores - baseline_scores)


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

    Example:

    >>> import pandas as pd
    >>> scores = pd.DataFrame({"shots": [1, 1, 5, 5], "accuracy": [.5, .7, .8, .9]})
    >>> summarize(scores, by="shots")["mean"].round(2).tolist()
    [0.6, 0.85]
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
