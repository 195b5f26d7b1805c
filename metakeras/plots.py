"""Plots of episodic evaluations and training runs, saved as PNG files.

Every function draws on its own `matplotlib.figure.Figure` rendered by the
Agg canvas, so nothing here touches pyplot's global state or needs a display.
With a `path` the figure is written atomically (a crash never leaves a
truncated file) and the path is returned; with `path=None` the `Figure` itself
is returned, e.g. to show in a notebook.
"""

import os
import textwrap

import keras
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import ConfusionMatrixDisplay

from metakeras._checks import check_flag
from metakeras._io import atomic_path
from metakeras.evaluation import EpisodeResults, ModelComparison

__all__ = [
    "plot_adaptation_curve",
    "plot_confusion_matrix",
    "plot_episode_distribution",
    "plot_history",
]


def plot_episode_distribution(results, path=None, metric=None, steps="headline"):
    """Histogram of a metric over episodes, with its mean and 95% interval.

    A few-shot mean hides how much episodes differ; the distribution shows
    it (and a bimodal one hints at a class of episodes the model fails on).

    Args:
        results: an `EpisodeResults` (from `evaluate_episodes`).
        path: PNG file to write, or `None` to return the figure.
            Defaults to `None`.
        metric: the metric to plot. Defaults to `None` (the first metric,
            e.g. accuracy for classification).
        steps: the inner-step setting, or `"headline"`. Defaults to
            `"headline"`.

    Returns:
        `path`, or the `matplotlib.figure.Figure` when `path` is `None`.

    Example:

    ```python
    plot_episode_distribution(results, "accuracy_distribution.png")
    ```
    """
    _check_path(path)
    if not isinstance(results, EpisodeResults):
        raise ValueError(
            "`results` must be an EpisodeResults (from evaluate_episodes). "
            f"Received: {type(results).__name__}."
        )
    metric = results.metrics[0] if metric is None else metric
    values = results.scores(metric, steps)
    mean, half = results.mean(metric, steps)
    setting = results.headline_steps if steps == "headline" else steps
    fig = _figure((6, 4))
    ax = fig.add_subplot()
    bins = min(30, max(5, int(np.sqrt(values.size)) * 2))
    ax.hist(values, bins=bins, color="tab:blue", alpha=0.75, edgecolor="white")
    ax.axvline(mean, color="black", lw=2, label=f"mean {mean:.4f}")
    if np.isfinite(half):
        ax.axvspan(
            mean - half,
            mean + half,
            color="tab:orange",
            alpha=0.3,
            label=f"95% CI ± {half:.4f}",
        )
    ax.set_xlabel(metric)
    ax.set_ylabel("episodes")
    title = f"{results.name}: {metric} over {values.size} episodes"
    if setting is not None:
        title += f" ({setting} inner steps)"
    ax.set_title(title)
    ax.legend()
    return _finish(fig, path)


def plot_adaptation_curve(results, path=None, metric=None):
    """A metric against the number of inner steps, with 95% intervals.

    Shows the gain from adaptation: step 0 is the meta-learned model before
    adaptation. Several models can share the axes.

    Args:
        results: an `EpisodeResults`, a `ModelComparison`, or a dict mapping
            names to `EpisodeResults`. Models without inner steps are skipped
            (at least one must have them).
        path: PNG file to write, or `None` to return the figure.
            Defaults to `None`.
        metric: the metric to plot. Defaults to `None` (the first metric of
            the first model).

    Returns:
        `path`, or the `matplotlib.figure.Figure` when `path` is `None`.

    Raises:
        ValueError: if no model has inner steps.

    Example:

    ```python
    results = evaluate_episodes(maml, tasks, inner_steps=range(11))
    plot_adaptation_curve(results, "accuracy_vs_steps.png")
    ```
    """
    _check_path(path)
    named = _named_results(results)
    curves = {name: r for name, r in named.items() if r.has_steps}
    if not curves:
        raise ValueError(
            "`results` holds no model with inner steps, so there is no "
            f"adaptation curve (models: {list(named)})."
        )
    if metric is None:
        metric = next(iter(curves.values())).metrics[0]
    fig = _figure((6, 4))
    ax = fig.add_subplot()
    for name, result in curves.items():
        table = result.adaptation(metric)
        steps = table["steps"].to_numpy()
        mean = table["mean"].to_numpy()
        half = np.nan_to_num(table["ci95"].to_numpy())
        (line,) = ax.plot(steps, mean, marker="o", label=name)
        ax.fill_between(
            steps, mean - half, mean + half, alpha=0.2, color=line.get_color()
        )
    ax.set_xlabel("inner steps")
    ax.set_ylabel(f"query {metric}")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_title(f"{metric} vs inner steps (mean ± 95% CI)")
    ax.grid(alpha=0.3)
    ax.legend()
    return _finish(fig, path)


