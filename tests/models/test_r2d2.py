"""R2D2's closed-form ridge head against NumPy's least squares, and its training."""

import keras
import numpy as np
import torch
from test_matching_net import LOSS, embedding, episodes

import metakeras
from metakeras.models import R2D2, RidgeClassifier, ridge_logits


def hand_ridge(support, labels, ways, regularizer):
    """The primal solution `(X^T X + l I)^-1 X^T Y`, independent of Woodbury."""
    targets = np.eye(ways)[labels]
    d = support.shape[1]
    return np.linalg.solve(
        support.T @ support + regularizer * np.eye(d), support.T @ targets
    )


def test_woodbury_solution_equals_the_primal_ridge_regression():
    rng = np.random.default_rng(0)
    support, query = rng.normal(size=(6, 9)), rng.normal(size=(4, 9))
    labels = np.array([0, 1, 2, 0, 1, 2])
    logits = ridge_logits(
        torch.tensor(query),
        torch.tensor(support),
        torch.tensor(labels),
        3,
        torch.tensor(0.7, dtype=torch.float64),
        2.0,
        0.5,
    ).numpy()
    expected = 2.0 * query @ hand_ridge(support, labels, 3, 0.7) + 0.5
    np.testing.assert_allclose(logits, expected, rtol=1e-10)


def test_gradients_reach_the_embedding_and_the_head_scalars():
    support = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    regularizer = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    query = torch.randn(3, 5, dtype=torch.float64)

    def loss(s, lam):
        return ridge_logits(query, s, labels, 3, lam, 3.0, 0.0).logsumexp(-1).sum()

    assert torch.autograd.gradcheck(loss, (support, regularizer))


def test_training_adapting_and_saving(tmp_path):
    keras.utils.set_random_seed(0)
    model = R2D2(embedding(), regularizer=0.5)
    model.compile("adam", LOSS, metrics=["accuracy"])
    batch = episodes()
    first = model.train_on_batch(batch)[0]
    scalars = [float(v.numpy()) for v in (model.log_regularizer, model.score_scale)]
    for _ in range(30):
        last = model.train_on_batch(batch)[0]
    assert last < first
    assert [
        float(v.numpy()) for v in (model.log_regularizer, model.score_scale)
    ] != scalars
    sx, sy, qx = (batch[k][0] for k in ("support_x", "support_y", "query_x"))
    logits = model.adapt_and_predict(sx[None], sy[None], qx[None])[0]
    classifier = model.adapt(sx, sy)
    assert isinstance(classifier, RidgeClassifier)
    np.testing.assert_allclose(
        classifier.predict(qx, verbose=0), logits, rtol=1e-4, atol=1e-4
    )
    model.save(tmp_path / "r2d2.keras")
    restored = keras.models.load_model(tmp_path / "r2d2.keras")
    np.testing.assert_allclose(
        restored.adapt_and_predict(sx[None], sy[None], qx[None])[0], logits, rtol=1e-5
    )
    assert metakeras.models.get("r2d2").cls is R2D2
