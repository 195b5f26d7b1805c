"""The MAML family, ProtoNet and Reptile on a synthetic few-shot family."""

import keras
import numpy as np
import pytest
from conftest import (
    FEATURES,
    LOSS,
    SHOTS,
    WAYS,
    dense_learner,
    informative_episodes,
)

import metakeras

ALGORITHMS = {
    "maml": lambda learner: metakeras.MAML(
        learner, inner_steps=2, inner_learning_rate=0.3, vectorize_tasks=True
    ),
    "fomaml": lambda learner: metakeras.MAML(
        learner,
        inner_steps=2,
        inner_learning_rate=0.3,
        first_order=True,
        vectorize_tasks=True,
    ),
    "metasgd": lambda learner: metakeras.MetaSGD(
        learner, inner_steps=1, inner_learning_rate=0.3, vectorize_tasks=True
    ),
    "anil": lambda learner: metakeras.ANIL(
        learner, inner_steps=3, inner_learning_rate=0.5, vectorize_tasks=True
    ),
    "reptile": lambda learner: metakeras.Reptile(
        learner, inner_steps=5, inner_learning_rate=0.1, vectorize_tasks=True
    ),
    "protonet": lambda learner: metakeras.ProtoNet(learner, vectorize_tasks=True),
}


def build(name, seed=0):
    outputs = 8 if name == "protonet" else WAYS
    model = ALGORITHMS[name](dense_learner(outputs, seed))
    optimizer = (
        keras.optimizers.SGD(0.5) if name == "reptile" else keras.optimizers.Adam(3e-3)
    )
    model.compile(optimizer=optimizer, loss=LOSS, metrics=["accuracy"])
    return model


def accuracy(model, episodes):
    logits = model.adapt_and_predict(
        episodes["support_x"], episodes["support_y"], episodes["query_x"]
    )
    return float((logits.argmax(-1) == episodes["query_y"]).mean())


@pytest.mark.parametrize("name", sorted(set(ALGORITHMS) - {"reptile"}))
def test_meta_learning_beats_the_untrained_learner_after_adaptation(name):
    train = informative_episodes(tasks=256, seed=1)
    test = informative_episodes(tasks=200, seed=2)
    baseline = accuracy(build(name), test)
    model = build(name)
    model.fit(train, batch_size=16, epochs=8, verbose=0)
    meta = accuracy(model, test)
    assert meta > baseline + 0.1, (meta, baseline)
    # model.evaluate reports the same query accuracy
    logs = model.evaluate(test, batch_size=50, verbose=0, return_dict=True)
    assert logs["accuracy"] == pytest.approx(meta, abs=1e-6)


def test_reptile_beats_the_untrained_learner_on_sinusoids():
    # Reptile's signal is weaker per step than MAML's; the sinusoid family
    # (the Reptile paper's own regression benchmark) shows it in a few seconds.
    from metakeras.demo import sinusoid_learner
    from metakeras.tasks import SinusoidTasks

    keras.utils.set_random_seed(0)
    model = metakeras.Reptile(
        sinusoid_learner(),
        inner_steps=10,
        inner_learning_rate=0.02,
        vectorize_tasks=True,
    )
    model.compile(optimizer=keras.optimizers.SGD(1.0), loss="mse")
    test = SinusoidTasks(
        shots=10, queries=50, meta_batch_size=200, steps=1, seed=99, resample=False
    ).as_episodes()

    def mse():
        predictions = model.adapt_and_predict(
            test["support_x"], test["support_y"], test["query_x"], batch_size=200
        )
        return float(((predictions - test["query_y"]) ** 2).mean())

    untrained = mse()
    model.fit(SinusoidTasks(shots=10, meta_batch_size=10, steps=120, seed=0), verbose=0)
    assert mse() < 0.6 * untrained


