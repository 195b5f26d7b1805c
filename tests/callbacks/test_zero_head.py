"""metakeras.callbacks.ZeroHead: the zeroing trick for MAML heads."""

import keras
import numpy as np
import pytest
from conftest import LOSS, WAYS, dense_learner, informative_episodes

import metakeras


def test_head_is_zero_after_every_step_and_one_step_makes_prototypes():
    model = metakeras.MAML(dense_learner(hidden=8), inner_learning_rate=0.5)
    model.compile(optimizer="adam", loss=LOSS)
    seen = []

    class Probe(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(np.abs(model.learner.get_layer("head").get_weights()[0]).max())

    model.fit(
        informative_episodes(tasks=8, seed=1),
        batch_size=4,
        epochs=2,
        verbose=0,
        callbacks=[metakeras.callbacks.ZeroHead(), Probe()],
    )
    assert seen == [0.0] * 4  # ZeroHead runs first, Probe sees its result
    body = model.learner.get_layer("body").get_weights()
    assert not np.allclose(
        body[0], dense_learner(hidden=8).get_layer("body").get_weights()[0]
    )
    # One inner step from the zero head: column k = lr / n * (c_k - mean).
    episodes = informative_episodes(tasks=1, seed=2)
    sx, sy = episodes["support_x"][0], episodes["support_y"][0]
    adapted = model.adapt(sx, sy, inner_steps=1)
    features = np.maximum(sx @ body[0] + body[1], 0.0)
    centers = np.stack([features[sy == k].mean(0) for k in range(WAYS)])
    expected = 0.5 / WAYS * (centers - features.mean(0)).T
    kernel, bias = adapted.get_layer("head").get_weights()
    np.testing.assert_allclose(kernel, expected, atol=1e-5)
    np.testing.assert_allclose(bias, 0.0, atol=1e-6)


def test_head_is_zero_after_an_optimizer_writes_its_weight_averages():
    model = metakeras.MAML(dense_learner(hidden=8), inner_learning_rate=0.5)
    model.compile(optimizer=keras.optimizers.Adam(use_ema=True), loss=LOSS)
    model.fit(
        informative_episodes(tasks=8, seed=1),
        batch_size=4,
        verbose=0,
        callbacks=[metakeras.callbacks.ZeroHead()],
    )
    assert not any(np.any(w) for w in model.learner.get_layer("head").get_weights())
    body = model.learner.get_layer("body").trainable_variables[0]
    average = model.optimizer._model_variables_moving_average[
        model.optimizer._get_variable_index(body)
    ]
    np.testing.assert_array_equal(body.numpy(), average.numpy())


def test_named_layer_config_and_errors():
    callback = metakeras.callbacks.ZeroHead(layer="head")
    assert metakeras.callbacks.ZeroHead(**callback.get_config()).layer == "head"
    model = metakeras.MAML(dense_learner(hidden=8), inner_learning_rate=0.5)
    model.compile(optimizer="adam", loss=LOSS)
    with pytest.raises(ValueError, match="is not a layer of the learner"):
        model.fit(
            informative_episodes(tasks=2, seed=3),
            batch_size=2,
            verbose=0,
            callbacks=[metakeras.callbacks.ZeroHead(layer="nope")],
        )
    with pytest.raises(ValueError, match="`layer` must be None or a layer name"):
        metakeras.callbacks.ZeroHead(layer=3)
    plain = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    plain.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match="works on metakeras models"):
        plain.fit(
            np.zeros((4, 2)),
            np.zeros((4, 1)),
            verbose=0,
            callbacks=[metakeras.callbacks.ZeroHead()],
        )
