import keras
import numpy as np
import pytest
import torch
from conftest import on_device, random_episodes, requires_cuda

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
    return random_episodes((2, 6, 6), tasks=3, queries=3)


def meta_step(batch_norm, vectorize=False, first_order=False):
    model = metakeras.MAML(
        small_net(batch_norm),
        inner_steps=2,
        inner_learning_rate=0.3,
        vectorize_tasks=vectorize,
        first_order=first_order,
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


def test_first_order_maml_under_vmap_uses_the_fused_kernel_exactly():
    # Without second derivatives PyTorch's batching rule for the fused
    # kernel is exact, so first-order MAML keeps it in the inner loop too.
    before, loop_after, _ = meta_step(BatchNormalization, False, first_order=True)
    _, vmap_after, _ = meta_step(BatchNormalization, True, first_order=True)
    for a, b, w in zip(loop_after, vmap_after, before):
        np.testing.assert_allclose(w - a, w - b, rtol=1e-4, atol=1e-6)


@requires_cuda
@pytest.mark.parametrize("shape", [(6, 3), (6, 3, 5, 5)])
def test_cudnn_batch_norm_equals_the_native_kernel_to_second_order(shape):
    from metakeras.layers.batch_normalization import _batch_norm_training

    x = on_device(torch.randn(shape, dtype=torch.float64).float() * 2 + 1)
    gamma = on_device(torch.rand(shape[1]) + 0.5)
    beta = on_device(torch.randn(shape[1]))
    weight = on_device(torch.randn(shape))
    results = []
    for cudnn in (True, False):
        inputs = [t.clone().requires_grad_() for t in (x, gamma, beta)]
        with torch.backends.cudnn.flags(
            enabled=cudnn, deterministic=True, allow_tf32=False
        ):
            outputs, mean, inverse_std = _batch_norm_training(*inputs, 1e-3)
            (grad_x,) = torch.autograd.grad(
                (outputs * weight).sum(), inputs[0], create_graph=True
            )
            # beta shifts the outputs, which leaves the input gradient alone.
            second = torch.autograd.grad(grad_x.pow(2).sum(), inputs[:2])
        results.append([outputs, mean, inverse_std, grad_x, *second])
    for fast, native in zip(*results):
        torch.testing.assert_close(fast, native, rtol=1e-4, atol=1e-5)


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


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(padding="same"),
        dict(padding="valid", strides=2),
        dict(padding="same", dilation_rate=2, activation="relu"),
        dict(padding="same", strides=2),  # falls back to Keras
        dict(padding="same", use_bias=False),
    ],
)
def test_conv2d_matches_keras_values_and_second_order_gradients(kwargs):
    from metakeras.layers import Conv2D

    keras.utils.set_random_seed(0)
    x = torch.randn(4, 3, 9, 9)
    ours = Conv2D(5, 3, data_format="channels_first", **kwargs)
    theirs = keras.layers.Conv2D(5, 3, data_format="channels_first", **kwargs)
    ours.build(x.shape)
    theirs.build(x.shape)
    weights = [torch.randn(tuple(v.shape), requires_grad=True) for v in ours.weights]

    def second_order(layer):
        y, _ = layer.stateless_call(weights, [], x)
        grads = torch.autograd.grad((y**2).mean(), weights, create_graph=True)
        outer = torch.autograd.grad(sum((g**3).sum() for g in grads), weights)
        return y, outer

    y_ours, g_ours = second_order(ours)
    y_theirs, g_theirs = second_order(theirs)
    torch.testing.assert_close(y_ours, y_theirs, atol=1e-5, rtol=1e-5)
    for a, b in zip(g_ours, g_theirs):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_conv2d_weights_and_config_interchange_with_keras(tmp_path):
    from metakeras.layers import Conv2D

    ours = keras.Sequential(
        [keras.Input((1, 8, 8)), Conv2D(4, 3, data_format="channels_first")]
    )
    theirs = keras.Sequential(
        [
            keras.Input((1, 8, 8)),
            keras.layers.Conv2D(4, 3, data_format="channels_first"),
        ]
    )
    theirs.set_weights(ours.get_weights())
    x = np.random.default_rng(0).random((2, 1, 8, 8)).astype("float32")
    np.testing.assert_allclose(
        ours.predict(x, verbose=0), theirs.predict(x, verbose=0), atol=1e-6
    )
    path = tmp_path / "conv.keras"
    ours.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.layers[0]) is Conv2D
    np.testing.assert_allclose(loaded.predict(x, verbose=0), ours.predict(x, verbose=0))


def _stateless_reference(model, weights, state, x, training):
    return model.stateless_call(weights, state, x, training=training)


@pytest.mark.parametrize("training", [True, False])
def test_stateless_forward_equals_stateless_call(training):
    from metakeras.models._stateless import _plan, stateless_forward

    keras.utils.set_random_seed(0)
    head = keras.Sequential(
        [
            keras.layers.Dropout(0.3),
            keras.layers.Dense(3),
            keras.layers.Dropout(0.2, seed=4),
        ]
    )
    model = keras.Sequential(
        [
            keras.Input((1, 16, 16)),
            metakeras.models.conv4(input_shape=(1, 16, 16)),
            head,
        ]
    )
    assert _plan(model) is not None  # nested Sequentials run layer by layer
    x = torch.randn(6, 1, 16, 16)
    weights = [v.value.clone().requires_grad_() for v in model.trainable_variables]
    state = [v.value.clone() for v in model.non_trainable_variables]
    results = []
    for forward in (stateless_forward, _stateless_reference):
        torch.manual_seed(1)  # unseeded Dropout draws from torch's global RNG
        y, new_state = forward(model, weights, state, x, training)
        grads = torch.autograd.grad((y**2).sum(), weights)
        results.append((y, new_state, grads))
    (y_a, s_a, g_a), (y_b, s_b, g_b) = results
    torch.testing.assert_close(y_a, y_b)
    for a, b in zip(s_a + list(g_a), s_b + list(g_b)):
        torch.testing.assert_close(a, b)


