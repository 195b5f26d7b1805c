"""ResNet-12 against a plain PyTorch implementation of the same network."""

import keras
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import random_episodes

import metakeras
from metakeras.models import resnet12


def reference(model, x, training):
    """The forward pass written with torch.nn.functional, from the Keras weights."""

    def weights(name):
        return [
            torch.as_tensor(keras.ops.convert_to_numpy(w))
            for w in model.get_layer(name).weights
        ]

    def conv(h, name, padding):
        (kernel,) = weights(name)
        return F.conv2d(h, kernel.permute(3, 2, 0, 1), padding=padding)

    def bn(h, name):
        gamma, beta, mean, variance = weights(name)
        return F.batch_norm(h, mean, variance, gamma, beta, training=training, eps=1e-3)

    h = torch.as_tensor(x)
    for block in range(4):
        name = f"block{block}"
        shortcut = bn(conv(h, f"{name}_shortcut", 0), f"{name}_shortcut_bn")
        for i in range(3):
            h = bn(conv(h, f"{name}_conv{i}", 1), f"{name}_bn{i}")
            if i < 2:
                h = F.leaky_relu(h, 0.1)
        h = F.max_pool2d(F.leaky_relu(h + shortcut, 0.1), 2)
    return h.mean(dim=(2, 3)).numpy()


def randomize_statistics(model, seed=0):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, variance = layer.weights
            gamma.assign(rng.uniform(0.5, 1.5, gamma.shape).astype("float32"))
            beta.assign(rng.normal(0, 0.1, beta.shape).astype("float32"))
            mean.assign(rng.normal(0, 0.1, mean.shape).astype("float32"))
            variance.assign(rng.uniform(0.5, 1.5, variance.shape).astype("float32"))


def test_default_widths_have_the_papers_12_4_million_weights():
    model = resnet12()
    assert model.output_shape == (None, 640)
    convolutions = 0
    widths = (3, 64, 160, 320, 640)
    for fan_in, width in zip(widths, widths[1:]):
        convolutions += 9 * fan_in * width + 2 * 9 * width * width + fan_in * width
    batch_norm = sum(4 * 2 * w for w in widths[1:])  # gamma and beta of 4 BNs
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == convolutions + batch_norm
    assert round(trainable / 1e6, 1) == 12.4
    assert resnet12(pooling="flatten").output_shape == (None, 640 * 5 * 5)


@pytest.mark.parametrize("training", [False, True])
def test_forward_pass_equals_pytorch(training):
    keras.utils.set_random_seed(0)
    model = resnet12(input_shape=(3, 32, 32), filters=(8, 12, 16, 20))
    randomize_statistics(model)
    x = np.random.default_rng(1).normal(size=(5, 3, 32, 32)).astype("float32")
    ours = keras.ops.convert_to_numpy(model(x, training=training))
    np.testing.assert_allclose(
        ours, reference(model, x, training), rtol=1e-4, atol=1e-4
    )


def test_maml_and_protonet_train_on_resnet12():
    episodes = random_episodes((3, 16, 16), uniform=True, grouped=True)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    small = dict(input_shape=(3, 16, 16), filters=(4, 4, 8, 8))
    for model in (
        metakeras.MAML(resnet12(outputs=3, **small), inner_learning_rate=0.1),
        metakeras.ProtoNet(resnet12(**small)),
    ):
        model.compile("adam", loss)
        assert np.isfinite(model.train_on_batch(episodes))


def test_bad_arguments():
    with pytest.raises(
        ValueError, match=r"`pooling` must be one of \['avg', 'flatten'\]"
    ):
        resnet12(pooling="max")
    with pytest.raises(ValueError, match="`filters` must be four positive integers"):
        resnet12(filters=(64, 128))
    with pytest.raises(
        ValueError, match=r"at least 16; received input_shape=\(3, 8, 8\)"
    ):
        resnet12(input_shape=(3, 8, 8))
