"""`compile(jit_compile=True)`: the meta-step as a CUDA graph, or eager with a reason.

On the CPU the tests check what makes a step capturable (no host
synchronisation, the update taken back on the device when it is not finite)
by running the step the graph records, eagerly; with a CUDA device they also
capture it and compare with eager training.
"""

import warnings

import keras
import numpy as np
import pytest
import torch
from conftest import CUDA, DEVICE, classification_episodes, mlp, requires_cuda

import metakeras
from metakeras.models._cuda_graph import (
    GraphedTrainStep,
    _CaptureChecker,
    _DeviceScalars,
)

SCE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

ALGORITHMS = {
    "maml": (metakeras.MAML, {}),
    "maml_vmap": (metakeras.MAML, {"vectorize_tasks": True}),
    "fomaml": (metakeras.MAML, {"first_order": True}),
    "maml_minibatch": (metakeras.MAML, {"inner_batch_size": 3, "inner_steps": 2}),
    "metasgd": (metakeras.MetaSGD, {}),
    "anil": (metakeras.ANIL, {}),
    "protonet": (metakeras.ProtoNet, {}),
    "reptile": (metakeras.Reptile, {}),
}


def _model(name, jit_compile=False, on_nonfinite="raise", optimizer="adam"):
    cls, kwargs = ALGORITHMS[name]
    keras.utils.set_random_seed(0)
    outputs = 4 if name == "protonet" else 3
    model = cls(mlp(hidden=8, outputs=outputs, inputs=4), **kwargs)
    model.compile(
        optimizer,
        SCE,
        metrics=["accuracy"],
        on_nonfinite=on_nonfinite,
        jit_compile=jit_compile,
    )
    return model


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_the_recorded_step_has_no_host_synchronisation_and_equals_eager(name):
    eager, graphed = _model(name), _model(name)
    runner = GraphedTrainStep(graphed)
    for seed in range(3):
        torch.manual_seed(seed)  # the same inner mini-batches for both
        eager_logs = eager.train_on_batch(
            classification_episodes(seed=seed), return_dict=True
        )
        torch.manual_seed(seed)
        tensors = graphed._episode_tensors(classification_episodes(seed=seed))
        graphed.reset_metrics()
        checker = _CaptureChecker(tensors[0].device)
        with _DeviceScalars(), checker:
            logs, ok, _ = runner._body(tensors)
        assert checker.problems == []
        assert bool(ok)
        for key, value in eager_logs.items():
            np.testing.assert_allclose(float(logs[key]), value, rtol=1e-5)
    for a, b in zip(eager.get_weights(), graphed.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for a, b in zip(eager.optimizer.variables, graphed.optimizer.variables):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def _regression(on_nonfinite, jit_compile=False):
    keras.utils.set_random_seed(0)
    model = metakeras.MAML(mlp(hidden=8, outputs=1, inputs=2))
    model.compile("adam", "mse", on_nonfinite=on_nonfinite, jit_compile=jit_compile)
    return model


def _regression_episodes(seed, overflow=False):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(4, 10, 2)).astype("float32")
    y = np.sin(x.sum(-1, keepdims=True)).astype("float32")
    if overflow:
        y[1] = 1e30  # finite targets whose squared error overflows
    return {
        "support_x": x[:, :5],
        "support_y": y[:, :5],
        "query_x": x[:, 5:],
        "query_y": y[:, 5:],
    }


@pytest.mark.parametrize("mode", ["raise", "skip"])
def test_a_nonfinite_update_is_taken_back_on_the_device(mode):
    model = _regression(mode)
    model.train_on_batch(_regression_episodes(0))
    before = [np.array(w) for w in model.weights + model.optimizer.variables]
    runner = GraphedTrainStep(model)
    tensors = model._episode_tensors(_regression_episodes(1, overflow=True))
    if mode == "raise":
        with pytest.raises(FloatingPointError, match="meta-training step 2"):
            runner._eager(tensors)
    else:
        logs = runner._eager(tensors)
        assert float(logs["skipped_batches"]) == 1.0
    after = [np.array(w) for w in model.weights + model.optimizer.variables]
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)


class _HostRead(keras.layers.Layer):
    """Reads a value back on the host every call, as some custom layers do."""

    def call(self, inputs):
        return inputs * float(keras.ops.max(inputs) > 0)


def test_the_checker_names_a_host_read_and_where_it_happens():
    keras.utils.set_random_seed(0)
    learner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), _HostRead()])
    model = metakeras.MAML(learner)
    model.compile("adam", SCE)
    model.train_on_batch(classification_episodes(seed=0))
    tensors = model._episode_tensors(classification_episodes(seed=1))
    checker = _CaptureChecker(DEVICE)
    with _DeviceScalars(), checker:
        GraphedTrainStep(model)._body(tensors)
    assert checker.problems
    assert "read on the host" in checker.problems[0]
    assert "test_jit_compile.py" in checker.problems[0]


def test_device_scalars_are_made_without_a_host_copy():
    with _DeviceScalars():
        value = torch.as_tensor(0.25, device=DEVICE)
        integer = torch.tensor(3, device=DEVICE)
        array = torch.as_tensor(np.arange(3), device=DEVICE)
    assert value.dtype == torch.float32 and float(value) == 0.25
    assert integer.dtype == torch.int64 and int(integer) == 3
    assert array.tolist() == [0, 1, 2]


@pytest.mark.skipif(CUDA, reason="the CPU fallback")
@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_without_cuda_it_warns_once_and_trains_eagerly(tmp_path, name):
    eager, graphed = _model(name), _model(name, jit_compile=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for seed in range(3):
            torch.manual_seed(seed)
            eager.train_on_batch(classification_episodes(seed=seed))
            torch.manual_seed(seed)
            graphed.train_on_batch(classification_episodes(seed=seed))
    reasons = [str(w.message) for w in caught if "jit_compile" in str(w.message)]
    # Every algorithm's train_step consults the graph runner.
    assert len(reasons) == 1
    assert "no CUDA device" in reasons[0]
    assert graphed._graph_runner.reason is not None
    for a, b in zip(eager.get_weights(), graphed.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert graphed.get_compile_config()["jit_compile"] is True
    graphed.save(tmp_path / "graphed.keras")
    loaded = keras.models.load_model(tmp_path / "graphed.keras")
    assert loaded.get_compile_config()["jit_compile"] is True


@requires_cuda
@pytest.mark.parametrize(
    "name", ["maml", "maml_vmap", "fomaml", "metasgd", "protonet", "reptile"]
)
def test_cuda_graph_replays_the_eager_step(name):
    eager, graphed = _model(name), _model(name, jit_compile=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        for seed in range(6):
            eager_logs = eager.train_on_batch(
                classification_episodes(seed=seed), return_dict=True
            )
            logs = graphed.train_on_batch(
                classification_episodes(seed=seed), return_dict=True
            )
            for key, value in eager_logs.items():
                np.testing.assert_allclose(logs[key], value, rtol=1e-4, atol=1e-6)
    assert graphed._graph_runner.captured == 1
    for a, b in zip(eager.get_weights(), graphed.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@requires_cuda
def test_cuda_graph_fit_skips_a_nonfinite_batch():
    model = _regression("skip", jit_compile=True)
    batches = [_regression_episodes(seed) for seed in range(4)]
    batches.append(_regression_episodes(4, overflow=True))
    data = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    history = model.fit(data, batch_size=4, epochs=3, verbose=0, shuffle=False)
    assert model._graph_runner.captured == 1
    assert history.history["skipped_batches"] == [1.0, 1.0, 1.0]
    assert all(np.isfinite(w).all() for w in model.get_weights())
