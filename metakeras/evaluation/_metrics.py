"""Metric names, task types and the model's outputs as probabilities."""

import keras
import numpy as np

from metakeras.evaluation.episodes import _EPISODE_INFO

CLASSIFICATION_METRICS = ("accuracy", "precision", "recall", "f1", "log_loss")
REGRESSION_METRICS = ("mse", "mae", "r2")
# "loss" is the model's compiled task loss, the number `model.evaluate` logs.
_ANY_TASK_METRICS = ("loss",)
_METRIC_NAMES = CLASSIFICATION_METRICS + REGRESSION_METRICS + _ANY_TASK_METRICS
_TASKS = ("auto", "classification", "regression")


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


def _width(values):
    """Values per example of a `(T, n, ...)` array."""
    return int(np.prod(values.shape[2:], dtype=int))
