"""Episodic evaluation: metrics, confidence intervals, task sources, reports."""

import os

import keras
import numpy as np
import pandas as pd
import pytest
from conftest import classification_episodes, mlp
from scipy.special import softmax
from sklearn import metrics as skm

import metakeras
from metakeras.evaluation import (
    CLASSIFICATION_METRICS,
    EpisodeResults,
    ModelComparison,
    collect_episodes,
    compare_models,
    confidence_interval,
    evaluate_episodes,
    paired_difference,
    summarize,
)
from metakeras.tasks import SinusoidTasks

# ------------------------------------------------------------------ helpers


def indexed_episodes(tasks, ways=3, shots=2, queries=4, seed=0, regression=False):
    """Episodes whose first support feature is the episode's index.

    Fake models look their prepared predictions up by that index, so they
    answer the same for an episode however the episodes are batched.
    """
    rng = np.random.default_rng(seed)
    support_x = rng.normal(size=(tasks, ways * shots, 2)).astype("float32")
    support_x[:, 0, 0] = np.arange(tasks)
    query_x = rng.normal(size=(tasks, ways * queries, 2)).astype("float32")
    if regression:
        support_y = rng.normal(size=(tasks, ways * shots, 1)).astype("float32")
        query_y = rng.normal(size=(tasks, ways * queries, 1)).astype("float32")
    else:
        support_y = np.tile(np.arange(ways), (tasks, shots)).astype("int64")
        query_y = np.stack(
            [rng.permutation(np.tile(np.arange(ways), queries)) for _ in range(tasks)]
        ).astype("int64")
    return {
        "support_x": support_x,
        "support_y": support_y,
        "query_x": query_x,
        "query_y": query_y,
    }


class PreparedModel:
    """A fake meta-model answering with prepared per-episode predictions.

    `predictions` maps an inner-step setting to an array `(episodes, queries,
    outputs)`; `inner_steps=None` models an algorithm without an inner loop
    (ProtoNet-like), whose predictions are under the key `None`.
    """

    def __init__(self, predictions, inner_steps=None, name="prepared"):
        self.predictions = predictions
        self.name = name
        self.calls = []
        if inner_steps is not None:
            self.inner = metakeras.InnerLoop(steps=inner_steps)

    def adapt_and_predict(self, support_x, support_y, query_x, steps=None, **kwargs):
        ids = np.asarray(support_x)[:, 0, 0].astype(int)
        self.calls.append((steps, np.array(support_x), np.array(query_x)))
        key = steps if steps is not None else getattr(self, "inner", None)
        key = key.steps if isinstance(key, metakeras.InnerLoop) else key
        return self.predictions[key][ids]


class BernoulliModel:
    """Predicts each query label correctly with probability `p`.

    Per-episode accuracy is then Binomial(queries, p) / queries, with standard
    deviation sqrt(p (1 - p) / queries): a known distribution for CI checks.
    """

    name = "bernoulli"

    def __init__(self, p, ways):
        self.p = p
        self.ways = ways

    def adapt_and_predict(self, support_x, support_y, query_x, steps=None, **kwargs):
        ids = np.asarray(support_x)[:, 0, 0].astype(int)
        shape = np.shape(query_x)[:2]
        out = np.zeros(shape + (self.ways,), dtype="float32")
        for row, episode in enumerate(ids):
            rng = np.random.default_rng([7, episode])
            correct = rng.random(shape[1]) < self.p
            wrong = rng.integers(1, self.ways, size=shape[1])
            labels = np.arange(shape[1]) % self.ways
            predicted = np.where(correct, labels, (labels + wrong) % self.ways)
            out[row, np.arange(shape[1]), predicted] = 1.0
        return out


def labelled_by_position(tasks, ways, queries):
    episodes = indexed_episodes(tasks, ways=ways, shots=1, queries=queries)
    episodes["query_y"] = np.tile(np.arange(ways * queries) % ways, (tasks, 1))
    return episodes


class EpisodeSource(keras.utils.PyDataset):
    """A PyDataset of indexed episodes with original class ids.

    Each pass draws new episodes when `resample` is true, like a TaskSampler.
    """

    def __init__(self, batches=2, tasks=3, ways=3, resample=True, seed=0):
        super().__init__()
        self.batches = batches
        self.tasks = tasks
        self.ways = ways
        self.resample = resample
        self.seed = seed
        self.epoch = 0

    def __len__(self):
        return self.batches

    def __getitem__(self, index):
        rng = np.random.default_rng([self.seed, self.epoch, index])
        batch = indexed_episodes(
            self.tasks, ways=self.ways, seed=int(rng.integers(1e6))
        )
        first = (self.epoch * self.batches + index) * self.tasks
        batch["support_x"][:, 0, 0] = first + np.arange(self.tasks)
        batch["classes"] = np.stack(
            [rng.choice(50, self.ways, replace=False) for _ in range(self.tasks)]
        ).astype("int64")
        return batch

    def on_epoch_end(self):
        if self.resample:
            self.epoch += 1


