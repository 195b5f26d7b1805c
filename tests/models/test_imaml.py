"""Implicit MAML against closed forms on quadratic inner problems."""

import keras
import numpy as np
import pytest
import torch
from conftest import DEVICE, LOSS, dense_learner, informative_episodes

import metakeras
from metakeras import InnerLoop
from metakeras.models.imaml import _conjugate_gradient, _implicit_gradient

LAMBDA = 2.0


def spd(n, seed):
    generator = torch.Generator().manual_seed(seed)
    m = torch.randn(n, n, generator=generator, dtype=torch.float64)
    return (m @ m.T / n + 0.5 * torch.eye(n, dtype=torch.float64)).to(DEVICE)


def test_conjugate_gradient_solves_a_spd_system_in_n_steps():
    a = spd(6, 0)
    b = [torch.arange(6.0, dtype=torch.float64, device=DEVICE)]
    (x,) = _conjugate_gradient(lambda v: [a @ v[0]], b, steps=6)
    torch.testing.assert_close(x, torch.linalg.solve(a, b[0]), rtol=1e-10, atol=1e-10)
    # A converged system stays put (no 0/0) with more steps than needed.
    (again,) = _conjugate_gradient(lambda v: [a @ v[0]], b, steps=12)
    assert torch.isfinite(again).all()
    torch.testing.assert_close(again, x, rtol=1e-8, atol=1e-8)


def test_implicit_meta_gradient_of_a_quadratic_inner_problem():
    # Inner loss 1/2 phi'A phi - b'phi: the proximal solution is
    # phi* = (A + lambda I)^-1 (b + lambda theta), its Jacobian
    # lambda (A + lambda I)^-1, so the meta-gradient of a query loss
    # 1/2 ||phi - c||^2 is lambda (A + lambda I)^-1 (phi* - c).
    n = 4
    a = spd(n, 1)
    generator = torch.Generator().manual_seed(2)
    b, theta, c = (
        torch.randn(n, generator=generator, dtype=torch.float64).to(DEVICE)
        for _ in range(3)
    )

    def support(w, index=None):
        return 0.5 * w[0] @ a @ w[0] - b @ w[0]

    def proximal(w, index=None):
        return support(w) + LAMBDA / 2 * torch.sum((w[0] - theta) ** 2)

    eye = torch.eye(n, dtype=torch.float64, device=DEVICE)
    (phi,) = InnerLoop(steps=400, learning_rate=0.1, first_order=True).run(
        proximal, [theta]
    )
    solution = torch.linalg.solve(a + LAMBDA * eye, b + LAMBDA * theta)
    torch.testing.assert_close(phi, solution, rtol=1e-12, atol=1e-12)
    (got,) = _implicit_gradient(support, [phi], [phi - c], LAMBDA, cg_steps=n)
    want = LAMBDA * torch.linalg.solve(a + LAMBDA * eye, solution - c)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    # Autograd through the closed-form solution agrees: the exact gradient.
    theta_ = theta.clone().requires_grad_()
    exact = torch.linalg.solve(a + LAMBDA * eye, b + LAMBDA * theta_)
    (reference,) = torch.autograd.grad(0.5 * torch.sum((exact - c) ** 2), theta_)
    torch.testing.assert_close(got, reference, rtol=1e-10, atol=1e-12)


def test_damping_keeps_an_indefinite_system_solvable():
    # A support Hessian with an eigenvalue of -1.9 next to lambda = 2: the
    # exact system I + H / lambda has an eigenvalue of 0.05, amplifying the
    # query gradient 20-fold along it. Damped, the solution is
    # lambda (H + (lambda + delta) I)^-1 q, bounded by lambda / (lambda +
    # delta - 1.9) |q|.
    n, delta = 5, 20.0
    generator = torch.Generator().manual_seed(3)
    q_, _ = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=torch.float64))
    eigenvalues = torch.tensor([-1.9, -0.5, 0.3, 4.0, 9.0], dtype=torch.float64)
    h = (q_ @ torch.diag(eigenvalues) @ q_.T).to(DEVICE)
    phi = torch.randn(n, generator=generator, dtype=torch.float64).to(DEVICE)
    query = torch.randn(n, generator=generator, dtype=torch.float64).to(DEVICE)

    def support(w, index=None):
        return 0.5 * w[0] @ h @ w[0]

    eye = torch.eye(n, dtype=torch.float64, device=DEVICE)
    (exact,) = _implicit_gradient(support, [phi], [query], LAMBDA, cg_steps=n)
    torch.testing.assert_close(
        exact, LAMBDA * torch.linalg.solve(h + LAMBDA * eye, query)
    )
    assert exact.norm() > 5 * query.norm()
    (damped,) = _implicit_gradient(
        support, [phi], [query], LAMBDA, cg_steps=n, cg_damping=delta
    )
    want = LAMBDA * torch.linalg.solve(h + (LAMBDA + delta) * eye, query)
    torch.testing.assert_close(damped, want, rtol=1e-10, atol=1e-12)
    assert damped.norm() <= LAMBDA / (LAMBDA + delta - 1.9) * query.norm()


def linear_tasks(tasks=2, features=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(tasks, 14, features)).astype("float32")
    w = rng.normal(size=(tasks, features, 1)).astype("float32")
    y = (x @ w + 0.1 * rng.normal(size=(tasks, 14, 1))).astype("float32")
    return {
        "support_x": x[:, :8],
        "support_y": y[:, :8],
        "query_x": x[:, 8:],
        "query_y": y[:, 8:],
    }


