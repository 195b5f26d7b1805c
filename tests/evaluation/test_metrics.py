"""Metrics of `evaluate_episodes`: equal to scikit-learn's, named, checked."""

import numpy as np
import pytest
from conftest import PreparedModel, indexed_episodes
from scipy.special import softmax
from sklearn import metrics as skm

from metakeras.evaluation import CLASSIFICATION_METRICS, evaluate_episodes

# ------------------------------------------------- metrics equal scikit-learn


def test_classification_metrics_equal_sklearn_on_prepared_predictions():
    episodes = indexed_episodes(6, ways=3, queries=4)
    rng = np.random.default_rng(1)
    probabilities = rng.dirichlet(np.ones(3), size=(6, 12)).astype("float32")
    model = PreparedModel({None: probabilities})
    results = evaluate_episodes(model, episodes, episodes=None)

    assert results.task == "classification"
    assert results.metrics == list(CLASSIFICATION_METRICS)
    frame = results.per_episode
    assert list(frame.columns) == ["episode", *CLASSIFICATION_METRICS]
    assert frame["episode"].tolist() == list(range(6))
    y = episodes["query_y"]
    for t in range(6):
        y_pred = probabilities[t].argmax(-1)
        row = frame.iloc[t]
        assert row["accuracy"] == pytest.approx(skm.accuracy_score(y[t], y_pred))
        assert row["precision"] == pytest.approx(
            skm.precision_score(y[t], y_pred, average="macro", zero_division=0)
        )
        assert row["recall"] == pytest.approx(
            skm.recall_score(y[t], y_pred, average="macro", zero_division=0)
        )
        assert row["f1"] == pytest.approx(
            skm.f1_score(y[t], y_pred, average="macro", zero_division=0)
        )
        assert row["log_loss"] == pytest.approx(
            skm.log_loss(y[t], probabilities[t], labels=[0, 1, 2]), rel=1e-6
        )
    # Equal query sizes: the mean over episodes of accuracy and log-loss is the
    # metric of the concatenated predictions, and the summed confusion matrix
    # is the confusion matrix of the concatenation.
    flat_y = y.reshape(-1)
    flat_p = probabilities.reshape(-1, 3)
    mean, _ = results.mean("accuracy")
    assert mean == pytest.approx(skm.accuracy_score(flat_y, flat_p.argmax(-1)))
    assert results.mean("log_loss")[0] == pytest.approx(
        skm.log_loss(flat_y, flat_p), rel=1e-6
    )
    np.testing.assert_array_equal(
        results.confusion_matrix, skm.confusion_matrix(flat_y, flat_p.argmax(-1))
    )
    # The summary is mean, sample std and 1.96 * std / sqrt(n) per metric.
    row = results.summary.set_index("metric").loc["f1"]
    values = frame["f1"].to_numpy()
    assert row["mean"] == pytest.approx(values.mean())
    assert row["std"] == pytest.approx(values.std(ddof=1))
    assert row["ci95"] == pytest.approx(1.96 * values.std(ddof=1) / np.sqrt(6))
    assert row["episodes"] == 6


def test_logits_are_turned_into_probabilities_with_softmax():
    episodes = indexed_episodes(4, ways=3, queries=3)
    logits = np.random.default_rng(2).normal(size=(4, 9, 3)).astype("float32") * 3
    expected = [
        skm.log_loss(episodes["query_y"][t], softmax(logits[t].astype("float64"), -1))
        for t in range(4)
    ]
    # Rows that are not probabilities are detected as logits ...
    inferred = evaluate_episodes(
        PreparedModel({None: logits}), episodes, episodes=None, metrics=["log_loss"]
    )
    np.testing.assert_allclose(inferred.per_episode["log_loss"], expected, rtol=1e-6)
    # ... and from_logits=True says so explicitly.
    explicit = evaluate_episodes(
        PreparedModel({None: logits}),
        episodes,
        episodes=None,
        metrics=["log_loss"],
        from_logits=True,
    )
    np.testing.assert_allclose(explicit.per_episode["log_loss"], expected, rtol=1e-6)
    # Probabilities are used as they are.
    probabilities = softmax(logits.astype("float64"), -1)
    as_probabilities = evaluate_episodes(
        PreparedModel({None: probabilities}),
        episodes,
        episodes=None,
        metrics=["log_loss"],
    )
    np.testing.assert_allclose(
        as_probabilities.per_episode["log_loss"], expected, rtol=1e-6
    )


