"""Episodic evaluation: few-shot results as means with confidence intervals.

A few-shot score is only meaningful as a mean over many test episodes, with a
confidence interval. `evaluate_episodes` adapts a meta-trained model to each
episode's support set with the model's own inner strategy
(`model.adapt_and_predict`), scores its query predictions with scikit-learn
metrics and returns an `EpisodeResults`: one row per episode, a summary (mean,
standard deviation, 95% confidence half-width) and, for models with an inner
loop, the scores before adaptation and after every inner step.
`compare_models` scores several models on the very same episodes and reports
paired differences. Plots live in `metakeras.plots`.
"""

import numbers

import keras
import numpy as np
import pandas as pd
import sklearn
from scipy.special import softmax
from sklearn import metrics as skm

from metakeras._io import atomic_path
from metakeras._progress import progress_bar, resolve_verbose
from metakeras.tasks.episode import EPISODE_KEYS, unpack_episode

__all__ = [
    "CLASSIFICATION_METRICS",
    "REGRESSION_METRICS",
    "EpisodeResults",
    "ModelComparison",
    "collect_episodes",
    "compare_models",
    "confidence_interval",
    "evaluate_episodes",
    "paired_difference",
    "summarize",
]

Z_95 = 1.96

CLASSIFICATION_METRICS = ("accuracy", "precision", "recall", "f1", "log_loss")
REGRESSION_METRICS = ("mse", "mae", "r2")
# "loss" is the model's compiled task loss, the number `model.evaluate` logs.
_ANY_TASK_METRICS = ("loss",)
_METRIC_NAMES = CLASSIFICATION_METRICS + REGRESSION_METRICS + _ANY_TASK_METRICS
_TASKS = ("auto", "classification", "regression")
_TABLES = ("summary", "per_episode", "adaptation")
# Per-episode `(T, ways)` integers a task source may add to a batch:
# `TaskSampler` gives each remapped label's original class (and rotation).
_EPISODE_INFO = ("classes", "rotations")
_COMPARISON_TABLES = ("summary", "differences", "per_episode")


# ------------------------------------------------------------------ statistics


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


# ------------------------------------------------------------------ evaluation