@pytest.mark.parametrize("damping", [0.0, 3.0])
def test_model_meta_gradient_equals_the_closed_form_of_linear_regression(damping):
    # A linear learner with the MSE: the support loss is quadratic,
    # A = 2 X'X / n, b = 2 X'y / n, and the closed form above applies, the
    # damping added to A in the linear system only.
    episodes = linear_tasks()
    keras.utils.set_random_seed(0)
    learner = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(1, use_bias=False)]
    )
    model = metakeras.IMAML(
        learner,
        inner_steps=300,
        inner_learning_rate=0.1,
        proximal_lambda=LAMBDA,
        cg_steps=3,
        cg_damping=damping,
    )
    model.compile(optimizer=keras.optimizers.SGD(1.0), loss="mse")
    theta = learner.get_weights()[0].astype("float64")
    model.train_on_batch(episodes)
    got = theta - learner.get_weights()[0]
    want = np.zeros_like(theta)
    for t in range(2):
        sx, sy, qx, qy = (
            episodes[k][t].astype("float64")
            for k in ("support_x", "support_y", "query_x", "query_y")
        )
        a = 2 * sx.T @ sx / len(sx)
        b = 2 * sx.T @ sy / len(sx)
        eye = np.eye(3)
        phi = np.linalg.solve(a + LAMBDA * eye, b + LAMBDA * theta)
        query_gradient = 2 * qx.T @ (qx @ phi - qy) / len(qx)
        system = a + (LAMBDA + damping) * eye
        want += LAMBDA * np.linalg.solve(system, query_gradient) / 2
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_inner_steps_keep_no_graph():
    # Memory constant in the inner steps: the fast weights carry no graph
    # back to the initialisation, however many steps.
    model = metakeras.IMAML(dense_learner(), inner_steps=7, inner_learning_rate=0.1)
    model.compile(optimizer="adam", loss=LOSS)
    episodes = informative_episodes(tasks=1, seed=3)
    sx, sy = (
        keras.ops.convert_to_tensor(episodes[k][0]) for k in ("support_x", "support_y")
    )
    weights = [v.value for v in model.learner.trainable_variables]
    assert all(w.requires_grad for w in weights)
    context = model._episode_context(sx[None], sy[None], None)
    fast = model._adapt_weights(weights, [], sx, sy, context)
    assert all(f.grad_fn is None and not f.requires_grad for f in fast)
    assert not all(torch.equal(f, w) for f, w in zip(fast, weights))


def test_imaml_learns_adapts_and_round_trips(tmp_path):
    model = metakeras.IMAML(
        dense_learner(seed=1),
        inner_steps=5,
        inner_learning_rate=0.3,
        proximal_lambda=0.5,
        cg_steps=3,
        cg_damping=1.5,
        inner_optimizer="sgd",
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2), loss=LOSS, metrics=["accuracy"]
    )
    test = informative_episodes(tasks=16, seed=9)
    before = model.evaluate(test, batch_size=8, verbose=0, return_dict=True)
    history = model.fit(
        informative_episodes(tasks=32, seed=2), batch_size=4, epochs=4, verbose=0
    )
    after = model.evaluate(test, batch_size=8, verbose=0, return_dict=True)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert after["loss"] < before["loss"]
    config = model.get_config()
    assert (config["proximal_lambda"], config["cg_steps"]) == (0.5, 3)
    assert config["cg_damping"] == 1.5
    assert "first_order" not in config
    model.save(tmp_path / "imaml.keras")
    loaded = keras.models.load_model(tmp_path / "imaml.keras")
    assert isinstance(loaded, metakeras.IMAML)
    loaded_config = loaded.get_config()
    assert {k: v for k, v in loaded_config.items() if k != "learner"} == {
        k: v for k, v in config.items() if k != "learner"
    }
    sx, sy = test["support_x"][0], test["support_y"][0]
    np.testing.assert_allclose(
        loaded.adapt(sx, sy).predict(sx, verbose=0),
        model.adapt(sx, sy).predict(sx, verbose=0),
        rtol=1e-5,
        atol=1e-6,
    )


def test_evaluation_is_the_same_vectorized_and_task_by_task():
    outputs = []
    for vectorize_tasks in (False, True):
        model = metakeras.IMAML(
            dense_learner(seed=4),
            inner_steps=3,
            inner_learning_rate=0.2,
            vectorize_tasks=vectorize_tasks,
        )
        model.compile(optimizer="adam", loss=LOSS)
        test = informative_episodes(tasks=4, seed=5)
        outputs.append(
            model.adapt_and_predict(
                test["support_x"], test["support_y"], test["query_x"]
            )
        )
    np.testing.assert_allclose(*outputs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"proximal_lambda": 0}, "`proximal_lambda` must be a positive finite"),
        ({"cg_steps": 0}, "`cg_steps`"),
        ({"cg_damping": -1.0}, r"`cg_damping` must be a finite number >= 0\. .*-1\.0"),
        ({"adapt_layers": ["head"]}, r"IMAML does not take adapt_layers=\['head'\]"),
        ({"per_step_learning_rates": True}, "no gradient reaches the inner rates"),
        ({"multi_step_loss_epochs": 2}, "multi_step_loss_epochs=2"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        metakeras.IMAML(dense_learner(), **kwargs)


def test_first_order_is_ignored_like_reptile():
    model = metakeras.IMAML(
        dense_learner(), inner=InnerLoop(steps=4, first_order=False)
    )
    assert model.inner.first_order and model.inner.steps == 4
    assert metakeras.IMAML(dense_learner(), first_order=False).inner.first_order