def test_regression_metrics_equal_sklearn_on_prepared_predictions():
    episodes = indexed_episodes(5, queries=4, regression=True)
    predictions = episodes["query_y"] + np.random.default_rng(3).normal(
        size=episodes["query_y"].shape
    ).astype("float32")
    results = evaluate_episodes(
        PreparedModel({None: predictions}), episodes, episodes=None
    )
    assert results.task == "regression"
    assert results.metrics == ["mse", "mae", "r2"]
    # Scores are computed in float64.
    y = episodes["query_y"].astype("float64")
    predictions = predictions.astype("float64")
    flat_y, flat_p = y.reshape(-1), predictions.reshape(-1)
    assert results.mean("mse")[0] == pytest.approx(
        skm.mean_squared_error(flat_y, flat_p), rel=1e-6
    )
    assert results.mean("mae")[0] == pytest.approx(
        skm.mean_absolute_error(flat_y, flat_p), rel=1e-6
    )
    np.testing.assert_allclose(
        results.per_episode["r2"],
        [skm.r2_score(y[t, :, 0], predictions[t, :, 0]) for t in range(5)],
        rtol=1e-6,
    )
    with pytest.raises(ValueError, match="confusion matrix needs a classification"):
        _ = results.confusion_matrix


def test_custom_metric_callables_and_names():
    episodes = indexed_episodes(4, ways=3, queries=4)
    probabilities = np.random.default_rng(4).dirichlet(np.ones(3), size=(4, 12))
    model = PreparedModel({None: probabilities})
    results = evaluate_episodes(
        model,
        episodes,
        episodes=None,
        metrics=["accuracy", skm.balanced_accuracy_score],
    )
    assert results.metrics == ["accuracy", "balanced_accuracy_score"]
    expected = [
        skm.balanced_accuracy_score(episodes["query_y"][t], probabilities[t].argmax(-1))
        for t in range(4)
    ]
    np.testing.assert_allclose(results.per_episode["balanced_accuracy_score"], expected)
    named = evaluate_episodes(
        model,
        episodes,
        episodes=None,
        metrics={"kappa": skm.cohen_kappa_score, "accuracy": "accuracy"},
    )
    assert named.metrics == ["kappa", "accuracy"]
    with pytest.raises(ValueError, match="no usable name"):
        evaluate_episodes(model, episodes, metrics=[lambda a, b: 0.0])


# -------------------------------------------------------------- bad input


def test_unknown_and_mismatched_metric_names():
    model = PreparedModel({None: np.full((4, 12, 3), 1 / 3)})
    episodes = indexed_episodes(4)
    with pytest.raises(ValueError) as error:
        evaluate_episodes(model, episodes, metrics=["acc"], episodes=None)
    message = str(error.value)
    assert "Unknown metric 'acc'. Valid names: ['accuracy', 'precision'" in message
    with pytest.raises(ValueError, match=r"'mse' does not apply.*Valid names for"):
        evaluate_episodes(model, episodes, metrics=["mse"], episodes=None)
    with pytest.raises(ValueError, match=r"Unknown task 'multiclass'. Valid choices"):
        evaluate_episodes(model, episodes, task="multiclass")
    with pytest.raises(ValueError, match=r"`from_logits` must be None"):
        evaluate_episodes(model, episodes, from_logits="yes")
    with pytest.raises(ValueError, match="no `loss`"):
        evaluate_episodes(model, episodes, metrics=["loss"], episodes=None)


def test_wrong_predictions_and_labels():
    episodes = indexed_episodes(4)
    short = PreparedModel({None: np.zeros((4, 5, 3))})
    with pytest.raises(ValueError, match="returned predictions of shape"):
        evaluate_episodes(short, episodes, episodes=None)
    diverged = PreparedModel({None: np.full((4, 12, 3), np.nan)})
    with pytest.raises(ValueError, match="NaN or infinite values"):
        evaluate_episodes(diverged, episodes, episodes=None)
    zeros = PreparedModel({None: np.zeros((4, 12, 3))})
    with pytest.raises(ValueError, match="not probabilities"):
        evaluate_episodes(zeros, episodes, episodes=None, from_logits=False)
    episodes["query_y"][0, 0] = 5
    model = PreparedModel({None: np.full((4, 12, 3), 1 / 3)})
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\]"):
        evaluate_episodes(model, episodes, episodes=None)
