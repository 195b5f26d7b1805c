"""The task loss computed by one PyTorch call equals the Keras loss."""

import keras
import numpy as np
import pytest
import torch
from conftest import on_device

from metakeras.models._task_loss import TaskLoss


def _value_and_gradient(loss, y_true, y_pred):
    y_pred = y_pred.clone().requires_grad_()
    value = loss(y_true, y_pred)
    (gradient,) = torch.autograd.grad(value, y_pred)
    return value.detach(), gradient


@pytest.mark.parametrize(
    "loss",
    [
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        "mse",
        "mean_squared_error",
        keras.losses.MeanSquaredError(),
    ],
    ids=["sparse_crossentropy", "mse", "mse_name", "mse_object"],
)
@pytest.mark.parametrize("labels_2d", [False, True])
def test_fused_loss_equals_the_keras_loss_and_its_gradient(loss, labels_2d):
    rng = np.random.default_rng(0)
    task_loss = TaskLoss(loss)
    assert task_loss.fused
    if isinstance(loss, keras.losses.SparseCategoricalCrossentropy):
        y_pred = on_device(rng.normal(size=(12, 5)).astype("float32") * 3)
        labels = rng.integers(0, 5, size=(12, 1) if labels_2d else 12)
        y_true = on_device(labels)
    else:
        shape = (12, 1) if labels_2d else (12, 3)
        y_pred = on_device(rng.normal(size=shape).astype("float32"))
        y_true = on_device(rng.normal(size=shape).astype("float32"))
    ours = _value_and_gradient(task_loss, y_true, y_pred)
    theirs = _value_and_gradient(task_loss.keras_loss, y_true, y_pred)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "loss",
    [
        keras.losses.SparseCategoricalCrossentropy(),  # probabilities
        keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=0),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="sum"),
        keras.losses.MeanAbsoluteError(),
        "sparse_categorical_crossentropy",
        lambda y_true, y_pred: keras.ops.mean(keras.ops.abs(y_true - y_pred)),
    ],
)
def test_other_losses_are_computed_by_keras(loss):
    task_loss = TaskLoss(loss)
    assert not task_loss.fused
    y_pred = on_device(np.full((4, 3), 1 / 3, "float32"))
    y_true = on_device(np.array([0, 1, 2, 1]))
    if not isinstance(loss, keras.losses.SparseCategoricalCrossentropy) and (
        loss != "sparse_categorical_crossentropy"
    ):
        y_true = on_device(np.eye(3, dtype="float32")[[0, 1, 2, 1]])
    torch.testing.assert_close(
        task_loss(y_true, y_pred), task_loss.keras_loss(y_true, y_pred)
    )


def test_shapes_the_fused_form_does_not_cover_go_to_keras():
    # Logits with a sequence axis: PyTorch wants the classes on axis 1.
    task_loss = TaskLoss(keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    y_pred = on_device(np.random.default_rng(0).normal(size=(2, 3, 4)).astype("f4"))
    y_true = on_device(np.zeros((2, 3), "int64"))
    torch.testing.assert_close(
        task_loss(y_true, y_pred), task_loss.keras_loss(y_true, y_pred)
    )
    # Broadcast targets in the squared error.
    mse = TaskLoss("mse")
    y_pred = on_device(np.ones((4, 2), "float32"))
    y_true = on_device(np.zeros((4, 1), "float32"))
    torch.testing.assert_close(mse(y_true, y_pred), mse.keras_loss(y_true, y_pred))


def test_unknown_loss_is_refused_by_name():
    with pytest.raises(ValueError, match="loss"):
        TaskLoss(42)
