"""Scoring one model: adapt to each batch, compute per-episode metrics."""

import keras
import numpy as np
import pandas as pd
import sklearn
from scipy.special import softmax
from sklearn import metrics as skm

from metakeras.evaluation._metrics import (
    _check_metrics_for_task,
    _infer_task,
    _resolve_from_logits,
    _task_loss,
    _width,
)
from metakeras.evaluation.episodes import _to_numpy
from metakeras.evaluation.results import EpisodeResults


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
            # Positional: the 4th parameter is `inner_steps` on metakeras
            # models and `steps` on objects written for older versions.
            inner = () if steps is None else (steps,)
            predictions = self.model.adapt_and_predict(
                support_x,
                support_y,
                query_x,
                *inner,
                batch_size=self.options["batch_size"],
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
                    f"inner_steps={steps}: adaptation diverged (is the inner "
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
            labels, probabilities = self._labels_and_probabilities(
                query_y, predictions, steps
            )
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

    def _labels_and_probabilities(self, query_y, predictions, steps):
        """Checked `(T, Q)` integer labels and `(T, Q, classes)` probabilities."""
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
            return labels, softmax(predictions, axis=-1)
        probabilities = np.clip(predictions, 0.0, None)
        totals = probabilities.sum(axis=-1, keepdims=True)
        if not np.all(totals > 0):
            raise ValueError(
                f"Predictions of {self.name!r} are not probabilities (a "
                "row sums to 0) but from_logits=False; pass "
                "from_logits=True or None."
            )
        return labels, probabilities / totals

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