def test_anil_adapts_only_the_head():
    model = build("anil")
    assert model._adapt_mask() == [False, False, True, True]
    assert model.adapt_layers == ["head"]
    episodes = informative_episodes(tasks=1, seed=3)
    adapted = model.adapt(episodes["support_x"][0], episodes["support_y"][0])
    for layer_name, changed in (("body", False), ("head", True)):
        before = model.learner.get_layer(layer_name).get_weights()
        after = adapted.get_layer(layer_name).get_weights()
        same = all(np.array_equal(a, b) for a, b in zip(before, after))
        assert same != changed
    with pytest.raises(ValueError, match=r"unknown layer\(s\) \['nope'\]"):
        m = metakeras.MAML(dense_learner(), adapt_layers=["nope"])
        m.compile(loss=LOSS)
        m.adapt(episodes["support_x"][0], episodes["support_y"][0])


def test_meta_sgd_rates_receive_gradients_and_change():
    model = build("metasgd")
    assert len(model.inner_rates) == len(model.learner.trainable_variables)
    before = [keras.ops.convert_to_numpy(r).copy() for r in model.inner_rates]
    np.testing.assert_allclose(before[0], 0.3)
    model.train_on_batch(informative_episodes(tasks=8, seed=4))
    after = [keras.ops.convert_to_numpy(r) for r in model.inner_rates]
    for b, a in zip(before, after):
        assert not np.allclose(a, b)
    assert len(model.trainable_variables) == 2 * len(model.learner.trainable_variables)


def test_protonet_predicts_the_nearest_prototype():
    model = build("protonet")
    model.fit(
        informative_episodes(tasks=32, seed=5), batch_size=16, epochs=1, verbose=0
    )
    episodes = informative_episodes(tasks=1, seed=6)
    sx, sy, qx = (
        episodes["support_x"][0],
        episodes["support_y"][0],
        episodes["query_x"][0],
    )
    support = model.learner.predict(sx, verbose=0)
    query = model.learner.predict(qx, verbose=0)
    prototypes = np.stack([support[sy == c].mean(0) for c in range(WAYS)])
    distances = ((query[:, None] - prototypes[None]) ** 2).sum(-1)
    expected = distances.argmin(-1)
    classifier = model.adapt(sx, sy)
    logits = classifier.predict(qx, verbose=0)
    np.testing.assert_allclose(logits, -distances, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(logits.argmax(-1), expected)
    batched = model.adapt_and_predict(sx[None], sy[None], qx[None])[0]
    np.testing.assert_allclose(batched, logits, rtol=1e-4, atol=1e-4)


def test_protonet_cosine_distance_and_errors():
    model = metakeras.ProtoNet(dense_learner(8), distance="cosine")
    model.compile(loss=LOSS)
    assert model._scale == 10.0
    episodes = informative_episodes(tasks=1, seed=7)
    logits = model.adapt(episodes["support_x"][0], episodes["support_y"][0]).predict(
        episodes["query_x"][0], verbose=0
    )
    assert np.all(np.abs(logits) <= 10.0 + 1e-4)
    with pytest.raises(ValueError, match="`distance` must be one of"):
        metakeras.ProtoNet(dense_learner(8), distance="manhattan")
    with pytest.raises(ValueError, match="`inner_steps` must be None"):
        model.adapt(episodes["support_x"][0], episodes["support_y"][0], inner_steps=3)
    missing = dict(episodes)
    missing["support_y"] = np.zeros_like(episodes["support_y"])
    missing["support_y"][0, 0] = 2
    with pytest.raises(ValueError, match="every label 0..2"):
        model.train_on_batch(missing)


def test_mini_batch_inner_sgd_with_the_whole_support_matches_full_batch():
    episodes = informative_episodes(tasks=4, seed=8)
    weights = []
    for batch_size in (None, WAYS * SHOTS):
        model = metakeras.MAML(
            dense_learner(),
            inner_steps=3,
            inner_learning_rate=0.3,
            inner_batch_size=batch_size,
        )
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss=LOSS)
        model.train_on_batch(episodes)
        weights.append(model.learner.get_weights())
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, atol=1e-6)
    model = metakeras.MAML(
        dense_learner(), inner_steps=3, inner_learning_rate=0.3, inner_batch_size=2
    )
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=LOSS)
    model.train_on_batch(episodes)
    assert not all(
        np.allclose(a, b) for a, b in zip(weights[0], model.learner.get_weights())
    )