def plot_history(history, path=None, metrics=None):
    """Training curves from a Keras `History`: one panel per metric.

    Validation curves (`val_...`) share the panel of their training metric.

    Args:
        history: the `keras.callbacks.History` returned by `model.fit`, or
            its `history` dict.
        path: PNG file to write, or `None` to return the figure.
            Defaults to `None`.
        metrics: names of the training metrics to plot. Defaults to `None`
            (all of them).

    Returns:
        `path`, or the `matplotlib.figure.Figure` when `path` is `None`.

    Raises:
        ValueError: if `history` is empty or a metric is unknown.

    Example:

    ```python
    history = model.fit(tasks, epochs=10)
    plot_history(history, "training.png")
    ```
    """
    _check_path(path)
    logs = history.history if isinstance(history, keras.callbacks.History) else history
    if not isinstance(logs, dict):
        raise ValueError(
            "`history` must be a keras.callbacks.History or its `history` dict. "
            f"Received: {type(history).__name__}."
        )
    available = [k for k in logs if not k.startswith("val_")]
    if not available or not any(len(logs[k]) for k in available):
        raise ValueError(
            "`history` holds no logged epochs; train with model.fit(...) first."
        )
    if metrics is None:
        metrics = available
    elif isinstance(metrics, str):
        metrics = [metrics]
    unknown = [m for m in metrics if m not in available]
    if unknown:
        raise ValueError(f"Unknown metric(s) {unknown}. Valid names: {available}.")
    fig = _figure((4.5 * len(metrics), 3.5))
    axes = np.atleast_1d(fig.subplots(1, len(metrics)))
    for ax, metric in zip(axes, metrics):
        values = logs[metric]
        epochs = np.arange(1, len(values) + 1)
        ax.plot(epochs, values, marker="o", label=metric)
        if f"val_{metric}" in logs:
            val = logs[f"val_{metric}"]
            ax.plot(np.arange(1, len(val) + 1), val, marker="s", label=f"val_{metric}")
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend()
    return _finish(fig, path)


def plot_confusion_matrix(
    results, path=None, steps="headline", normalize=False, labels=None
):
    """The confusion matrix summed over episodes.

    Labels are the remapped in-episode labels `0..N-1`, so the matrix shows
    systematic confusions of label positions (for instance a bias towards
    label 0), not of original classes.

    Args:
        results: an `EpisodeResults` of a classification task, or a square
            confusion matrix (rows: true labels).
        path: PNG file to write, or `None` to return the figure.
            Defaults to `None`.
        steps: the inner-step setting, or `"headline"`. Defaults to
            `"headline"`.
        normalize: divide each row by its total, so cells are recall rates.
            Defaults to `False`.
        labels: tick labels, one per class. Defaults to `None` (`0..N-1`).

    Returns:
        `path`, or the `matplotlib.figure.Figure` when `path` is `None`.

    Raises:
        ValueError: for a regression result or a matrix that is not square.

    Example:

    ```python
    plot_confusion_matrix(results, "confusion.png", normalize=True)
    ```
    """
    _check_path(path)
    title = "confusion matrix"
    if isinstance(results, EpisodeResults):
        if results.task != "classification":
            raise ValueError(
                "A confusion matrix needs a classification task; "
                f"{results.name!r} was evaluated on regression."
            )
        setting = results.headline_steps if steps == "headline" else steps
        if setting not in results.confusion_matrices:
            raise ValueError(
                f"`steps`={steps!r} was not evaluated. Valid choices: "
                f"{results.steps} or 'headline'."
            )
        matrix = results.confusion_matrices[setting]
        title = f"{results.name}: summed over {results.episodes} episodes"
        if setting is not None:
            title += f", {setting} step" + ("" if setting == 1 else "s")
    else:
        matrix = np.asarray(results)
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(
                "`results` must be an EpisodeResults or a square confusion "
                f"matrix; received an array of shape {matrix.shape}."
            )
    if labels is not None and len(labels) != len(matrix):
        raise ValueError(
            f"`labels` must name the {len(matrix)} classes; received "
            f"{len(labels)} labels."
        )
    check_flag("normalize", normalize, echo_name=False)
    values = matrix.astype("float64")
    if normalize:
        totals = values.sum(axis=1, keepdims=True)
        values = np.divide(values, totals, out=np.zeros_like(values), where=totals > 0)
    size = max(4.0, 0.6 * len(matrix) + 2.5)
    fig = _figure((size, size))
    ax = fig.add_subplot()
    display = ConfusionMatrixDisplay(values, display_labels=labels)
    display.plot(ax=ax, values_format=".2f" if normalize else ".0f", colorbar=True)
    title += " (row-normalized)" if normalize else ""
    # About 9 characters of the default 12 pt title per inch of figure.
    wrapped = textwrap.fill(title, width=int(9 * size), break_on_hyphens=False)
    ax.set_title(wrapped)
    return _finish(fig, path)


def _figure(size):
    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _check_path(path):
    if path is not None and not os.fspath(path).lower().endswith(".png"):
        raise ValueError(
            f"`path` must name a .png file, or be None. Received: path={path!r}"
        )


def _finish(fig, path):
    if path is None:
        return fig
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path


def _named_results(results):
    if isinstance(results, EpisodeResults):
        return {results.name: results}
    if isinstance(results, ModelComparison):
        return dict(results.results)
    if isinstance(results, dict) and all(
        isinstance(r, EpisodeResults) for r in results.values()
    ):
        return dict(results)
    raise ValueError(
        "`results` must be an EpisodeResults, a ModelComparison or a dict of "
        f"EpisodeResults. Received: {type(results).__name__}."
    )
