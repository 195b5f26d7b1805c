"""Device placement: inputs from anywhere end up on the model's device, and
`vectorize_tasks="auto"` batches tasks where that is correct and faster."""

import keras
import numpy as np
import pytest
import torch
from conftest import CUDA, DEVICE, classification_episodes, mlp, requires_cuda

import metakeras
from metakeras.models._vectorize import _vectorizable, auto_vectorize

SCE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def test_inner_mini_batches_are_drawn_on_the_support_device():
    inner = metakeras.InnerLoop(steps=3, batch_size=2)
    for batch in inner.batches(5, device=torch.device("meta")):
        assert batch.device.type == "meta"
    assert all(b.device.type == "cpu" for b in inner.batches(5))


def test_auto_vectorizes_only_on_an_accelerator():
    model = metakeras.MAML(mlp(outputs=3, inputs=4))
    assert model.vectorize_tasks == "auto"
    assert model._vectorized() is CUDA
    assert auto_vectorize(model.learner) is CUDA
    assert model.get_config()["vectorize_tasks"] == "auto"


def test_auto_keeps_the_task_loop_for_layers_that_do_not_vectorize():
    channels_last = metakeras.models.conv4(
        input_shape=(28, 28, 1), data_format="channels_last"
    )
    assert not auto_vectorize(channels_last)
    assert not _vectorizable(keras.layers.Conv2D(4, 3, data_format="channels_last"))
    assert not _vectorizable(keras.layers.LSTM(3))
    assert _vectorizable(keras.layers.Conv2D(4, 3, data_format="channels_first"))
    assert all(
        _vectorizable(layer) for layer in metakeras.models.conv4(outputs=5).layers
    )


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_vectorize_tasks_must_be_a_flag_or_auto(value):
    with pytest.raises(ValueError, match='True or False or "auto"'):
        metakeras.MAML(mlp(), vectorize_tasks=value)


@requires_cuda
def test_auto_batches_conv4_on_the_gpu():
    model = metakeras.MAML(metakeras.models.conv4(outputs=5))
    assert model._vectorized()


def _cpu(value):
    return torch.as_tensor(np.asarray(value)).cpu()


@requires_cuda
def test_cpu_tensors_reach_the_model_device_at_every_entry_point():
    keras.utils.set_random_seed(0)
    model = metakeras.MAML(mlp(outputs=3, inputs=4), inner_batch_size=2)
    model.compile("adam", SCE, metrics=["accuracy"])
    episodes = {k: _cpu(v) for k, v in classification_episodes().items()}
    model.train_on_batch(episodes)
    model.fit(episodes, batch_size=2, epochs=1, verbose=0)
    model.evaluate(episodes, batch_size=2, verbose=0)
    predictions = model.adapt_and_predict(
        episodes["support_x"], episodes["support_y"], episodes["query_x"]
    )
    assert predictions.shape == (4, 9, 3)
    adapted = model.adapt(episodes["support_x"][0], episodes["support_y"][0])
    assert adapted.predict(episodes["query_x"][0], verbose=0).shape == (9, 3)
    assert model.predict(episodes["query_x"][0], verbose=0).shape == (9, 3)
    results = metakeras.evaluation.evaluate_episodes(model, episodes, episodes=4)
    assert np.isfinite(results.summary["mean"].to_numpy(dtype=float)).all()


@requires_cuda
def test_fast_layers_take_cpu_inputs():
    x = torch.randn(2, 3, 8, 8)  # on the CPU
    for layer in (
        metakeras.layers.Conv2D(4, 3, padding="same", data_format="channels_first"),
        metakeras.layers.BatchNormalization(axis=1),
        metakeras.layers.MaxPooling2D(2, data_format="channels_first"),
    ):
        assert layer(x, training=True).device == DEVICE


@requires_cuda
def test_protonet_trains_with_cpu_tensors_on_the_gpu():
    keras.utils.set_random_seed(0)
    model = metakeras.ProtoNet(mlp(outputs=4, inputs=4))
    model.compile("adam", SCE, metrics=["accuracy"])
    episodes = {k: _cpu(v) for k, v in classification_episodes().items()}
    logs = model.train_on_batch(episodes, return_dict=True)
    assert np.isfinite(logs["loss"])


@requires_cuda
def test_large_host_arrays_reach_the_gpu_as_keras_would_put_them():
    from metakeras.models._checks import to_tensor

    rng = np.random.default_rng(0)
    big = rng.normal(size=(4, 64, 9, 9))  # float64, over the pinned threshold
    read_only = big.astype("float32")
    read_only.flags.writeable = False
    strided = big[:, ::2]
    for array in (big, read_only, strided):
        fast = to_tensor(array, "support_x")
        reference = keras.ops.convert_to_tensor(array).to(torch.float32)
        assert fast.device == DEVICE and fast.dtype == torch.float32
        assert torch.equal(fast, reference)
