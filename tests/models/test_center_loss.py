"""The center loss of the pretrained baselines against NumPy and a hand-computed step."""

import keras
import numpy as np
import pytest
import torch
from conftest import LOSS, labelled_classes, mlp

from metakeras.models import (
    Baseline,
    BaselinePlusPlus,
    SimpleShot,
    center_distances,
    cosine_scale,
    head_logits,
    moved_centers,
)


def numpy_moved_centers(centers, embeddings, labels, rate):
    """Wen et al.'s update, class by class."""
    new = centers.copy()
    for j in np.unique(labels):
        members = embeddings[labels == j]
        new[j] += rate * (members - centers[j]).sum(0) / (1 + len(members))
    return new


def test_distances_and_centre_update_match_numpy():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(5, 3))
    embeddings = rng.normal(size=(8, 3))
    labels = np.array([0, 2, 2, 4, 0, 2, 1, 4])
    args = [torch.tensor(a) for a in (embeddings, centers, labels)]
    expected = 0.5 * ((embeddings - centers[labels]) ** 2).sum(-1)
    np.testing.assert_allclose(center_distances(*args).numpy(), expected, rtol=1e-12)
    moved = moved_centers(args[1], args[0], args[2], rate=0.3).numpy()
    np.testing.assert_allclose(
        moved, numpy_moved_centers(centers, embeddings, labels, 0.3), rtol=1e-12
    )
    assert np.array_equal(moved[3], centers[3])  # class 3 is not in the batch


def head_variables(model):
    if model.head == "linear":
        return [model.head_weights, model.head_bias]
    return [model.head_weights]


def reference_step(model, x, y, learning_rate, centers):
    """One SGD step on cross-entropy + center_loss * mean distance, by hand."""
    learner = model.learner
    trainable = [
        v.value.detach().clone().requires_grad_() for v in learner.trainable_variables
    ]
    state = [v.value.detach() for v in learner.non_trainable_variables]
    head = [v.value.detach().clone().requires_grad_() for v in head_variables(model)]
    embeddings, _ = learner.stateless_call(
        trainable, state, torch.tensor(x), training=True
    )
    if model.head == "linear":
        logits = head_logits(embeddings, *head)
    else:
        scale = cosine_scale(model.num_classes)
        logits = head_logits(embeddings, head[0], head="cosine", scale=scale)
    labels = torch.tensor(y)
    own = torch.tensor(centers)[labels]
    points = embeddings  # the cosine head's centres are of unit-length embeddings
    if model.head == "cosine":
        points = embeddings / embeddings.norm(dim=-1, keepdim=True)
    loss = torch.nn.functional.cross_entropy(logits, labels)
    loss = loss + model.center_loss * (0.5 * (points - own).square().sum(-1)).mean()
    parameters = [*trainable, *head]
    gradients = torch.autograd.grad(loss, parameters)
    new = [
        (p - learning_rate * g).detach().numpy() for p, g in zip(parameters, gradients)
    ]
    moved = numpy_moved_centers(centers, points.detach().numpy(), y, model.center_rate)
    return float(loss.detach()), new, moved


@pytest.mark.parametrize(
    "cls, vectorize",
    [
        (SimpleShot, False),
        (SimpleShot, True),
        (Baseline, False),
        (BaselinePlusPlus, False),
    ],
)
def test_training_steps_take_the_center_loss_and_move_the_centres(cls, vectorize):
    x, y = labelled_classes(classes=6, per_class=4)
    model = cls(
        mlp(hidden=16, outputs=5, inputs=8),
        num_classes=6,
        center_loss=0.2,
        center_rate=0.7,
        vectorize_tasks=vectorize,
    )
    model.compile(keras.optimizers.SGD(0.1), LOSS)
    centers = np.zeros((6, 5), dtype="float32")
    rng = np.random.default_rng(1)
    for _ in range(3):  # the centres are no longer zero after the first step
        batch = rng.choice(len(x), 10, replace=False)
        loss, weights, moved = reference_step(model, x[batch], y[batch], 0.1, centers)
        logs = model.train_on_batch(x[batch], y[batch], return_dict=True)
        np.testing.assert_allclose(logs["loss"], loss, rtol=1e-5)
        variables = [*model.learner.trainable_variables, *head_variables(model)]
        assert len(variables) == len(model.trainable_variables)
        for variable, expected in zip(variables, weights):
            np.testing.assert_allclose(variable.numpy(), expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(model.centers.numpy(), moved, rtol=1e-5, atol=1e-6)
        centers = moved
    assert not model.centers.trainable
    if cls is SimpleShot:  # its own state follows the centres in the step
        assert float(model.base_mean_batches.numpy()) == 3


def test_without_center_loss_there_are_no_centres():
    x, y = labelled_classes(classes=6, per_class=4)
    model = SimpleShot(mlp(hidden=16, outputs=5, inputs=8), num_classes=6)
    model.compile(keras.optimizers.SGD(0.1), LOSS)
    model.train_on_batch(x[:10], y[:10])
    assert model.centers is None
    assert "centers" not in [v.name for v in model.weights]
    assert "center_loss" not in model.get_config()


def test_centres_and_settings_survive_saving(tmp_path):
    x, y = labelled_classes(classes=6, per_class=4)
    model = SimpleShot(
        mlp(hidden=16, outputs=5, inputs=8), center_loss=0.05, center_rate=0.25
    )
    model.compile(keras.optimizers.SGD(0.1), LOSS)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert np.abs(model.centers.numpy()).sum() > 0
    path = str(tmp_path / "simpleshot.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    assert (restored.center_loss, restored.center_rate) == (0.05, 0.25)
    np.testing.assert_array_equal(restored.centers.numpy(), model.centers.numpy())
    restored.fit(x, y, batch_size=8, epochs=1, verbose=0)  # trains on


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"center_loss": -0.1}, r"`center_loss` must be a weight >= 0"),
        ({"center_loss": "high"}, r"`center_loss`"),
        ({"center_rate": 0}, r"`center_rate`"),
        ({"center_rate": 1.5}, r"`center_rate` must lie in \(0, 1\]. Received: 1.5"),
    ],
)
def test_bad_settings_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SimpleShot(mlp(inputs=8), **kwargs)