def functional_classifier():
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.Dense(3)(hidden))


def trained_classifier(inner_steps=2, **kwargs):
    model = metakeras.MAML(
        functional_classifier(),
        inner_learning_rate=0.5,
        inner_steps=inner_steps,
        vectorize_tasks=True,
        **kwargs,
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(
        classification_episodes(tasks=32, seed=1), batch_size=8, epochs=3, verbose=0
    )
    return model


def trained_regressor(inner_steps=2):
    model = metakeras.MAML(
        mlp(hidden=16, activation="relu"), inner_steps=inner_steps, vectorize_tasks=True
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse", metrics=["mae"])
    model.fit(
        SinusoidTasks(shots=5, queries=5, meta_batch_size=4, steps=5, seed=0),
        epochs=1,
        verbose=0,
    )
    return model


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


# --------------------------------------------------------------- real MAML


def test_maml_classification_metrics_match_sklearn_and_model_evaluate():
    model = trained_classifier(inner_steps=2)
    test = classification_episodes(tasks=12, seed=4)
    results = evaluate_episodes(model, test, episodes=None, steps=2, batch_size=5)

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
        model, tasks, episodes=None, steps=2, metrics=["mse", "mae", "loss"]
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
            test["support_x"], test["support_y"], test["query_x"], steps=steps
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
    single = evaluate_episodes(model, test, episodes=None, steps=1)
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
    with pytest.raises(ValueError, match=r"`steps` applies to models with an inner"):
        evaluate_episodes(model, episodes, episodes=None, steps=3)


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


# ------------------------------------------------------ confidence intervals


def test_confidence_interval_shrinks_as_one_over_sqrt_episodes():
    p, ways, queries = 0.7, 5, 4
    # Each episode has ways * queries = 20 query examples.
    sigma = np.sqrt(p * (1 - p) / (ways * queries))
    source = labelled_by_position(1600, ways, queries)
    model = BernoulliModel(p, ways)
    widths = {}
    for n in (100, 400, 1600):
        results = evaluate_episodes(model, source, episodes=n, metrics=["accuracy"])
        mean, half = results.mean("accuracy")
        widths[n] = half
        # The half-width is 1.96 * sigma / sqrt(n) for the known sigma ...
        assert half * np.sqrt(n) == pytest.approx(1.96 * sigma, rel=0.15)
        assert abs(mean - p) < 3 * sigma / np.sqrt(n)
    # ... so quadrupling the episodes halves it.
    assert widths[100] / widths[400] == pytest.approx(2.0, rel=0.15)
    assert widths[100] / widths[1600] == pytest.approx(4.0, rel=0.15)


def test_statistics_helpers():
    mean, half = confidence_interval([0.5, 0.7, 0.6])
    assert mean == pytest.approx(0.6)
    assert half == pytest.approx(1.96 * 0.1 / np.sqrt(3))
    mean, half = paired_difference([0.9, 0.8, 0.7], [0.8, 0.7, 0.7])
    assert mean == pytest.approx(0.2 / 3)
    assert half == pytest.approx(1.96 * np.std([0.1, 0.1, 0.0], ddof=1) / np.sqrt(3))
    with pytest.raises(ValueError, match="same episodes"):
        paired_difference([1.0, 2.0], [1.0])
    frame = pd.DataFrame({"model": ["a", "a", "b", "b"], "acc": [0.5, 0.7, 0.8, 1.0]})
    summary = summarize(frame, by="model")
    assert list(summary.columns) == [
        "model",
        "metric",
        "mean",
        "std",
        "ci95",
        "episodes",
    ]
    assert summary["mean"].tolist() == pytest.approx([0.6, 0.9])


# ------------------------------------------------------------ task sources


def test_pydataset_classes_are_recorded_and_passes_resample():
    source = EpisodeSource(batches=2, tasks=3)
    results = evaluate_episodes(
        PreparedModel(
            {None: np.random.default_rng(7).dirichlet(np.ones(3), size=(40, 12))}
        ),
        source,
        episodes=10,
        metrics=["accuracy"],
    )
    frame = results.per_episode
    assert list(frame.columns) == ["episode", "classes", "accuracy"]
    # 10 episodes need a second pass over the 2 x 3 tasks: on_epoch_end drew it.
    assert source.epoch == 1
    fresh = EpisodeSource(batches=2, tasks=3)
    expected = [fresh[0]["classes"], fresh[1]["classes"]]
    fresh.on_epoch_end()
    expected = np.concatenate(expected + [fresh[0]["classes"], fresh[1]["classes"][:1]])
    assert frame["classes"].tolist() == [tuple(c) for c in expected]
    # The same seed gives the same episodes.
    again = collect_episodes(EpisodeSource(batches=2, tasks=3), episodes=10)
    np.testing.assert_array_equal(again["classes"], expected)
    assert again["support_x"].shape == (10, 6, 2)
    assert again["support_x"][:, 0, 0].tolist() == list(range(10))


def test_task_sampler_classes_and_agreement_with_model_evaluate():
    task_sampler = getattr(metakeras.tasks, "TaskSampler", None)
    if task_sampler is None:
        pytest.skip("metakeras.tasks.TaskSampler is not available")
    rng = np.random.default_rng(12)
    centers = rng.normal(size=(8, 4)) * 3
    y = np.repeat(np.arange(8), 10)
    x = (centers[y] + rng.normal(size=(80, 4))).astype("float32")

    def sampler():
        return task_sampler(
            x, y, ways=3, shots=2, queries=3, meta_batch_size=4, steps=2, seed=0
        )

    model = trained_classifier(inner_steps=1)
    results = evaluate_episodes(model, sampler(), episodes=8, steps=1)
    expected = np.concatenate([sampler()[0]["classes"], sampler()[1]["classes"]])
    assert results.per_episode["classes"].tolist() == [tuple(c) for c in expected]
    # One pass (2 batches x 4 tasks) is what model.evaluate scores too.
    fixed = task_sampler(
        x,
        y,
        ways=3,
        shots=2,
        queries=3,
        meta_batch_size=4,
        steps=2,
        seed=0,
        resample=False,
    )
    logs = model.evaluate(fixed, verbose=0, return_dict=True)
    assert results.mean("accuracy")[0] == pytest.approx(logs["accuracy"], abs=1e-6)
    assert results.mean("log_loss")[0] == pytest.approx(logs["loss"], rel=1e-4)


def test_sources_that_cannot_provide_enough_episodes():
    fixed = EpisodeSource(batches=2, tasks=3, resample=False)
    model = PreparedModel({None: np.zeros((10, 12, 3))})
    with pytest.raises(ValueError, match=r"same 6 episodes on every pass.*episodes<=6"):
        evaluate_episodes(model, fixed, episodes=7)
    assert evaluate_episodes(model, fixed, episodes=6).episodes == 6
    episodes = indexed_episodes(4)
    with pytest.raises(ValueError, match=r"holds 4 episodes, fewer than episodes=5"):
        evaluate_episodes(model, episodes, episodes=5)
    with pytest.raises(ValueError, match=r"`tasks` must be a keras.utils.PyDataset"):
        evaluate_episodes(model, [1, 2, 3], episodes=5)
    with pytest.raises(ValueError, match=r"missing key\(s\) \['query_y'\]"):
        evaluate_episodes(model, {k: v for k, v in episodes.items() if k != "query_y"})


def test_collected_episodes_give_the_same_results_as_the_source():
    model = trained_regressor(inner_steps=1)

    def source():
        return SinusoidTasks(shots=5, queries=5, meta_batch_size=4, steps=2, seed=3)

    from_source = evaluate_episodes(model, source(), episodes=10)
    frozen = collect_episodes(source(), episodes=10)
    assert frozen["support_x"].shape == (10, 5, 1)
    from_arrays = evaluate_episodes(model, frozen, episodes=10)
    pd.testing.assert_frame_equal(from_source.per_episode, from_arrays.per_episode)


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
    learner = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dropout(0.5),
            keras.layers.Dense(3),
        ]
    )
    model = metakeras.MAML(learner, inner_learning_rate=0.5, inner_steps=2)
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    test = classification_episodes(tasks=4, seed=6)
    model.train_on_batch(test)
    comparison = compare_models(
        {"first": model, "second": model}, test, episodes=None, steps=2, seed=3
    )
    assert (comparison.differences["difference"] == 0).all()
    assert (comparison.differences["ci95"] == 0).all()
    unseeded = evaluate_episodes(model, test, episodes=None, steps=2)
    seeded = evaluate_episodes(model, test, episodes=None, steps=2, seed=3)
    pd.testing.assert_frame_equal(
        seeded.per_episode, comparison.results["first"].per_episode
    )
    assert not unseeded.per_episode.equals(seeded.per_episode)