def evaluate_episodes(
    model,
    tasks,
    episodes=600,
    steps=None,
    metrics=None,
    task="auto",
    from_logits=None,
    batch_size=32,
    seed=None,
    allow_untrained=False,
    verbose="auto",
):
    """Adapts a model to each test episode and scores its query predictions.

    Every episode's support set is used to adapt the model with its own inner
    strategy (`model.adapt_and_predict`, so MAML takes its inner gradient
    steps), and the adapted model's query predictions are scored with
    scikit-learn metrics. Scores are kept per episode: a few-shot result is
    their mean with a 95% confidence interval.

    For a model with an inner loop (`model.inner.steps`, as on `MAML`), the
    same episodes are by default scored before adaptation (`steps=0`) and
    after every step up to the model's own setting, so the gain from
    adaptation shows (`EpisodeResults.adaptation`,
    `metakeras.plots.plot_adaptation_curve`). Each setting adapts from
    scratch, so a curve over `0..S` costs about `S / 2` times a single
    evaluation at `S` steps; pass `steps=S` for the headline number alone.
    Models without an inner loop are evaluated once, in their own setting.

    The task type is inferred from the first episodes: integer query labels
    of one value per example with multi-column predictions are
    classification, anything else regression. Classification metrics:
    `"accuracy"`, macro-averaged `"precision"`, `"recall"` and `"f1"`
    (over the classes present in an episode's labels or predictions; an
    undefined precision or recall counts as 0), and `"log_loss"` on the
    predicted class probabilities; the confusion matrix is summed over
    episodes. Regression metrics: `"mse"`, `"mae"` and `"r2"`. `"loss"` is
    the model's compiled task loss on the query set, the number
    `model.evaluate` logs as `loss`.

    Logits or probabilities: `log_loss` needs probabilities, so logits are
    turned into probabilities with a softmax. With `from_logits=None` the
    model's compiled loss decides when it has a `from_logits` setting (e.g.
    `keras.losses.SparseCategoricalCrossentropy(from_logits=True)`);
    otherwise predictions whose rows are all in `[0, 1]` and sum to 1 (within
    `1e-3`) are taken as probabilities and anything else as logits.

    Task sources: a `keras.utils.PyDataset` whose items are episode batches
    (`metakeras.tasks.SinusoidTasks`, a `TaskSampler`), or one episode batch
    (a dict or tuple of arrays in the episode contract). Batches are drawn in
    order until `episodes` tasks are collected; if one pass over a PyDataset
    holds fewer, its `on_epoch_end()` is called to draw the next pass (as
    Keras does between epochs). A batch's optional `"classes"` entry,
    `(T, ways)` integers holding the original class of each remapped label
    (and `"rotations"`, its rotation, from a rotating `TaskSampler`), is
    recorded per episode.

    Args:
        model: a compiled, meta-trained `MetaModel` (or any object with an
            `adapt_and_predict(support_x, support_y, query_x, steps=None,
            batch_size=32)` method returning `(T, N*Q, outputs)` arrays).
        tasks: the task source: a `keras.utils.PyDataset` of episode batches,
            or a dict (or tuple) of arrays in the episode contract.
        episodes: number of episodes to score, or `None` for every episode of
            one pass over `tasks`. Defaults to `600`.
        steps: inner steps, for models with an inner loop: an integer, a list
            of integers, or `None` for `0, 1, ..., model.inner.steps`.
            Must be `None` for models without one. Defaults to `None`.
        metrics: metric names (see above) and/or callables
            `fn(y_true, y_pred) -> float`, or a dict mapping names to them.
            Callables receive one episode's query targets and, for
            classification, the predicted labels (for regression, the
            predictions), as 1-D arrays for a single output. Defaults to
            `None` (every built-in metric of the task type).
        task: `"auto"`, `"classification"` or `"regression"`.
            Defaults to `"auto"`.
        from_logits: whether classification predictions are logits (`True`)
            or probabilities (`False`). Defaults to `None` (inferred, see
            above).
        batch_size: tasks adapted together. Defaults to `32`.
        seed: if an integer, the global random state is reset with
            `keras.utils.set_random_seed` before each adaptation (derived from
            `seed`, the source batch and the number of steps), so adaptations
            with randomness (Dropout in the inner loop) repeat exactly and
            are paired across models. Defaults to `None` (not reset).
        allow_untrained: evaluate a model whose optimizer never took a step
            (e.g. a baseline trained by other means). Defaults to `False`.
        verbose: `0` (silent), `1` (a Keras progress bar over the episodes
            with the running mean of the first metric), `2` (one line when
            done) or `"auto"` (1 on an interactive terminal, else 2).
            Defaults to `"auto"`.

    Returns:
        An `EpisodeResults`.

    Raises:
        ValueError: for an invalid argument (the message names it and lists
            the valid choices), a model that is not compiled or never
            meta-trained, or a task source that cannot provide `episodes`
            distinct episodes.

    Example:

    ```python
    tasks = metakeras.tasks.SinusoidTasks(shots=5, queries=10, seed=1)
    results = evaluate_episodes(model, tasks, episodes=600)
    results.summary          # mean, std, ci95 per metric and inner steps
    results.adaptation()     # the gain from each inner step
    print(results.to_markdown())
    ```
    """
    (result,) = _run(
        {None: model},
        tasks,
        episodes=episodes,
        steps={None: steps},
        metrics=metrics,
        task=task,
        from_logits=from_logits,
        batch_size=batch_size,
        seed=seed,
        allow_untrained=allow_untrained,
        strict_steps=True,
        verbose=verbose,
    ).values()
    return result


