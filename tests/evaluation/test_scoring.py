"""`evaluate_episodes` and `compare_models`: real models, settings, pairing."""

import keras
import numpy as np
import pandas as pd
import pytest
from conftest import (
    EpisodeSource,
    PreparedModel,
    classification_episodes,
    functional_classifier,
    indexed_episodes,
    mlp,
    trained_classifier,
    trained_regressor,
)
from scipy.special import softmax
from sklearn import metrics as skm

import metakeras
from metakeras.evaluation import (
    ModelComparison,
    compare_models,
    evaluate_episodes,
    paired_difference,
)
from metakeras.tasks import SinusoidTasks

# --------------------------------------------------------------- real MAML


def test_maml_classification_metrics_match_sklearn_and_model_evaluate():
    model = trained_classifier(inner_steps=2)
    test = classification_episodes(tasks=12, seed=4)
    results = evaluate_episodes(model, test, episodes=None, inner_steps=2, batch_size=5)

    predictions = model.adapt_and_predict(
        test["support_x"], test["support_y"], test["query_x"]
    )
    flat_y = test["query_y"].reshape(-1)
    flat_p = softmax(predictions.reshape(-1, 3).astype("float64"), -1)
    assert results.mean("accuracy")[0] == pytest.approx(
        skm.accuracy_score(flat_y, flat_p.argmax(-1))
    )
    assert results.mean("log_loss")[0] == pytest.approx(
        skm.log_loss(flat_y, flat_p), rel=1e-5
    )
    np.testing.assert_array_equal(
        results.confusion_matrix, skm.confusion_matrix(flat_y, flat_p.argmax(-1))
    )
    # Keras averages over all query examples; every episode has 9 queries, so
    # that is the mean over episodes.
    logs = model.evaluate(test, batch_size=4, verbose=0, return_dict=True)
    assert results.mean("accuracy")[0] == pytest.approx(logs["accuracy"], abs=1e-6)
    assert results.mean("log_loss")[0] == pytest.approx(logs["loss"], rel=1e-4)


def test_maml_regression_agrees_with_model_evaluate_on_sinusoids():
    model = trained_regressor(inner_steps=2)
    tasks = SinusoidTasks(
        shots=5, queries=8, meta_batch_size=4, steps=3, seed=11, resample=False
    )
    results = evaluate_episodes(
        model, tasks, episodes=None, inner_steps=2, metrics=["mse", "mae", "loss"]
    )
    logs = model.evaluate(tasks, verbose=0, return_dict=True)
    assert results.episodes == 12
    assert results.mean("mse")[0] == pytest.approx(logs["loss"], rel=1e-5)
    assert results.mean("loss")[0] == pytest.approx(logs["loss"], rel=1e-5)
    assert results.mean("mae")[0] == pytest.approx(logs["mae"], rel=1e-5)


def test_adaptation_curve_before_and_after_inner_steps():
    model = trained_classifier(inner_steps=2)
    test = classification_episodes(tasks=16, seed=5)
    results = evaluate_episodes(model, test, episodes=None, metrics=["accuracy"])
    assert results.steps == [0, 1, 2]
    assert results.headline_steps == 2
    assert sorted(results.summary["steps"].unique()) == [0, 1, 2]
    assert len(results.per_episode) == 3 * 16
    # Each setting scores the same episodes as adapt_and_predict with it.
    for steps in (0, 2):
        predictions = model.adapt_and_predict(
            test["support_x"], test["support_y"], test["query_x"], inner_steps=steps
        )
        expected = (predictions.argmax(-1) == test["query_y"]).mean(axis=1)
        np.testing.assert_allclose(results.scores("accuracy", steps), expected)
    table = results.adaptation("accuracy")
    assert list(table.columns) == [
        "steps",
        "metric",
        "mean",
        "ci95",
        "change",
        "change_ci95",
    ]
    # Labels are permuted per task: without adaptation it is near chance.
    assert table["change"].iloc[0] == 0
    assert table["mean"].iloc[-1] > table["mean"].iloc[0] + 0.2
    gain, gain_ci = paired_difference(
        results.scores("accuracy", 2), results.scores("accuracy", 0)
    )
    assert table["change"].iloc[-1] == pytest.approx(gain)
    assert table["change_ci95"].iloc[-1] == pytest.approx(gain_ci)
    # An explicit setting is evaluated alone.
    single = evaluate_episodes(model, test, episodes=None, inner_steps=1)
    assert single.steps == [1] and single.headline_steps == 1


