"""The meta-gradient of metakeras's MAML against an independent computation."""

import keras
import numpy as np
import pytest
import torch
from conftest import mlp, sine_episodes

import metakeras

LR, STEPS = 0.1, 2


def _episodes(tasks=3):
    return sine_episodes(tasks=tasks, queries=7, seed=1, amplitudes_first=True)


def _reference_gradient(weights, episodes, first_order):
    """Plain float64 PyTorch MAML, written without Keras."""
    params = [torch.tensor(w, dtype=torch.float64, requires_grad=True) for w in weights]

    def forward(p, x):
        return torch.tanh(x @ p[0] + p[1]) @ p[2] + p[3]

    losses = []
    for t in range(len(episodes["support_x"])):
        sx, sy, qx, qy = (
            torch.tensor(episodes[k][t], dtype=torch.float64)
            for k in ("support_x", "support_y", "query_x", "query_y")
        )
        fast = params
        for _ in range(STEPS):
            loss = ((forward(fast, sx) - sy) ** 2).mean()
            grads = torch.autograd.grad(loss, fast, create_graph=not first_order)
            fast = [w - LR * g for w, g in zip(fast, grads)]
        losses.append(((forward(fast, qx) - qy) ** 2).mean())
    outer = torch.stack(losses).mean()
    return [g.numpy() for g in torch.autograd.grad(outer, params)]


def _metakeras_gradient(first_order, vectorize_tasks):
    keras.utils.set_random_seed(3)
    model = metakeras.MAML(
        mlp(hidden=4),
        inner_steps=STEPS,
        inner_learning_rate=LR,
        first_order=first_order,
        vectorize_tasks=vectorize_tasks,
    )
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=1.0), loss="mse")
    before = [np.array(w) for w in model.learner.get_weights()]
    model.train_on_batch(_episodes())
    after = model.learner.get_weights()
    return before, [b - a for b, a in zip(before, after)]


@pytest.mark.parametrize("vectorize_tasks", [False, True])
@pytest.mark.parametrize("first_order", [False, True])
def test_meta_gradient_matches_reference(first_order, vectorize_tasks):
    weights, gradient = _metakeras_gradient(first_order, vectorize_tasks)
    reference = _reference_gradient(weights, _episodes(), first_order)
    for got, want in zip(gradient, reference):
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


def test_first_order_differs_from_second_order_by_the_hessian_term():
    weights, _ = _metakeras_gradient(False, False)
    second = _reference_gradient(weights, _episodes(), first_order=False)
    first = _reference_gradient(weights, _episodes(), first_order=True)
    _, got_first = _metakeras_gradient(True, False)
    _, got_second = _metakeras_gradient(False, False)
    gap = max(np.abs(s - f).max() for s, f in zip(second, first))
    assert gap > 1e-3  # the inner-loop Hessian term is not negligible here
    got_gap = max(np.abs(s - f).max() for s, f in zip(got_second, got_first))
    assert got_gap == pytest.approx(gap, rel=1e-2)


def test_meta_gradient_matches_finite_differences():
    """Independent of autograd: central differences of the MAML objective."""
    weights, gradient = _metakeras_gradient(False, False)
    episodes = _episodes()

    def objective(w):
        params = [torch.tensor(v, dtype=torch.float64) for v in w]
        total = 0.0
        for t in range(len(episodes["support_x"])):
            sx, sy, qx, qy = (
                torch.tensor(episodes[k][t], dtype=torch.float64)
                for k in ("support_x", "support_y", "query_x", "query_y")
            )
            fast = [p.clone().requires_grad_(True) for p in params]
            for _ in range(STEPS):
                out = torch.tanh(sx @ fast[0] + fast[1]) @ fast[2] + fast[3]
                grads = torch.autograd.grad(((out - sy) ** 2).mean(), fast)
                fast = [
                    (p - LR * g).detach().requires_grad_(True)
                    for p, g in zip(fast, grads)
                ]
            out = torch.tanh(qx @ fast[0] + fast[1]) @ fast[2] + fast[3]
            total += ((out - qy) ** 2).mean().item()
        return total / len(episodes["support_x"])

    eps = 1e-5
    rng = np.random.default_rng(0)
    for index in range(len(weights)):
        flat = weights[index].ravel()
        for j in rng.choice(flat.size, size=min(3, flat.size), replace=False):
            plus = [w.astype("float64").copy() for w in weights]
            minus = [w.astype("float64").copy() for w in weights]
            plus[index].ravel()[j] += eps
            minus[index].ravel()[j] -= eps
            numeric = (objective(plus) - objective(minus)) / (2 * eps)
            assert gradient[index].ravel()[j] == pytest.approx(
                numeric, abs=1e-4, rel=1e-3
            )


@pytest.mark.parametrize("reduction", ["sum_over_batch_size", "sum"])
def test_per_task_backward_equals_the_joint_meta_batch_graph(reduction):
    # The sequential path backpropagates task by task (to bound memory); the
    # vectorized path differentiates the whole meta-batch at once. With a
    # weight regularizer (counted once) and either loss reduction they agree.
    updates = []
    for vectorize_tasks in (False, True):
        keras.utils.set_random_seed(5)
        learner = keras.Sequential(
            [
                keras.Input((1,)),
                keras.layers.Dense(
                    8, activation="tanh", kernel_regularizer=keras.regularizers.L2(0.1)
                ),
                keras.layers.Dense(1),
            ]
        )
        model = metakeras.MAML(
            learner,
            inner_steps=1,
            inner_learning_rate=LR,
            vectorize_tasks=vectorize_tasks,
        )
        model.compile(
            optimizer=keras.optimizers.SGD(learning_rate=1.0),
            loss=keras.losses.MeanSquaredError(reduction=reduction),
        )
        before = [np.array(w) for w in model.learner.get_weights()]
        logs = model.train_on_batch(_episodes(tasks=4), return_dict=True)
        after = model.learner.get_weights()
        updates.append(([b - a for b, a in zip(before, after)], logs["loss"]))
    (sequential, loss_a), (joint, loss_b) = updates
    np.testing.assert_allclose(loss_a, loss_b, rtol=1e-5)
    for a, b in zip(sequential, joint):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4)