def compare_models(
    models,
    tasks,
    episodes=600,
    baseline=None,
    steps=None,
    metrics=None,
    task="auto",
    from_logits=None,
    batch_size=32,
    seed=None,
    allow_untrained=False,
    verbose="auto",
):
    """Scores several models on identical episodes and compares them paired.

    Each batch is drawn from `tasks` once and handed to every model, so all
    models see exactly the same support and query sets; with `seed` set,
    the random state of every adaptation is the same for every model too.
    Differences are then computed per episode (`model - baseline`) and
    summarized with their own confidence interval, which is much tighter
    than comparing two separate intervals.

    Args:
        models: a dict mapping names to models, or a list of models (named by
            their `name` attribute, which must then be unique).
        tasks: the task source, as in `evaluate_episodes`.
        episodes: number of episodes, as in `evaluate_episodes`.
            Defaults to `600`.
        baseline: name of the model the others are compared with.
            Defaults to `None` (the first model).
        steps: inner steps as in `evaluate_episodes`, applied to every model
            with an inner loop (models without one use their own setting), or
            a dict mapping model names to their `steps`. Each model is
            compared at its headline setting (its own `inner.steps` when
            evaluated, else the largest). Defaults to `None`.
        metrics: as in `evaluate_episodes`. Defaults to `None`.
        task: as in `evaluate_episodes`. Defaults to `"auto"`.
        from_logits: as in `evaluate_episodes`. Defaults to `None`.
        batch_size: tasks adapted together. Defaults to `32`.
        seed: as in `evaluate_episodes`. Defaults to `None`.
        allow_untrained: as in `evaluate_episodes`. Defaults to `False`.
        verbose: as in `evaluate_episodes` (the bar shows each model's first
            metric). Defaults to `"auto"`.

    Returns:
        A `ModelComparison`.

    Raises:
        ValueError: for an invalid argument, an unknown `baseline` name,
            fewer than two models, or models without a metric in common.

    Example:

    ```python
    comparison = compare_models({"maml": maml, "fomaml": fomaml}, test_tasks)
    comparison.differences   # fomaml - maml per metric, with its 95% CI
    ```
    """
    if isinstance(models, dict):
        named = dict(models)
    elif isinstance(models, (list, tuple)):
        names = [getattr(m, "name", type(m).__name__) for m in models]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(
                f"`models` holds models with the same name {duplicates}; pass a "
                "dict mapping distinct names to models instead."
            )
        named = dict(zip(names, models))
    else:
        raise ValueError(
            "`models` must be a dict mapping names to models or a list of "
            f"models. Received: {type(models).__name__}."
        )
    if len(named) < 2:
        raise ValueError(
            f"`models` must hold at least two models to compare; received "
            f"{len(named)}: {list(named)}."
        )
    for name in named:
        if not isinstance(name, str) or not name:
            raise ValueError(
                f"Model names in `models` must be non-empty strings; got {name!r}."
            )
    if baseline is None:
        baseline = next(iter(named))
    if baseline not in named:
        raise ValueError(f"Unknown baseline {baseline!r}. Valid names: {list(named)}.")
    if isinstance(steps, dict):
        unknown = [n for n in steps if n not in named]
        if unknown:
            raise ValueError(
                f"`steps` names unknown model(s) {unknown}. Valid names: {list(named)}."
            )
        per_model = {n: steps.get(n) for n in named}
    else:
        per_model = {
            n: steps if getattr(m, "inner", None) is not None else None
            for n, m in named.items()
        }
    results = _run(
        named,
        tasks,
        episodes=episodes,
        steps=per_model,
        metrics=metrics,
        task=task,
        from_logits=from_logits,
        batch_size=batch_size,
        seed=seed,
        allow_untrained=allow_untrained,
        strict_steps=isinstance(steps, dict),
        verbose=verbose,
    )
    return ModelComparison(results, baseline=baseline)


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


# --------------------------------------------------------------------- results


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