def test_stateless_forward_falls_back_for_masking_and_functional_models():
    from metakeras.models._stateless import _plan

    masked = keras.Sequential(
        [keras.Input((4, 2)), keras.layers.Masking(), keras.layers.LSTM(3)]
    )
    inputs = keras.Input((4,))
    functional = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    assert _plan(masked) is None
    assert _plan(functional) is None


def _pool_input(shape, seed=0):
    """ReLU-like values with tied windows (constant regions, zeros)."""
    x = torch.relu(torch.randn(shape, generator=torch.Generator().manual_seed(seed)))
    x[..., :4, :4] = 0.5
    return x


@pytest.mark.parametrize(
    "shape, kwargs",
    [
        ((6, 8, 28, 28), dict(pool_size=2)),
        ((3, 4, 7, 9), dict(pool_size=2)),  # odd sizes: the last row/column dropped
        ((3, 4, 9, 9), dict(pool_size=3, strides=2)),  # overlapping windows
        ((2, 5, 8, 8), dict(pool_size=(2, 3), strides=(1, 2))),
        ((2, 5, 8, 8), dict(pool_size=2, padding="same")),  # falls back to Keras
    ],
)
def test_max_pooling_matches_keras_values_and_second_order_gradients(shape, kwargs):
    from metakeras.layers import MaxPooling2D

    x0 = _pool_input(shape)
    ours = MaxPooling2D(data_format="channels_first", **kwargs)
    theirs = keras.layers.MaxPooling2D(data_format="channels_first", **kwargs)
    results = []
    for layer in (ours, theirs):
        x = x0.clone().requires_grad_()
        y = layer(x)
        upstream = torch.linspace(-1, 1, y.numel(), device=y.device)
        upstream = upstream.view(y.shape).requires_grad_()
        (grad_x,) = torch.autograd.grad((y * upstream).sum(), x, create_graph=True)
        # The derivative of the gradient with respect to the upstream
        # gradient is what second-order MAML differentiates.
        (second,) = torch.autograd.grad((grad_x * x0).sum(), upstream)
        results.append((y, grad_x, second))
    for a, b in zip(*results):
        assert torch.equal(a, b)


def test_max_pooling_falls_back_under_vmap_and_for_channels_last():
    from metakeras.layers import MaxPooling2D

    x = _pool_input((3, 2, 4, 6, 6))
    layer = MaxPooling2D(2, data_format="channels_first")
    reference = keras.layers.MaxPooling2D(2, data_format="channels_first")
    torch.testing.assert_close(torch.vmap(layer)(x), torch.vmap(reference)(x))
    x_last = x[0].permute(0, 2, 3, 1)
    torch.testing.assert_close(
        MaxPooling2D(2, data_format="channels_last")(x_last),
        keras.layers.MaxPooling2D(2, data_format="channels_last")(x_last),
    )


def test_conv4_pooling_before_relu_equals_the_classic_block_order():
    """relu(max(x)) == max(relu(x)), with equal first and second derivatives."""
    from metakeras.layers import Conv2D

    keras.utils.set_random_seed(0)
    ours = metakeras.models.conv4(input_shape=(1, 28, 28), outputs=5)
    names = [layer.name for layer in ours.layers[:4]]
    assert names == ["conv0", "bn0", "pool0", "relu0"]
    classic = keras.Sequential([keras.Input((1, 28, 28))])
    for _ in range(4):
        classic.add(Conv2D(64, 3, padding="same", data_format="channels_first"))
        classic.add(BatchNormalization(axis=1))
        classic.add(keras.layers.ReLU())
        classic.add(keras.layers.MaxPooling2D(2, data_format="channels_first"))
    classic.add(keras.layers.Flatten())
    classic.add(keras.layers.Dense(5))
    classic.set_weights(ours.get_weights())
    # Blank margins make tied windows, as Omniglot's white background does.
    x = torch.zeros(6, 1, 28, 28)
    x[:, :, 6:22, 6:22] = torch.rand(
        6, 1, 16, 16, generator=torch.Generator().manual_seed(1)
    )
    weights = [
        torch.randn(tuple(v.shape), requires_grad=True)
        for v in ours.trainable_variables
    ]
    state = [v.value.clone() for v in ours.non_trainable_variables]

    def second_order(model):
        y, _ = model.stateless_call(weights, state, x, training=True)
        grads = torch.autograd.grad((y**2).mean(), weights, create_graph=True)
        outer = torch.autograd.grad(sum((g**2).sum() for g in grads), weights)
        return [y, *grads, *outer]

    for a, b in zip(second_order(ours), second_order(classic)):
        assert torch.equal(a, b)


def test_max_pooling_config_round_trips(tmp_path):
    from metakeras.layers import MaxPooling2D

    model = keras.Sequential(
        [keras.Input((2, 8, 8)), MaxPooling2D(2, data_format="channels_first")]
    )
    path = tmp_path / "pool.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.layers[0]) is MaxPooling2D
    x = _pool_input((3, 2, 8, 8)).numpy()
    np.testing.assert_array_equal(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0)
    )