def test_reptile_update_moves_towards_the_adapted_weights():
    model = metakeras.Reptile(dense_learner(), inner_steps=3, inner_learning_rate=0.2)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.5), loss=LOSS)
    episodes = informative_episodes(tasks=3, seed=9)
    start = model.learner.get_weights()
    adapted = [
        model.adapt(episodes["support_x"][t], episodes["support_y"][t]).get_weights()
        for t in range(3)
    ]
    model.train_on_batch(episodes)
    for i, w in enumerate(start):
        mean = np.mean([a[i] for a in adapted], axis=0)
        np.testing.assert_allclose(
            model.learner.get_weights()[i], w + 0.5 * (mean - w), atol=1e-5
        )


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_every_algorithm_round_trips_through_keras_files(name, tmp_path):
    model = build(name)
    train = informative_episodes(tasks=16, seed=10)
    model.fit(train, batch_size=8, epochs=1, verbose=0)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is type(model)
    config, loaded_config = model.get_config(), loaded.get_config()
    config.pop("learner"), loaded_config.pop("learner")
    assert loaded_config == config
    test = informative_episodes(tasks=4, seed=11)
    np.testing.assert_allclose(
        loaded.adapt_and_predict(test["support_x"], test["support_y"], test["query_x"]),
        model.adapt_and_predict(test["support_x"], test["support_y"], test["query_x"]),
        atol=1e-5,
    )
    adapted = model.adapt(test["support_x"][0], test["support_y"][0])
    adapted_path = tmp_path / f"{name}_adapted.keras"
    adapted.save(adapted_path)
    reloaded = keras.models.load_model(adapted_path)
    np.testing.assert_allclose(
        reloaded.predict(test["query_x"][0], verbose=0),
        adapted.predict(test["query_x"][0], verbose=0),
        atol=1e-5,
    )


def test_transductive_eval_uses_query_batch_statistics():
    learner = bn_learner()
    episodes = informative_episodes(tasks=2, seed=12)
    outputs = []
    for transductive in (False, True):
        model = metakeras.MAML(
            learner, inner_learning_rate=0.1, transductive_eval=transductive
        )
        model.compile(loss=LOSS)
        outputs.append(
            model.adapt_and_predict(
                episodes["support_x"], episodes["support_y"], episodes["query_x"]
            )
        )
    assert not np.allclose(outputs[0], outputs[1])
    # With batch statistics, each task's query set is normalised by itself:
    # predictions of one query example depend on the other queries.
    model.compile(loss=LOSS)
    shifted = dict(episodes)
    shifted["query_x"] = episodes["query_x"].copy()
    shifted["query_x"][:, 1:] += 5.0
    moved = model.adapt_and_predict(
        shifted["support_x"], shifted["support_y"], shifted["query_x"]
    )
    assert not np.allclose(moved[:, 0], outputs[1][:, 0])


def test_conv4_layout_and_shapes():
    embedding = metakeras.models.conv4()
    assert embedding.output_shape == (None, 64)
    assert embedding.layers[0].data_format == "channels_first"
    head = metakeras.models.conv4(input_shape=(3, 84, 84), outputs=5, filters=32)
    assert head.output_shape == (None, 5)
    assert head.count_params() > 0
    last = metakeras.models.conv4(input_shape=(28, 28, 1), data_format="channels_last")
    assert last.output_shape == (None, 64)
    with pytest.raises(ValueError, match="`data_format`"):
        metakeras.models.conv4(data_format="nchw")
    with pytest.raises(ValueError, match="`input_shape`"):
        metakeras.models.conv4(input_shape=(28, 28))
    with pytest.raises(
        ValueError, match=r"at least 16; received input_shape=\(1, 8, 8\)"
    ):
        metakeras.models.conv4(input_shape=(1, 8, 8))
    with pytest.raises(
        ValueError, match=r"input_shape=\(12, 28, 3\) \(channels_last\)"
    ):
        metakeras.models.conv4(input_shape=(12, 28, 3), data_format="channels_last")
    assert metakeras.models.conv4(input_shape=(1, 16, 16)).output_shape == (None, 64)