# -------------------------------------------------------------- bad input


@pytest.mark.parametrize("episodes", [0, -3, 2.5, True, "600"])
def test_invalid_episodes(episodes):
    model = PreparedModel({None: np.zeros((4, 12, 3))})
    with pytest.raises(ValueError, match=r"`episodes` must be a positive integer"):
        evaluate_episodes(model, indexed_episodes(4), episodes=episodes)


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
        untrained, episodes, episodes=None, steps=1, allow_untrained=True
    )
    assert results.episodes == 4


@pytest.mark.parametrize("steps", [-1, 1.5, "3", []])
def test_invalid_steps(steps):
    model = PreparedModel({0: np.zeros((4, 12, 3))}, inner_steps=1)
    with pytest.raises(ValueError, match=r"`steps` must be None, a non-negative"):
        evaluate_episodes(model, indexed_episodes(4), episodes=None, steps=steps)


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


# ---------------------------------------------------------------- exports


def test_csv_and_markdown_exports(tmp_path):
    episodes = indexed_episodes(5, ways=3, queries=2)
    rng = np.random.default_rng(9)
    predictions = {s: rng.dirichlet(np.ones(3), size=(5, 6)) for s in range(3)}
    results = evaluate_episodes(
        PreparedModel(predictions, inner_steps=2),
        episodes,
        episodes=None,
        metrics=["accuracy", "f1"],
    )
    assert isinstance(results, EpisodeResults)
    assert "EpisodeResults 'prepared'" in repr(results)

    path = results.to_csv(tmp_path / "summary.csv")
    pd.testing.assert_frame_equal(pd.read_csv(path), results.summary, check_dtype=False)
    per_episode = pd.read_csv(results.to_csv(tmp_path / "per.csv", "per_episode"))
    assert len(per_episode) == 15
    adaptation = pd.read_csv(results.to_csv(tmp_path / "adapt.csv", "adaptation"))
    assert adaptation["steps"].tolist() == [0, 1, 2]

    text = results.to_markdown(tmp_path / "summary.md")
    lines = text.strip().splitlines()
    assert lines[0] == "| steps | metric | mean | std | ci95 | episodes |"
    assert lines[1] == "|---:|:---|---:|---:|---:|---:|"
    assert len(lines) == 2 + len(results.summary)
    first = results.summary.iloc[0]
    assert lines[2] == (
        f"| 0 | accuracy | {first['mean']:.4f} | {first['std']:.4f} | "
        f"{first['ci95']:.4f} | 5 |"
    )
    assert (tmp_path / "summary.md").read_text(encoding="utf-8") == text
    with pytest.raises(ValueError, match=r"Unknown table 'totals'. Valid names"):
        results.to_csv(tmp_path / "x.csv", which="totals")
    # Atomic writes leave no temporary files behind.
    assert sorted(os.listdir(tmp_path)) == [
        "adapt.csv",
        "per.csv",
        "summary.csv",
        "summary.md",
    ]


def test_comparison_exports(tmp_path):
    rng = np.random.default_rng(10)
    episodes = indexed_episodes(6, regression=True, queries=2)
    models = {
        "small": PreparedModel({None: rng.normal(size=(6, 6, 1))}),
        "large": PreparedModel({None: rng.normal(size=(6, 6, 1))}),
    }
    comparison = compare_models(models, episodes, episodes=None, baseline="large")
    text = comparison.to_markdown(which="differences")
    assert text.splitlines()[0] == (
        "| model | baseline | metric | difference | std | ci95 | episodes | "
        "significant |"
    )
    assert "| small | large | mse |" in text
    frame = pd.read_csv(comparison.to_csv(tmp_path / "per.csv", "per_episode"))
    assert list(frame.columns) == ["model", "episode", "mse", "mae", "r2"]
    assert len(frame) == 12
    summary = pd.read_csv(comparison.to_csv(tmp_path / "summary.csv"))
    assert summary["model"].tolist() == ["small"] * 3 + ["large"] * 3


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
    with pytest.raises(ValueError, match=r"`verbose` must be one of \['auto', 0, 1"):
        evaluate_episodes(model, episodes, episodes=12, verbose=3)
