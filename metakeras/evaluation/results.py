"""Results of an evaluation: per-episode scores, summaries and exports."""

import numpy as np
import pandas as pd

from metakeras.evaluation._export import _write_csv, _write_markdown
from metakeras.evaluation.statistics import (
    confidence_interval,
    paired_difference,
    summarize,
)

__all__ = ["EpisodeResults", "ModelComparison"]

_TABLES = ("summary", "per_episode", "adaptation")
_COMPARISON_TABLES = ("summary", "differences", "per_episode")


class EpisodeResults:
    """Per-episode scores of one model, with summaries, tables and exports.

    Returned by `evaluate_episodes`; not meant to be built by hand.

    Args:
        name: the model's name.
        task: `"classification"` or `"regression"`.
        metrics: the metric names.
        steps: the inner-step settings evaluated.
        headline_steps: the setting reported as the result.
        per_episode: the per-episode `pandas.DataFrame` (see Attributes).
        confusion_matrices: dict mapping settings to confusion matrices.

    Example:

    ```python
    results = metakeras.evaluation.evaluate_episodes(model, test_tasks)
    results.mean("accuracy")          # (mean, 95% half-width)
    results.to_csv("per_episode.csv", which="per_episode")
    ```

    Attributes:
        name: the model's name.
        task: `"classification"` or `"regression"`.
        metrics: the metric names, in column order.
        steps: the inner-step settings evaluated (`[None]` for a model
            without an inner loop).
        headline_steps: the setting reported as the result: the model's own
            `inner.steps` when evaluated, else the largest (`None` without an
            inner loop).
        per_episode: `pandas.DataFrame`, one row per episode and setting:
            `episode` (0-based, in drawing order), `classes` (tuple of the
            original class ids, when the source provides them; likewise
            `rotations`), `steps` (for
            models with an inner loop) and one column per metric.
        summary: `pandas.DataFrame` with `steps` (if any), `metric`, `mean`,
            `std`, `ci95` (95% confidence half-width) and `episodes`.
        confusion_matrices: dict mapping each setting to the
            `(classes, classes)` confusion matrix summed over episodes (rows:
            true labels); empty for regression.
    """

    def __init__(
        self,
        name,
        task,
        metrics,
        steps,
        headline_steps,
        per_episode,
        confusion_matrices,
    ):
        self.name = name
        self.task = task
        self.metrics = list(metrics)
        self.steps = list(steps)
        self.headline_steps = headline_steps
        self.per_episode = per_episode
        self.confusion_matrices = dict(confusion_matrices)
        columns = (["steps"] if self.has_steps else []) + self.metrics
        self.summary = summarize(
            per_episode[columns], by="steps" if self.has_steps else None
        )

    @property
    def has_steps(self):
        """Whether the model has an inner loop (a `steps` column)."""
        return self.steps != [None]

    @property
    def episodes(self):
        """Number of episodes scored."""
        return int(self.per_episode["episode"].nunique())

    @property
    def confusion_matrix(self):
        """The summed confusion matrix at `headline_steps` (classification)."""
        if self.task != "classification":
            raise ValueError(
                f"A confusion matrix needs a classification task; {self.name!r} "
                "was evaluated on regression."
            )
        return self.confusion_matrices[self.headline_steps]

    def scores(self, metric=None, steps="headline"):
        """Per-episode scores of one metric at one setting.

        Args:
            metric: a metric name from `self.metrics`. Defaults to `None` (the
                first one).
            steps: an evaluated setting, or `"headline"` for
                `headline_steps`. Defaults to `"headline"`.

        Returns:
            A 1-D NumPy array, one score per episode in drawing order.
        """
        metric = self._check_metric(metric)
        frame = self._at(steps)
        return frame.sort_values("episode")[metric].to_numpy()

    def mean(self, metric=None, steps="headline"):
        """Mean and 95% half-width of one metric.

        Args:
            metric: a metric name from `self.metrics`. Defaults to `None` (the
                first one).
            steps: an evaluated setting, or `"headline"`. Defaults to
                `"headline"`.

        Returns:
            A tuple `(mean, ci95)`.
        """
        return confidence_interval(self.scores(metric, steps))

    def adaptation(self, metric=None):
        """The effect of adaptation: one metric at every inner-step setting.

        The change relative to the fewest steps evaluated (normally `0`, no
        adaptation) is a paired difference on the same episodes, with its
        own 95% half-width.

        Args:
            metric: a metric name from `self.metrics`. Defaults to `None` (the
                first one).

        Returns:
            A `pandas.DataFrame` with columns `steps`, `metric`, `mean`,
            `ci95`, `change` and `change_ci95`.

        Raises:
            ValueError: if the model has no inner loop.
        """
        metric = self._check_metric(metric)
        if not self.has_steps:
            raise ValueError(
                f"{self.name!r} has no inner steps, so there is no adaptation "
                "curve; it was evaluated once in its own setting."
            )
        table = self.per_episode.pivot(index="episode", columns="steps", values=metric)
        base = table[min(self.steps)].to_numpy()
        rows = []
        for steps in self.steps:
            values = table[steps].to_numpy()
            mean, half = confidence_interval(values)
            change, change_half = paired_difference(values, base)
            rows.append(
                {
                    "steps": steps,
                    "metric": metric,
                    "mean": mean,
                    "ci95": half,
                    "change": change,
                    "change_ci95": change_half,
                }
            )
        return pd.DataFrame(rows)

    def to_csv(self, path, which="summary"):
        """Writes a table as CSV, atomically.

        Args:
            path: the file path.
            which: `"summary"`, `"per_episode"` or `"adaptation"` (of the
                first metric). Defaults to `"summary"`.

        Returns:
            `path`.
        """
        return _write_csv(self._table(which), path)

    def to_markdown(self, path=None, which="summary", floatfmt=".4f"):
        """Formats a table as a Markdown (GitHub) table.

        Args:
            path: if given, the Markdown is also written there, atomically.
                Defaults to `None`.
            which: `"summary"`, `"per_episode"` or `"adaptation"` (of the
                first metric). Defaults to `"summary"`.
            floatfmt: format of floating-point cells. Defaults to `".4f"`.

        Returns:
            The Markdown text.
        """
        return _write_markdown(self._table(which), path, floatfmt)

    def __repr__(self):
        mean, half = self.mean()
        return (
            f"<EpisodeResults {self.name!r}: {self.task}, {self.episodes} "
            f"episodes, {self.metrics[0]}={mean:.4f} ± {half:.4f} at "
            f"steps={self.headline_steps}>"
        )

    def _table(self, which):
        if which == "summary":
            return self.summary
        if which == "per_episode":
            return self.per_episode
        if which == "adaptation":
            return self.adaptation()
        raise ValueError(f"Unknown table {which!r}. Valid names: {list(_TABLES)}.")

    def _check_metric(self, metric):
        if metric is None:
            return self.metrics[0]
        if metric not in self.metrics:
            raise ValueError(
                f"Unknown metric {metric!r} for {self.name!r}. Valid names: "
                f"{self.metrics}."
            )
        return metric

    def _at(self, steps):
        if steps == "headline":
            steps = self.headline_steps
        if not self.has_steps:
            if steps is not None:
                raise ValueError(
                    f"{self.name!r} has no inner steps; pass steps=None or "
                    f"'headline'. Received: steps={steps!r}."
                )
            return self.per_episode
        if steps not in self.steps:
            raise ValueError(
                f"`steps`={steps!r} was not evaluated for {self.name!r}. Valid "
                f"choices: {self.steps} or 'headline'."
            )
        return self.per_episode[self.per_episode["steps"] == steps]