def test_model_without_inner_loop_is_evaluated_once():
    episodes = indexed_episodes(5, ways=3, queries=2)
    probabilities = np.random.default_rng(5).dirichlet(np.ones(3), size=(5, 6))
    model = PreparedModel({None: probabilities})
    results = evaluate_episodes(model, episodes, episodes=None)
    assert results.steps == [None] and results.headline_steps is None
    assert "steps" not in results.per_episode.columns
    assert "steps" not in results.summary.columns
    assert [c[0] for c in model.calls] == [None]
    with pytest.raises(ValueError, match="no inner steps"):
        results.adaptation()
    with pytest.raises(
        ValueError, match=r"`inner_steps` applies to models with an inner"
    ):
        evaluate_episodes(model, episodes, episodes=None, inner_steps=3)


def test_prepared_model_with_inner_loop_gets_each_setting():
    episodes = indexed_episodes(4, ways=3, queries=2)
    rng = np.random.default_rng(6)
    predictions = {s: rng.dirichlet(np.ones(3), size=(4, 6)) for s in range(4)}
    model = PreparedModel(predictions, inner_steps=3)
    results = evaluate_episodes(model, episodes, episodes=None, metrics=["accuracy"])
    assert [c[0] for c in model.calls] == [0, 1, 2, 3]
    for s in range(4):
        expected = (predictions[s].argmax(-1) == episodes["query_y"]).mean(axis=1)
        np.testing.assert_allclose(results.scores("accuracy", s), expected)


# ------------------------------------------------------------- comparison


def test_compare_models_sees_identical_episodes_and_pairs_differences():
    rng = np.random.default_rng(8)
    first = PreparedModel({None: rng.dirichlet(np.ones(3), size=(40, 12))}, name="a")
    second = PreparedModel({None: rng.dirichlet(np.ones(3), size=(40, 12))}, name="b")
    comparison = compare_models(
        [first, second], EpisodeSource(batches=2, tasks=4, seed=5), episodes=12
    )
    assert isinstance(comparison, ModelComparison)
    assert comparison.baseline == "a"
    # Every model received exactly the same support and query sets.
    assert len(first.calls) == len(second.calls) == 3
    for (_, sx_a, qx_a), (_, sx_b, qx_b) in zip(first.calls, second.calls):
        np.testing.assert_array_equal(sx_a, sx_b)
        np.testing.assert_array_equal(qx_a, qx_b)
    a, b = comparison.results["a"], comparison.results["b"]
    assert a.per_episode["classes"].tolist() == b.per_episode["classes"].tolist()
    row = comparison.differences.set_index("metric").loc["accuracy"]
    diff = b.scores("accuracy") - a.scores("accuracy")
    assert row["model"] == "b" and row["baseline"] == "a"
    assert row["difference"] == pytest.approx(diff.mean())
    assert row["ci95"] == pytest.approx(1.96 * diff.std(ddof=1) / np.sqrt(12))
    assert row["episodes"] == 12
    assert set(comparison.summary["model"]) == {"a", "b"}
    # The same seed gives the same episodes: a second run repeats exactly.
    again = compare_models(
        {"a": first, "b": second}, EpisodeSource(batches=2, tasks=4, seed=5), 12
    )
    pd.testing.assert_frame_equal(again.differences, comparison.differences)
    with pytest.raises(ValueError, match=r"Unknown baseline 'c'. Valid names"):
        compare_models({"a": first, "b": second}, EpisodeSource(), 6, baseline="c")
    with pytest.raises(ValueError, match="at least two models"):
        compare_models({"a": first}, EpisodeSource(), 6)


def test_seeded_comparison_pairs_stochastic_adaptation():
    # Dropout is active in the inner loop, so adaptation is random. With a
    # seed, the same model under two names adapts identically on every episode.
    learner = mlp(hidden=16, outputs=3, inputs=4, activation="relu", dropout=0.5)
    model = metakeras.MAML(learner, inner_learning_rate=0.5, inner_steps=2)
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    test = classification_episodes(tasks=4, seed=6)
    model.train_on_batch(test)
    comparison = compare_models(
        {"first": model, "second": model}, test, episodes=None, inner_steps=2, seed=3
    )
    assert (comparison.differences["difference"] == 0).all()
    assert (comparison.differences["ci95"] == 0).all()
    unseeded = evaluate_episodes(model, test, episodes=None, inner_steps=2)
    seeded = evaluate_episodes(model, test, episodes=None, inner_steps=2, seed=3)
    pd.testing.assert_frame_equal(
        seeded.per_episode, comparison.results["first"].per_episode
    )
    assert not unseeded.per_episode.equals(seeded.per_episode)