def test_conv4_without_its_final_relu_keeps_the_pooled_normalised_values():
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(8, 1, 16, 16)).astype("float32")
    with_relu = metakeras.models.conv4(input_shape=(1, 16, 16))
    without = metakeras.models.conv4(input_shape=(1, 16, 16), final_relu=False)
    assert "relu3" not in [layer.name for layer in without.layers]
    without.set_weights(with_relu.get_weights())
    raw = keras.ops.convert_to_numpy(without(x, training=True))
    np.testing.assert_allclose(
        np.maximum(raw, 0),
        keras.ops.convert_to_numpy(with_relu(x, training=True)),
        rtol=1e-6,
        atol=1e-6,
    )
    assert (raw < 0).any()
    with pytest.raises(ValueError, match="`final_relu` must be True or False"):
        metakeras.models.conv4(final_relu="no")


def bn_learner(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((FEATURES,)),
            keras.layers.Dense(8, name="body"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.Dense(WAYS, name="head"),
        ]
    )


def test_per_step_bn_statistics_match_hand_computed_updates():
    model = metakeras.MAML(
        bn_learner(),
        inner_steps=2,
        inner_learning_rate=0.1,
        per_step_bn_statistics=True,
    )
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss=LOSS)
    assert [tuple(v.shape) for v in model.step_statistics] == [(3, 8), (3, 8)]
    episodes = informative_episodes(tasks=3, seed=21)
    kernel, bias = (
        keras.ops.convert_to_numpy(w) for w in model.learner.get_layer("body").weights
    )
    model.train_on_batch(episodes)
    mean, variance = (keras.ops.convert_to_numpy(v) for v in model.step_statistics)
    # Slot 0: the support set's batch statistics at the meta-learned weights,
    # averaged over the tasks; the first update of a moving statistic takes
    # the batch's value (`warmed_up_average`).
    hidden = episodes["support_x"] @ kernel + bias
    # (float32: the update's rounding is scaled up by 1 / (1 - momentum).)
    np.testing.assert_allclose(
        mean[0], hidden.mean(axis=1).mean(axis=0), rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(
        variance[0], hidden.var(axis=1).mean(axis=0), rtol=1e-5, atol=1e-5
    )
    # Slot 1: after one inner step the body has moved, so do the statistics.
    assert not np.allclose(mean[1], mean[0])
    # The last slot follows the query pass, as the learner's own statistics do.
    bn = model.learner.get_layer("bn")
    np.testing.assert_allclose(
        mean[2], keras.ops.convert_to_numpy(bn.moving_mean), atol=1e-6
    )
    np.testing.assert_allclose(
        variance[2], keras.ops.convert_to_numpy(bn.moving_variance), atol=1e-6
    )


def test_moving_statistics_average_the_first_batches_then_follow_the_momentum():
    import torch

    from metakeras.models._trainer import warmed_up_average

    rng = np.random.default_rng(3)
    batches = rng.normal(size=(150, 4)).astype("float32")
    moving, warmed = np.ones(4, "float32"), torch.ones(4)
    for n, batch in enumerate(batches, start=1):
        keras_update = 0.99 * warmed + 0.01 * torch.from_numpy(batch)
        warmed = warmed_up_average(warmed, keras_update, 0.99, torch.tensor(n))
        # The running mean of the batches so far (the start forgotten) for
        # the first 100, then Keras's exponential average.
        moving = batches[:n].mean(0) if n <= 100 else 0.99 * moving + 0.01 * batch
        # float32: the update's rounding is scaled up by 1 / (1 - momentum).
        np.testing.assert_allclose(warmed.numpy(), moving, rtol=1e-4, atol=1e-4)

    # In a model: after one meta-batch the moving statistics are the query
    # passes' batch statistics (averaged over the tasks), not 1% of them.
    model = metakeras.MAML(bn_learner(), inner_steps=0)
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss=LOSS)
    episodes = informative_episodes(tasks=3, seed=24)
    kernel, bias = (
        keras.ops.convert_to_numpy(w) for w in model.learner.get_layer("body").weights
    )
    model.train_on_batch(episodes)
    hidden = episodes["query_x"] @ kernel + bias
    bn = model.learner.get_layer("bn")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(bn.moving_mean),
        hidden.mean(axis=1).mean(axis=0),
        rtol=1e-5,
        atol=1e-5,
    )
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(bn.moving_variance),
        hidden.var(axis=1).mean(axis=0),
        rtol=1e-5,
        atol=1e-5,
    )