class ModelComparison:
    """Several models scored on identical episodes, with paired differences.

    Returned by `compare_models`; not meant to be built by hand.

    Args:
        results: dict mapping model names to their `EpisodeResults`.
        baseline: name of the model the others are compared with.

    Example:

    ```python
    comparison = metakeras.evaluation.compare_models(
        {"protonet": protonet, "maml": maml}, test_tasks)
    print(comparison.to_markdown(which="differences"))
    ```

    Attributes:
        results: dict mapping model names to their `EpisodeResults`.
        baseline: name of the model the others are compared with.
        summary: `pandas.DataFrame` of every model at its headline setting:
            `model`, `steps`, `metric`, `mean`, `std`, `ci95`, `episodes`.
        differences: `pandas.DataFrame` with one row per other model and
            shared metric: `model`, `baseline`, `metric`, `difference` (mean
            of `model - baseline` over episodes), `std`, `ci95` (its 95%
            half-width), `episodes`, `significant` (the interval excludes 0).
    """

    def __init__(self, results, baseline):
        self.results = dict(results)
        self.baseline = baseline
        self.summary = self._summary()
        self.differences = self._differences()

    def to_csv(self, path, which="summary"):
        """Writes `"summary"`, `"differences"` or `"per_episode"` as CSV.

        Args:
            path: the file path; written atomically.
            which: the table. Defaults to `"summary"`.

        Returns:
            `path`.
        """
        return _write_csv(self._table(which), path)

    def to_markdown(self, path=None, which="summary", floatfmt=".4f"):
        """Formats `"summary"`, `"differences"` or `"per_episode"` as Markdown.

        Args:
            path: if given, also written there, atomically. Defaults to
                `None`.
            which: the table. Defaults to `"summary"`.
            floatfmt: format of floating-point cells. Defaults to `".4f"`.

        Returns:
            The Markdown text.
        """
        return _write_markdown(self._table(which), path, floatfmt)

    def _table(self, which):
        if which == "summary":
            return self.summary
        if which == "differences":
            return self.differences
        if which == "per_episode":
            frames = [
                r.per_episode.assign(model=name) for name, r in self.results.items()
            ]
            frame = pd.concat(frames, ignore_index=True)
            if "steps" in frame.columns:
                frame["steps"] = frame["steps"].astype("Int64")
            return frame[["model", *[c for c in frame.columns if c != "model"]]]
        raise ValueError(
            f"Unknown table {which!r}. Valid names: {list(_COMPARISON_TABLES)}."
        )

    def _summary(self):
        frames = []
        for name, result in self.results.items():
            summary = result.summary
            if result.has_steps:
                summary = summary[summary["steps"] == result.headline_steps]
            summary = summary.drop(columns="steps", errors="ignore")
            frames.append(summary.assign(model=name, steps=result.headline_steps))
        frame = pd.concat(frames, ignore_index=True)
        frame["steps"] = frame["steps"].astype("Int64")
        return frame[["model", "steps", "metric", "mean", "std", "ci95", "episodes"]]

    def _differences(self):
        base = self.results[self.baseline]
        rows = []
        for name, result in self.results.items():
            if name == self.baseline:
                continue
            shared = [m for m in base.metrics if m in result.metrics]
            if not shared:
                raise ValueError(
                    f"Models {self.baseline!r} and {name!r} have no metric in "
                    f"common ({base.metrics} vs {result.metrics}); compare models "
                    "of the same task type."
                )
            for metric in shared:
                diff = result.scores(metric) - base.scores(metric)
                mean, half = confidence_interval(diff)
                rows.append(
                    {
                        "model": name,
                        "baseline": self.baseline,
                        "metric": metric,
                        "difference": mean,
                        "std": float(diff.std(ddof=1)) if diff.size > 1 else np.nan,
                        "ci95": half,
                        "episodes": int(diff.size),
                        "significant": bool(abs(mean) > half),
                    }
                )
        return pd.DataFrame(rows)