# ------------------------------------------------------------- task sources


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
    if (
        isinstance(episodes, bool)
        or not isinstance(episodes, numbers.Integral)
        or episodes < 1
    ):
        raise ValueError(
            "`episodes` must be a positive integer, or None for every episode of "
            f"one pass over `tasks`. Received: episodes={episodes!r}"
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


def _iter_batches(tasks, episodes):
    """Yields `_Batch`es from a task source until `episodes` are drawn."""
    if isinstance(tasks, keras.utils.PyDataset):
        yield from _iter_dataset(tasks, episodes)
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


def _iter_dataset(tasks, episodes):
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


# ------------------------------------------------------------ model checks


def _model_name(model, key):
    if key is not None:
        return key
    return getattr(model, "name", None) or type(model).__name__


def _check_model(model, name, allow_untrained):
    if not callable(getattr(model, "adapt_and_predict", None)):
        raise ValueError(
            f"`model` ({name!r}) must be a metakeras MetaModel, or an object with "
            "an `adapt_and_predict(support_x, support_y, query_x, steps=None, "
            f"batch_size=32)` method. Received: {type(model).__name__}."
        )
    if isinstance(model, keras.Model) and not model.compiled:
        raise ValueError(
            f"`model` ({name!r}) is not compiled, so it has no task loss to "
            "adapt with: call model.compile(optimizer, loss=...) and meta-train "
            "it with model.fit(...) before evaluating it."
        )
    if not isinstance(allow_untrained, bool):
        raise ValueError(
            "`allow_untrained` must be True or False. Received: "
            f"allow_untrained={allow_untrained!r}"
        )
    optimizer = getattr(model, "optimizer", None)
    iterations = getattr(optimizer, "iterations", None)
    if (
        not allow_untrained
        and iterations is not None
        and int(keras.ops.convert_to_numpy(iterations)) == 0
    ):
        raise ValueError(
            f"`model` ({name!r}) was never meta-trained: its optimizer has taken "
            "no step, so its weights are the initial ones. Train it with "
            "model.fit(tasks) (or load a trained model) first, or pass "
            "allow_untrained=True to evaluate it anyway (e.g. as a baseline)."
        )


def _resolve_steps(steps, model, name, strict):
    inner = getattr(model, "inner", None)
    own = getattr(inner, "steps", None) if inner is not None else None
    if own is None:
        if steps is not None and strict:
            raise ValueError(
                f"`steps` applies to models with an inner loop (`model.inner."
                f"steps`); {name!r} has none, so pass steps=None. Received: "
                f"steps={steps!r}."
            )
        return [None], None
    if steps is None:
        return list(range(own + 1)), own
    values = list(steps) if isinstance(steps, (list, tuple, range)) else [steps]
    if not values:
        raise ValueError(
            "`steps` must be None, a non-negative integer or a non-empty list of "
            f"them. Received: steps={steps!r}"
        )
    for value in values:
        if (
            isinstance(value, bool)
            or not isinstance(value, numbers.Integral)
            or value < 0
        ):
            raise ValueError(
                "`steps` must be None, a non-negative integer or a list of them. "
                f"Received: steps={steps!r}"
            )
    values = sorted({int(v) for v in values})
    return values, own if own in values else values[-1]


# ------------------------------------------------------------------ metrics


def _resolve_metrics(metrics):
    """Returns `[(name, fn_or_None)]`; `None` marks a built-in metric."""
    if metrics is None:
        return None
    if isinstance(metrics, dict):
        items = list(metrics.items())
    elif isinstance(metrics, (str, bytes)) or callable(metrics):
        items = [(None, metrics)]
    else:
        items = [(None, m) for m in metrics]
    resolved = []
    for key, metric in items:
        if isinstance(metric, str):
            if metric not in _METRIC_NAMES:
                raise ValueError(
                    f"Unknown metric {metric!r}. Valid names: "
                    f"{list(_METRIC_NAMES)}, or a callable fn(y_true, y_pred)."
                )
            if key is not None and key != metric:
                raise ValueError(
                    f"In the `metrics` dict, built-in metric {metric!r} must be "
                    f"listed under its own name, not {key!r}."
                )
            resolved.append((metric, None))
        elif callable(metric):
            name = key if key is not None else getattr(metric, "__name__", None)
            if not name or name == "<lambda>":
                raise ValueError(
                    f"Metric {metric!r} has no usable name; pass metrics as a "
                    "dict mapping names to callables, e.g. {'brier': fn}."
                )
            resolved.append((str(name), metric))
        else:
            raise ValueError(
                f"Each metric must be a name or a callable fn(y_true, y_pred). "
                f"Received: {metric!r}. Valid names: {list(_METRIC_NAMES)}."
            )
    names = [n for n, _ in resolved]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"`metrics` lists {duplicates} more than once.")
    reserved = [n for n in names if n in ("episode", "steps", "model", *_EPISODE_INFO)]
    if reserved:
        raise ValueError(
            f"Metric name(s) {reserved} clash with result columns; rename them."
        )
    if not resolved:
        raise ValueError("`metrics` is empty; pass None for the default metrics.")
    return resolved


