"""Episodic evaluation: few-shot results as means with confidence intervals.

A few-shot score is only meaningful as a mean over many test episodes, with a
confidence interval. `evaluate_episodes` adapts a meta-trained model to each
episode's support set with the model's own inner strategy
(`model.adapt_and_predict`), scores its query predictions with scikit-learn
metrics and returns an `EpisodeResults`: one row per episode, a summary (mean,
standard deviation, 95% confidence half-width) and, for models with an inner
loop, the scores before adaptation and after every inner step.
`compare_models` scores several models on the very same episodes and reports
paired differences; `compression_report` adds each model's size, for models
before and after pruning or quantization. Plots live in `metakeras.plots`.

Its modules, one concept each: `scoring` (`evaluate_episodes`,
`compare_models`), `episodes` (task sources, `collect_episodes`), `results`
(`EpisodeResults`, `ModelComparison`), `statistics` (`confidence_interval`,
`paired_difference`, `summarize`) and `compression` (`compression_report`);
every name is importable from `metakeras.evaluation` itself.
"""

# Private modules: `_scorer` adapts one model per batch and computes its
# per-episode metrics, `_metrics` holds the metric names and task types,
# `_export` writes the CSV and Markdown tables.
from metakeras.evaluation._metrics import CLASSIFICATION_METRICS, REGRESSION_METRICS
from metakeras.evaluation.compression import compression_report
from metakeras.evaluation.episodes import collect_episodes
from metakeras.evaluation.results import EpisodeResults, ModelComparison
from metakeras.evaluation.scoring import compare_models, evaluate_episodes
from metakeras.evaluation.statistics import (
    Z_95,  # noqa: F401 (the 95% z-value, as before the split)
    confidence_interval,
    paired_difference,
    summarize,
)

# In reading order, which the API page follows.
__all__ = [
    "evaluate_episodes",
    "compare_models",
    "collect_episodes",
    "EpisodeResults",
    "ModelComparison",
    "confidence_interval",
    "paired_difference",
    "summarize",
    "compression_report",
    "CLASSIFICATION_METRICS",
    "REGRESSION_METRICS",
]
