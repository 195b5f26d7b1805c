"""The benchmarks' plain-PyTorch references compute what metakeras computes.

`benchmarks/throughput.py` times each metric learner beside a hand-written
PyTorch step (`benchmarks/_reference.py`); the comparison means something
only if both do the same math. Given identical embeddings (and, for the
Relation Network, identical relation weights), the references' logits equal
those of the metakeras models' training step at the models' defaults. And
the command line of `benchmarks/omniglot.py` reaches the preset it trains.
"""

import os
import sys

import keras
import numpy as np
import pytest
import torch

import metakeras

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks")
sys.path.insert(0, BENCHMARKS)

import _reference  # noqa: E402
import _throughput_worker  # noqa: E402
import omniglot  # noqa: E402
import throughput  # noqa: E402

WAYS, SHOTS, QUERIES, WIDTH = 5, 2, 3, 64


def _embeddings(seed=0):
    generator = torch.Generator().manual_seed(seed)
    support = torch.randn(WAYS * SHOTS, WIDTH, generator=generator)
    query = torch.randn(WAYS * QUERIES, WIDTH, generator=generator)
    support_y = torch.arange(WAYS).repeat_interleave(SHOTS)
    return support, support_y, query


def _model(name):
    learner = metakeras.models.conv4(input_shape=(1, 28, 28))
    return metakeras.models.get(name).create(learner, "classification")


def test_reference_matching_logits_equal_matching_net():
    support, support_y, query = _embeddings()
    model = _model("matchingnet")
    ours = model._task_logits(query, support, support_y, WAYS)
    reference = _reference.matching_logits(support, support_y, query, WAYS)
    # metakeras's logits are the log-probabilities up to a constant per
    # query; the reference returns the log-probabilities themselves.
    np.testing.assert_allclose(
        torch.log_softmax(ours, -1).detach().numpy(),
        reference.numpy(),
        atol=1e-5,
        rtol=1e-5,
    )
    np.testing.assert_allclose(
        metakeras.models.matching_logits(query, support, support_y, WAYS)
        .log_softmax(-1)
        .numpy(),
        reference.numpy(),
        atol=1e-5,
        rtol=1e-5,
    )


def test_reference_relation_logits_equal_relation_net():
    support, support_y, query = _embeddings()
    model = _model("relationnet")
    head = _reference.RelationHead(WIDTH)
    dense = [layer for layer in model.relation.layers if layer.weights]
    assert [layer.units for layer in dense] == [
        head.mlp[0].out_features,
        head.mlp[2].out_features,
    ]
    with torch.no_grad():
        for layer, linear in zip(dense, (head.mlp[0], head.mlp[2])):
            kernel, bias = (np.asarray(w) for w in layer.get_weights())
            assert tuple(linear.weight.shape) == kernel.T.shape
            linear.weight.copy_(torch.from_numpy(kernel.T))
            linear.bias.copy_(torch.from_numpy(bias))
        reference = head(support, support_y, query, WAYS)
    ours = model._task_logits(query, support, support_y, WAYS)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(ours), reference.numpy(), atol=1e-5, rtol=1e-5
    )


def test_reference_ridge_logits_equal_r2d2():
    support, support_y, query = _embeddings()
    model = _model("r2d2")
    head = _reference.RidgeHead()
    with torch.no_grad():
        reference = head(support, support_y, query, WAYS)
        ours = model._task_logits(query, support, support_y, WAYS)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(ours), reference.numpy(), atol=1e-5, rtol=1e-5
    )
    # The same starting penalty, scale and bias (metakeras's defaults).
    starting = [float(v.detach()) for v in model._head_parameters()]
    with torch.no_grad():
        penalty, scale = float(head.log_regularizer.exp()), float(head.scale)
    assert starting == [penalty, scale, float(head.bias.detach())]


def test_reference_prototype_logits_equal_protonet():
    support, support_y, query = _embeddings()
    model = _model("protonet")
    reference = _reference.prototype_logits(support, support_y, query, WAYS)
    ours = model._task_logits(query, support, support_y, WAYS)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(ours), reference.numpy(), atol=1e-4, rtol=1e-5
    )


def _tiny(name):
    # One-image queries, two tasks: the step's wiring, not its speed.
    return {
        **throughput.config_for(name),
        "meta_batch": 2,
        "queries": 1,
        "device": "cpu",
    }


@pytest.mark.parametrize("name", ["matchingnet", "relationnet", "r2d2"])
@pytest.mark.parametrize("vectorize", [False, True], ids=["loop", "vmap"])
def test_reference_metric_steps_train_embedding_and_head(name, vectorize):
    config = _tiny(f"{name} 5w1s mb16")
    batch = _throughput_worker._episode(config, np.random.default_rng(0))
    torch.manual_seed(0)
    step = _reference.step_function(config, vectorize=vectorize)
    parameters = step.parameters
    before = [p.detach().clone() for p in parameters]
    step(batch)
    changed = [not torch.equal(a, p) for a, p in zip(before, parameters)]
    # conv4's 16 tensors, and the head's (relation MLP 4, ridge scalars 3).
    assert len(parameters) == 16 + {"matchingnet": 0, "relationnet": 4, "r2d2": 3}[name]
    assert all(changed)


@pytest.mark.parametrize("name", ["matchingnet", "relationnet", "r2d2"])
def test_throughput_worker_builds_metric_learners(name):
    config = _tiny(f"{name} 5w1s mb16")
    batch = _throughput_worker._episode(config, np.random.default_rng(0))
    step = _throughput_worker._metakeras_step(config, vectorize=False)
    step(batch)
    with pytest.raises(SystemExit, match="learn2learn has no"):
        _throughput_worker._learn2learn_step(config)


def test_omniglot_learning_rate_flag_sets_the_outer_rate():
    parser = omniglot.build_parser()
    preset = omniglot.preset_for(parser.parse_args(["--algorithm", "maml"]))
    assert (
        preset.learning_rate
        == metakeras.models.presets.get("maml-omniglot").learning_rate
    )
    args = parser.parse_args(["--algorithm", "mamlpp", "--learning-rate", "0.003"])
    faster = omniglot.preset_for(args)
    assert faster.learning_rate == 0.003
    model = faster.model()
    assert float(
        keras.ops.convert_to_numpy(model.optimizer.learning_rate)
    ) == pytest.approx(0.003)