def _check_metrics_for_task(resolved, task, name):
    builtin = CLASSIFICATION_METRICS if task == "classification" else REGRESSION_METRICS
    if resolved is None:
        return [(m, None) for m in builtin]
    valid = builtin + _ANY_TASK_METRICS
    for metric, fn in resolved:
        if fn is None and metric not in valid:
            raise ValueError(
                f"Metric {metric!r} does not apply to {name!r}, a {task} task. "
                f"Valid names for {task}: {list(valid)}."
            )
    return resolved


def _infer_task(task, query_y, predictions, name):
    if task not in _TASKS:
        raise ValueError(f"Unknown task {task!r}. Valid choices: {list(_TASKS)}.")
    y_width = _width(query_y)
    columns = predictions.shape[-1] if predictions.ndim == 3 else 1
    integer = np.issubdtype(query_y.dtype, np.integer)
    one_label = y_width == 1 and predictions.ndim == 3 and columns >= 2
    if task == "auto":
        return "classification" if integer and one_label else "regression"
    if task == "classification":
        whole = integer or (
            np.issubdtype(query_y.dtype, np.floating)
            and np.array_equal(query_y, np.round(query_y))
        )
        if not (whole and one_label):
            raise ValueError(
                f"task='classification' needs one integer label per query example "
                f"and predictions with one column per class; {name!r} got labels "
                f"of shape {query_y.shape[1:]} ({query_y.dtype}) and predictions "
                f"of shape {predictions.shape[1:]}."
            )
    return task


def _looks_like_probabilities(predictions):
    return bool(
        np.all(predictions >= 0)
        and np.all(predictions <= 1)
        and np.allclose(predictions.sum(axis=-1), 1.0, atol=1e-3)
    )


def _resolve_from_logits(from_logits, model, predictions):
    if from_logits is not None:
        return from_logits
    loss = getattr(model, "loss", None)
    if isinstance(loss, keras.losses.Loss):
        config = loss.get_config()
        if "from_logits" in config:
            return bool(config["from_logits"])
    return not _looks_like_probabilities(predictions)


def _task_loss(model, name):
    loss = getattr(model, "loss", None)
    if loss is None:
        raise ValueError(
            f"Metric 'loss' is the model's compiled task loss, but {name!r} has "
            "no `loss`; compile it, or choose other metrics. Valid names: "
            f"{list(_METRIC_NAMES)}."
        )
    return keras.losses.get(loss)