def test_per_step_bn_statistics_choose_the_slot_at_evaluation():
    model = metakeras.MAML(
        bn_learner(),
        inner_steps=2,
        inner_learning_rate=0.1,
        per_step_bn_statistics=True,
    )
    model.compile(loss=LOSS)
    slots = np.arange(3, dtype="float32")[:, None] * np.ones((1, 8), "float32")
    model.step_statistics[0].assign(slots)
    episodes = informative_episodes(tasks=1, seed=22)
    sx, sy, qx = (
        episodes["support_x"][0],
        episodes["support_y"][0],
        episodes["query_x"][0],
    )
    for steps, slot in ((0, 0), (1, 1), (2, 2), (5, 2)):
        adapted = model.adapt(sx, sy, inner_steps=steps)
        moving = keras.ops.convert_to_numpy(adapted.get_layer("bn").moving_mean)
        np.testing.assert_allclose(moving, slot)
        np.testing.assert_allclose(
            model.adapt_and_predict(sx[None], sy[None], qx[None], inner_steps=steps)[0],
            adapted.predict(qx, verbose=0),
            atol=1e-5,
        )
    # Without the option the same weights give one set of statistics for all.
    plain = metakeras.MAML(bn_learner(), inner_steps=2, inner_learning_rate=0.1)
    assert plain.step_statistics == []


def test_per_step_bn_statistics_round_trip_and_errors(tmp_path):
    model = metakeras.MAML(
        metakeras.models.conv4(input_shape=(1, 16, 16), outputs=WAYS, filters=4),
        inner_steps=1,
        inner_learning_rate=0.1,
        per_step_bn_statistics=True,
    )
    model.compile(optimizer="adam", loss=LOSS)
    rng = np.random.default_rng(0)
    sx = rng.normal(size=(2, WAYS, 1, 16, 16)).astype("float32")
    sy = np.tile(np.arange(WAYS), (2, 1))
    model.train_on_batch(
        {"support_x": sx, "support_y": sy, "query_x": sx, "query_y": sy}
    )
    assert len(model.step_statistics) == 8  # 4 BN layers x (mean, variance)
    path = tmp_path / "maml.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.per_step_bn_statistics
    for a, b in zip(model.step_statistics, loaded.step_statistics):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b)
        )
    np.testing.assert_allclose(
        model.adapt_and_predict(sx, sy, sx),
        loaded.adapt_and_predict(sx, sy, sx),
        atol=1e-5,
    )
    with pytest.raises(ValueError, match="per_step_bn_statistics"):
        metakeras.MAML(dense_learner(), per_step_bn_statistics=True)
    with pytest.raises(ValueError, match="per_step_bn_statistics"):
        metakeras.MAML(bn_learner(), per_step_bn_statistics="yes")
    with pytest.raises(ValueError, match="per_step_bn_statistics"):
        metakeras.Reptile(bn_learner(), per_step_bn_statistics=True)