# -------------------------------------------------------------- bad input


def test_models_that_cannot_be_evaluated():
    episodes = classification_episodes(tasks=4)
    with pytest.raises(ValueError, match=r"`model` .* must be a metakeras MetaModel"):
        evaluate_episodes(functional_classifier(), episodes)
    uncompiled = metakeras.MAML(functional_classifier())
    with pytest.raises(ValueError, match=r"`model` .* is not compiled"):
        evaluate_episodes(uncompiled, episodes)
    untrained = metakeras.MAML(functional_classifier(), inner_learning_rate=0.5)
    untrained.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    with pytest.raises(ValueError, match=r"never meta-trained.*allow_untrained=True"):
        evaluate_episodes(untrained, episodes)
    results = evaluate_episodes(
        untrained, episodes, episodes=None, inner_steps=1, allow_untrained=True
    )
    assert results.episodes == 4


def test_evaluate_and_compare_take_steps_as_the_deprecated_inner_steps():
    model = PreparedModel({0: np.zeros((4, 12, 3)), 1: np.ones((4, 12, 3))}, 1)
    episodes = indexed_episodes(4)
    results = evaluate_episodes(model, episodes, episodes=None, inner_steps=1)
    with pytest.warns(DeprecationWarning, match="`steps` of evaluate_episodes"):
        old = evaluate_episodes(model, episodes, episodes=None, steps=1)
    pd.testing.assert_frame_equal(old.summary, results.summary)
    with pytest.warns(DeprecationWarning, match="`steps` of compare_models"):
        comparison = compare_models(
            {"a": model, "b": model}, episodes, episodes=None, steps={"a": 0, "b": 1}
        )
    assert comparison.results["a"].steps == [0]
    assert comparison.results["b"].steps == [1]
    with pytest.raises(TypeError, match=r"evaluate_episodes\(\) got both"):
        evaluate_episodes(model, episodes, inner_steps=0, steps=1)


@pytest.mark.parametrize("steps", [-1, 1.5, "3", []])
def test_invalid_steps(steps):
    model = PreparedModel({0: np.zeros((4, 12, 3))}, inner_steps=1)
    with pytest.raises(ValueError, match=r"`inner_steps` must be None, a non-negative"):
        evaluate_episodes(model, indexed_episodes(4), episodes=None, inner_steps=steps)


# ---------------------------------------------------------- seeds, progress


def test_seeded_evaluation_of_a_model_without_inner_steps():
    import keras

    import metakeras
    from metakeras.evaluation import evaluate_episodes

    learner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8)])
    model = metakeras.ProtoNet(learner)
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    episodes = classification_episodes(tasks=6, seed=1)
    first = evaluate_episodes(model, episodes, episodes=6, seed=3, allow_untrained=True)
    second = evaluate_episodes(
        model, episodes, episodes=6, seed=3, allow_untrained=True
    )
    assert first.summary.equals(second.summary)


def test_progress_is_keras_style_and_follows_verbose(capsys, monkeypatch):
    episodes = EpisodeSource(batches=3, tasks=4, ways=3, resample=False)
    probabilities = np.random.default_rng(5).dirichlet(np.ones(3), size=(12, 12))
    model = PreparedModel({None: probabilities})
    results = evaluate_episodes(model, episodes, episodes=12, verbose=2)
    (line,) = capsys.readouterr().out.strip().splitlines()
    mean, _ = results.mean("accuracy")
    assert line.startswith("12/12") and f"accuracy: {mean:.4f}" in line
    evaluate_episodes(model, episodes, episodes=12, verbose=0)
    assert capsys.readouterr().out == ""
    # A live bar on a terminal: one update per batch of 4 episodes.
    monkeypatch.setattr("metakeras._progress._interactive", lambda: True)
    evaluate_episodes(model, episodes, episodes=12)
    out = capsys.readouterr().out
    assert "\r" in out and "12/12" in out
    # The final figure is the mean over all episodes, not the last batch's:
    # right answers in the first two batches, wrong ones in the last.
    labels = np.concatenate([episodes[i]["query_y"] for i in range(3)])
    answers = np.where(np.arange(12)[:, None] < 8, labels, (labels + 1) % 3)
    model = PreparedModel({None: np.eye(3)[answers]})
    evaluate_episodes(model, episodes, episodes=12, verbose=2)
    assert "accuracy: 0.6667" in capsys.readouterr().out
    with pytest.raises(ValueError, match=r"`verbose` must be one of \['auto', 0, 1"):
        evaluate_episodes(model, episodes, episodes=12, verbose=3)