class _Scorer:
    """Adapts one model to each batch and accumulates per-episode scores."""

    def __init__(self, name, model, steps, headline, options):
        self.name = name
        self.model = model
        self.steps = steps
        self.headline = headline
        self.options = options
        self.metrics = None
        self.task = None
        self.loss_fn = None
        self.from_logits = {}
        self.rows = []
        self.confusion = {}

    def update(self, batch, offset, batch_number, prefix):
        """Scores one batch; returns its headline metric for a progress bar."""
        support_x, support_y, query_x, query_y = batch.arrays
        seed = self.options["seed"]
        first_row = len(self.rows)
        for steps in self.steps:
            if seed is not None:
                keras.utils.set_random_seed(_derived_seed(seed, batch_number, steps))
            kwargs = {"batch_size": self.options["batch_size"]}
            if steps is not None:
                kwargs["steps"] = steps
            predictions = self.model.adapt_and_predict(
                support_x, support_y, query_x, **kwargs
            )
            predictions = np.asarray(_to_numpy(predictions), dtype="float64")
            if predictions.shape[:2] != query_y.shape[:2]:
                raise ValueError(
                    f"{self.name!r}.adapt_and_predict returned predictions of "
                    f"shape {predictions.shape}; expected (tasks, queries, ...) = "
                    f"{query_y.shape[:2]} + outputs."
                )
            if not np.all(np.isfinite(predictions)):
                raise ValueError(
                    f"{self.name!r} predicted NaN or infinite values after "
                    f"steps={steps} inner steps: adaptation diverged (is the inner "
                    "learning rate too high?)."
                )
            if self.task is None:
                self._configure(query_y, predictions)
            self._score(query_y, predictions, steps, offset)
        metric = self.metrics[0][0]
        scores = [
            row[metric]
            for row in self.rows[first_row:]
            if row.get("steps") == self.headline
        ]
        name = f"{self.name}_{metric}" if prefix else metric
        return [(name, float(np.mean(scores)))] if scores else []

    def _configure(self, query_y, predictions):
        self.task = _infer_task(self.options["task"], query_y, predictions, self.name)
        self.metrics = _check_metrics_for_task(
            self.options["metrics"], self.task, self.name
        )
        if any(m == "loss" and fn is None for m, fn in self.metrics):
            self.loss_fn = _task_loss(self.model, self.name)

    def _score(self, query_y, predictions, steps, offset):
        classification = self.task == "classification"
        if classification:
            columns = predictions.shape[-1]
            # One label per example: (T, Q) or (T, Q, 1) -> (T, Q).
            labels = np.rint(query_y.reshape(query_y.shape[:2])).astype("int64")
            low, high = labels.min(), labels.max()
            if low < 0 or high >= columns:
                raise ValueError(
                    f"Query labels of {self.name!r} lie in [{low}, {high}], but "
                    f"its predictions have {columns} classes: labels must lie in "
                    f"[0, {columns - 1}]."
                )
            if steps not in self.from_logits:
                self.from_logits[steps] = _resolve_from_logits(
                    self.options["from_logits"], self.model, predictions
                )
            if self.from_logits[steps]:
                probabilities = softmax(predictions, axis=-1)
            else:
                probabilities = np.clip(predictions, 0.0, None)
                totals = probabilities.sum(axis=-1, keepdims=True)
                if not np.all(totals > 0):
                    raise ValueError(
                        f"Predictions of {self.name!r} are not probabilities (a "
                        "row sums to 0) but from_logits=False; pass "
                        "from_logits=True or None."
                    )
                probabilities /= totals
            predicted = probabilities.argmax(axis=-1)
            # Summed over episodes, the confusion matrices are the matrix of
            # the concatenated episodes: one call for the whole batch.
            matrix = skm.confusion_matrix(
                labels.ravel(), predicted.ravel(), labels=np.arange(columns)
            )
            if steps in self.confusion:
                matrix = matrix + self.confusion[steps]
            self.confusion[steps] = matrix
        elif _width(predictions) != _width(query_y):
            raise ValueError(
                f"Regression predictions of {self.name!r} have shape "
                f"{predictions.shape[1:]} per task but the query targets "
                f"{query_y.shape[1:]}; they must match (or pass "
                "task='classification')."
            )
        with sklearn.config_context(assume_finite=True):
            for t in range(len(query_y)):
                row = {"episode": offset + t}
                if steps is not None:
                    row["steps"] = steps
                if classification:
                    y_true = labels[t]
                    y_pred = predicted[t]
                    row.update(
                        self._classification(y_true, y_pred, probabilities[t], columns)
                    )
                else:
                    y_true = _flat(query_y[t].astype("float64"))
                    y_pred = _flat(predictions[t])
                    row.update(self._regression(y_true, y_pred))
                for metric, fn in self.metrics:
                    if fn is not None:
                        row[metric] = _custom(fn, metric, y_true, y_pred, self.name)
                    elif metric == "loss":
                        row[metric] = self._loss(query_y[t], predictions[t])
                self.rows.append(row)

    def _classification(self, y_true, y_pred, probabilities, columns):
        wanted = {m for m, fn in self.metrics if fn is None}
        row = {}
        if "accuracy" in wanted:
            row["accuracy"] = float(skm.accuracy_score(y_true, y_pred))
        if wanted & {"precision", "recall", "f1"}:
            precision, recall, f1, _ = skm.precision_recall_fscore_support(
                y_true, y_pred, average="macro", zero_division=0.0
            )
            row.update(precision=float(precision), recall=float(recall), f1=float(f1))
        if "log_loss" in wanted:
            row["log_loss"] = float(
                skm.log_loss(y_true, probabilities, labels=np.arange(columns))
            )
        return {k: v for k, v in row.items() if k in wanted}

    def _regression(self, y_true, y_pred):
        wanted = {m for m, fn in self.metrics if fn is None}
        row = {}
        if "mse" in wanted:
            row["mse"] = float(skm.mean_squared_error(y_true, y_pred))
        if "mae" in wanted:
            row["mae"] = float(skm.mean_absolute_error(y_true, y_pred))
        if "r2" in wanted:
            row["r2"] = float(skm.r2_score(y_true, y_pred))
        return row

    def _loss(self, y_true, y_pred):
        value = self.loss_fn(
            keras.ops.convert_to_tensor(y_true),
            keras.ops.convert_to_tensor(y_pred.astype("float32")),
        )
        return float(np.mean(keras.ops.convert_to_numpy(value)))

    def result(self, info):
        frame = pd.DataFrame(self.rows)
        order = [m for m, _ in self.metrics]
        keys = ["steps", "episode"] if self.steps != [None] else ["episode"]
        frame = frame.sort_values(keys, kind="stable").reset_index(drop=True)
        for position, (key, values) in enumerate(info.items(), start=1):
            rows = [tuple(int(v) for v in values[e]) for e in frame["episode"]]
            frame.insert(position, key, rows)
        if self.steps != [None]:
            frame["steps"] = frame["steps"].astype("int64")
        head = [c for c in ("episode", *info, "steps") if c in frame.columns]
        return EpisodeResults(
            name=self.name,
            task=self.task,
            metrics=order,
            steps=self.steps,
            headline_steps=self.headline,
            per_episode=frame[head + order],
            confusion_matrices=self.confusion,
        )