def test_per_step_bn_statistics_same_under_vectorize_tasks():
    episodes = informative_episodes(tasks=3, seed=4)
    results = []
    for vectorize in (False, True):
        model = metakeras.MAML(
            bn_learner(),
            inner_steps=2,
            inner_learning_rate=0.1,
            per_step_bn_statistics=True,
            vectorize_tasks=vectorize,
        )
        model.compile(optimizer="adam", loss=LOSS)
        model.train_on_batch(episodes)
        results.append(
            [
                keras.ops.convert_to_numpy(v)
                for v in model.step_statistics + model.learner.weights
            ]
        )
    for loop, vectorized in zip(*results):
        np.testing.assert_allclose(loop, vectorized, atol=1e-5)


def test_protonet_transductive_eval_uses_each_sets_batch_statistics(tmp_path):
    model = metakeras.ProtoNet(bn_learner(), transductive_eval=True)
    model.compile(loss=LOSS)
    episodes = informative_episodes(tasks=1, seed=23)
    sx, sy, qx = (episodes[k][0] for k in ("support_x", "support_y", "query_x"))
    body, head = (
        [keras.ops.convert_to_numpy(w) for w in model.learner.get_layer(n).weights]
        for n in ("body", "head")
    )
    gamma, beta = (
        keras.ops.convert_to_numpy(w) for w in model.learner.get_layer("bn").weights[:2]
    )

    def embed(x):  # BatchNormalization with the batch's own statistics
        h = x @ body[0] + body[1]
        h = gamma * (h - h.mean(0)) / np.sqrt(h.var(0) + 1e-3) + beta
        return h @ head[0] + head[1]

    support, query = embed(sx), embed(qx)
    prototypes = np.stack([support[sy == c].mean(0) for c in range(WAYS)])
    expected = -((query[:, None] - prototypes[None]) ** 2).sum(-1)
    logits = model.adapt_and_predict(sx[None], sy[None], qx[None])[0]
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-3)
    adapted = model.adapt(sx, sy)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(adapted.prototypes), prototypes, rtol=1e-4, atol=1e-4
    )
    model.transductive_eval = False
    assert not np.allclose(
        model.adapt_and_predict(sx[None], sy[None], qx[None])[0], logits
    )
    config = metakeras.ProtoNet(bn_learner(), transductive_eval=True).get_config()
    assert metakeras.ProtoNet.from_config(config).transductive_eval


def test_protonet_adapt_uses_one_mode_for_support_and_queries(tmp_path):
    model = metakeras.ProtoNet(bn_learner(), transductive_eval=True)
    model.compile(loss=LOSS)
    episodes = informative_episodes(tasks=1, seed=23)
    sx, sy, qx = (episodes[k][0] for k in ("support_x", "support_y", "query_x"))
    moving = [
        keras.ops.convert_to_numpy(v) for v in model.learner.non_trainable_variables
    ]
    for transductive in (True, False):
        model.transductive_eval = transductive
        episodic = model.adapt_and_predict(sx[None], sy[None], qx[None])[0]
        for chosen in (None, transductive):  # the model's setting, or per call
            classifier = model.adapt(sx, sy, transductive=chosen)
            assert classifier.batch_statistics is transductive
            np.testing.assert_allclose(
                classifier.predict(qx, verbose=0), episodic, rtol=1e-4, atol=1e-3
            )
    model.transductive_eval = False
    mixed = model.adapt(sx, sy, transductive=True)
    assert not np.allclose(mixed.predict(qx, verbose=0), episodic, atol=1e-3)
    for before, after in zip(moving, model.learner.non_trainable_variables):
        np.testing.assert_array_equal(before, keras.ops.convert_to_numpy(after))
    path = tmp_path / "classifier.keras"
    mixed.save(path)
    restored = keras.models.load_model(path)
    assert restored.batch_statistics
    np.testing.assert_allclose(
        restored.predict(qx, verbose=0), mixed.predict(qx, verbose=0), rtol=1e-5
    )
    with pytest.raises(ValueError, match="`transductive` must be True or False"):
        model.adapt(sx, sy, transductive="yes")
    with pytest.raises(ValueError, match="`transductive_eval` must be True or False"):
        metakeras.ProtoNet(bn_learner(), transductive_eval=1)
