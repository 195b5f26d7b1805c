import keras
import numpy as np
import pytest
import torch

import metakeras
from metakeras.layers import BatchNormalization


def small_net(batch_norm, axis=1, shape=(2, 6, 6)):
    keras.utils.set_random_seed(0)
    fmt = "channels_first" if axis == 1 else "channels_last"
    return keras.Sequential(
        [
            keras.Input(shape),
            keras.layers.Conv2D(4, 3, padding="same", data_format=fmt),
            batch_norm(axis=axis, momentum=0.9),
            keras.layers.ReLU(),
            keras.layers.Flatten(),
            keras.layers.Dense(3),
        ]
    )


def episodes():
    rng = np.random.default_rng(0)
    return {
        "support_x": rng.normal(size=(3, 6, 2, 6, 6)).astype("float32"),
        "support_y": np.tile(np.arange(3), (3, 2)),
        "query_x": rng.normal(size=(3, 9, 2, 6, 6)).astype("float32"),
        "query_y": np.tile(np.arange(3), (3, 3)),
    }


def meta_step(batch_norm, vectorize=False):
    model = metakeras.MAML(
        small_net(batch_norm),
        inner_steps=2,
        inner_learning_rate=0.3,
        vectorize_tasks=vectorize,
    )
    model.compile(
        optimizer=keras.optimizers.SGD(1.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    before = model.learner.get_weights()
    model.train_on_batch(episodes())
    after = model.learner.get_weights()
    return before, after, model


@pytest.mark.parametrize("vectorize", [False, True])
def test_fused_layer_matches_keras_batch_normalization_in_maml(vectorize):
    before, keras_after, keras_model = meta_step(keras.layers.BatchNormalization)
    _, fused_after, fused_model = meta_step(BatchNormalization, vectorize)
    for a, b, w in zip(keras_after, fused_after, before):
        # moving statistics and the second-order meta-gradient (w - after) agree
        np.testing.assert_allclose(w - a, w - b, rtol=1e-3, atol=1e-5)
    episode = episodes()
    np.testing.assert_allclose(
        keras_model.adapt_and_predict(
            episode["support_x"], episode["support_y"], episode["query_x"]
        ),
        fused_model.adapt_and_predict(
            episode["support_x"], episode["support_y"], episode["query_x"]
        ),
        rtol=1e-4,
        atol=1e-4,
    )


def test_inference_uses_moving_statistics_and_config_round_trips(tmp_path):
    layer = BatchNormalization(axis=1, epsilon=1e-3)
    x = torch.randn(8, 3, 4, 4) * 2 + 1
    reference = keras.layers.BatchNormalization(axis=1, epsilon=1e-3)
    layer.build(x.shape)
    reference.build(x.shape)
    for _ in range(3):
        layer(x, training=True)
        reference(x, training=True)
    for a, b in zip(layer.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(layer(x, training=False)),
        keras.ops.convert_to_numpy(reference(x, training=False)),
        rtol=1e-5,
        atol=1e-5,
    )
    model = keras.Sequential([keras.Input((3, 4, 4)), layer])
    model.save(tmp_path / "bn.keras")
    loaded = keras.models.load_model(tmp_path / "bn.keras")
    assert isinstance(loaded.layers[0], BatchNormalization)


def test_other_layouts_fall_back_to_keras():
    layer = BatchNormalization(axis=-1)
    x = torch.randn(4, 5, 5, 3)
    reference = keras.layers.BatchNormalization(axis=-1)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(layer(x, training=True)),
        keras.ops.convert_to_numpy(reference(x, training=True)),
        rtol=1e-5,
        atol=1e-5,
    )