def _width(values):
    """Values per example of a `(T, n, ...)` array."""
    return int(np.prod(values.shape[2:], dtype=int))


def _flat(values):
    values = values.reshape(len(values), -1)
    return values[:, 0] if values.shape[1] == 1 else values


def _custom(fn, metric, y_true, y_pred, name):
    value = fn(y_true, y_pred)
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"Metric {metric!r} must return a number; for {name!r} it returned "
            f"{value!r}."
        ) from None
    if not np.isfinite(value):
        raise ValueError(
            f"Metric {metric!r} returned {value} for an episode of {name!r}; "
            "per-episode scores must be finite."
        )
    return value


def _derived_seed(seed, batch_number, steps):
    # SeedSequence takes non-negative entropy only: no steps -> 0, s -> s + 1.
    entropy = [seed, batch_number, 0 if steps is None else steps + 1]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def _run(
    models,
    tasks,
    episodes,
    steps,
    metrics,
    task,
    from_logits,
    batch_size,
    seed,
    allow_untrained,
    strict_steps,
    verbose,
):
    episodes = _check_episodes(episodes)
    verbose = resolve_verbose(verbose)
    if task not in _TASKS:
        raise ValueError(f"Unknown task {task!r}. Valid choices: {list(_TASKS)}.")
    if from_logits is not None and not isinstance(from_logits, bool):
        raise ValueError(
            "`from_logits` must be None (inferred), True or False. Received: "
            f"from_logits={from_logits!r}"
        )
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, numbers.Integral)
        or batch_size < 1
    ):
        raise ValueError(
            f"`batch_size` must be a positive integer. Received: {batch_size!r}"
        )
    if seed is not None and (
        isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0
    ):
        raise ValueError(
            f"`seed` must be None or a non-negative integer. Received: {seed!r}"
        )
    options = {
        "metrics": _resolve_metrics(metrics),
        "task": task,
        "from_logits": from_logits,
        "batch_size": int(batch_size),
        "seed": seed,
    }
    scorers = []
    for key, model in models.items():
        name = _model_name(model, key)
        _check_model(model, name, allow_untrained)
        settings, headline = _resolve_steps(steps[key], model, name, strict_steps)
        scorers.append(_Scorer(name, model, settings, headline, options))

    offset = 0
    info = []
    bar = progress_bar(verbose, episodes, "episode")
    for batch_number, batch in enumerate(_iter_batches(tasks, episodes)):
        values = []
        for scorer in scorers:
            values += scorer.update(batch, offset, batch_number, len(scorers) > 1)
        info.append(batch.info)
        offset += len(batch)
        if bar is not None:
            bar.update(offset, values=values)
    if bar is not None and episodes is None:
        bar.update(offset, values=[], finalize=True)
    # Recorded only when every batch has it.
    info = {
        key: np.concatenate([i[key] for i in info])
        for key in _EPISODE_INFO
        if all(key in i for i in info)
    }
    return {key: s.result(info) for key, s in zip(models, scorers)}


# ----------------------------------------------------------------- exports


def _write_csv(frame, path):
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return path


def _write_markdown(frame, path, floatfmt):
    text = _markdown_table(frame, floatfmt)
    if path is not None:
        _write_text(path, text)
    return text


def _markdown_table(frame, floatfmt=".4f"):
    """Renders a DataFrame as a GitHub-flavoured Markdown table.

    Written here rather than with `DataFrame.to_markdown`, which needs the
    optional `tabulate` package.
    """
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(
            f"Expected a pandas DataFrame; received {type(frame).__name__}."
        )

    def cell(value):
        if value is None or value is pd.NA:
            return ""
        if isinstance(value, (bool, np.bool_)):
            return str(bool(value))
        if isinstance(value, (float, np.floating)):
            return "nan" if np.isnan(value) else format(float(value), floatfmt)
        if isinstance(value, tuple):
            value = " ".join(str(v) for v in value)
        return str(value).replace("|", "\\|").replace("\n", " ")

    numeric = [
        pd.api.types.is_numeric_dtype(frame[c])
        and not pd.api.types.is_bool_dtype(frame[c])
        for c in frame.columns
    ]
    lines = [
        "| " + " | ".join(cell(str(c)) for c in frame.columns) + " |",
        "|" + "|".join("---:" if n else ":---" for n in numeric) + "|",
    ]
    for values in frame.itertuples(index=False, name=None):
        lines.append("| " + " | ".join(cell(v) for v in values) + " |")
    return "\n".join(lines) + "\n"


def _write_text(path, text):
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
