"""`InnerLoop(optimizer=...)`: Keras optimizers as differentiable inner updates.

Each rule is checked against a hand-written `torch.func` version of the
optimizer's update (float64): the adapted weights and the meta-gradients
(second and first order, full batch and mini-batches, with learned
per-parameter rates), against Keras's own optimizer stepping variables, and
under `torch.func.vmap`.
"""

import keras
import numpy as np
import pytest
import torch
from conftest import DEVICE, dense_learner, informative_episodes

import metakeras
from metakeras import InnerLoop

STEPS = 3
OPTIMIZERS = {
    "sgd": lambda: keras.optimizers.SGD(0.1),
    "momentum": lambda: keras.optimizers.SGD(0.1, momentum=0.9),
    "nesterov": lambda: keras.optimizers.SGD(0.1, momentum=0.8, nesterov=True),
    "adam": lambda: keras.optimizers.Adam(0.05, beta_1=0.8, beta_2=0.95, epsilon=1e-6),
    "rmsprop": lambda: keras.optimizers.RMSprop(0.02, rho=0.8, epsilon=1e-6),
    "rmsprop_momentum": lambda: keras.optimizers.RMSprop(0.02, rho=0.9, momentum=0.5),
}


# ------------------------------------------------ the hand-written reference


def reference_rule(name, optimizer):
    """`(init, update)` of `optimizer`'s update, written from Keras's formulas."""
    c = optimizer.get_config()

    if name in ("sgd", "momentum", "nesterov"):
        mu, nesterov = c["momentum"], c["nesterov"]

        def update(w, g, state, lr, t):
            if mu == 0:
                return w - lr * g, state
            m = mu * state[0] - lr * g
            return (w + mu * m - lr * g if nesterov else w + m), (m,)

        return (lambda w: (torch.zeros_like(w),)), update
    if name == "adam":
        b1, b2, eps = c["beta_1"], c["beta_2"], c["epsilon"]

        def update(w, g, state, lr, t):
            m = b1 * state[0] + (1 - b1) * g
            v = b2 * state[1] + (1 - b2) * g * g
            m_hat, v_hat = m / (1 - b1 ** (t + 1)), v / (1 - b2 ** (t + 1))
            # Keras puts epsilon beside sqrt(v) before the bias correction.
            scale = (1 - b2 ** (t + 1)) ** 0.5
            return w - lr * m_hat / (v_hat**0.5 + eps / scale), (m, v)

        return (lambda w: (torch.zeros_like(w), torch.zeros_like(w))), update
    rho, mu, eps = c["rho"], c["momentum"], c["epsilon"]

    def update(w, g, state, lr, t):
        v = rho * state[0] + (1 - rho) * g * g
        step = lr * g / (v + eps) ** 0.5
        if mu == 0:
            return w - step, (v, state[1])
        m = mu * state[1] + step
        return w - m, (v, m)

    return (lambda w: (torch.zeros_like(w), torch.zeros_like(w))), update


def forward(p, x):
    return torch.tanh(x @ p[0] + p[1]) @ p[2] + p[3]


def reference_meta_gradient(name, optimizer, data, params, rates, first_order, idx):
    """Meta-gradients w.r.t. the weights and the rates, all in torch.func."""
    init, update = reference_rule(name, optimizer)
    sx, sy, qx, qy = data

    def support(p, x, y):
        return ((forward(p, x) - y) ** 2).mean()

    def adapted(p, r):
        state = [init(w) for w in p]
        for t in range(STEPS):
            x, y = (sx, sy) if idx is None else (sx[idx[t]], sy[idx[t]])
            g = torch.func.grad(support)(p, x, y)
            if first_order:
                g = [gi.detach() for gi in g]
            new = [update(w, gi, s, ri, t) for w, gi, s, ri in zip(p, g, state, r)]
            p, state = [n[0] for n in new], [n[1] for n in new]
        return p

    def objective(p, r):
        return support(adapted(p, r), qx, qy)

    fast = adapted(params, rates)
    grads = torch.func.grad(objective, argnums=(0, 1))(params, rates)
    return fast, list(grads[0]) + list(grads[1])


def problem():
    generator = torch.Generator().manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64).to(DEVICE)

    params = [randn(2, 6) * 0.8, randn(6) * 0.1, randn(6, 1) * 0.5, randn(1) * 0.1]
    # Per-parameter (Meta-SGD) rates around 1: they scale the optimizer's rate.
    rates = [1 + 0.1 * randn(*p.shape) for p in params]
    data = (randn(8, 2), randn(8, 1), randn(5, 2), randn(5, 1))
    return params, rates, data


def metakeras_meta_gradient(inner, params, rates, data, batches):
    sx, sy, qx, qy = data
    params = [p.clone().requires_grad_() for p in params]
    rates = [r.clone().requires_grad_() for r in rates]
    scaled = [inner.learning_rate * r for r in rates]

    def loss(w, index=None):
        x, y = (sx, sy) if index is None else (sx[index], sy[index])
        return ((forward(w, x) - y) ** 2).mean()

    fast = inner.run(loss, params, batches=batches, learning_rates=scaled)
    query = ((forward(fast, qx) - qy) ** 2).mean()
    return fast, torch.autograd.grad(query, params + rates)


@pytest.mark.parametrize("mini_batch", [False, True])
@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_updates_and_meta_gradients_match_the_torch_func_reference(
    name, first_order, mini_batch
):
    optimizer = OPTIMIZERS[name]()
    inner = InnerLoop(
        steps=STEPS,
        first_order=first_order,
        optimizer=optimizer,
        batch_size=3 if mini_batch else None,
        shuffle=False,
    )
    params, rates, data = problem()
    batches = inner.batches(8)
    fast, grads = metakeras_meta_gradient(inner, params, rates, data, batches)
    lr = [inner.learning_rate * r for r in rates]
    want_fast, want_grads = reference_meta_gradient(
        name, optimizer, data, params, lr, first_order, batches
    )
    for got, want in zip(fast, want_fast):
        torch.testing.assert_close(got.detach(), want, rtol=1e-10, atol=1e-12)
    # The rates' gradients come through the scaling `lr * r`.
    want_grads = want_grads[:4] + [g * inner.learning_rate for g in want_grads[4:]]
    for got, want in zip(grads, want_grads):
        torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-10)


def test_second_order_terms_are_there():
    # First- and second-order meta-gradients differ (the reference agrees
    # with each above), so the update is differentiated, not detached.
    params, rates, data = problem()
    first, second = (
        metakeras_meta_gradient(
            InnerLoop(steps=STEPS, first_order=f, optimizer=OPTIMIZERS["adam"]()),
            params,
            rates,
            data,
            None,
        )[1][0]
        for f in (True, False)
    )
    assert (first - second).abs().max() > 1e-3


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_adapted_weights_equal_keras_stepping_its_variables(name):
    # Keras's optimizer applied to variables with the same gradients: the
    # hyperparameters are read as Keras uses them.
    params, _, (sx, sy, _, _) = problem()
    params = [p.float() for p in params]
    sx, sy = sx.float(), sy.float()
    optimizer = OPTIMIZERS[name]()

    def loss(w, index=None):
        return ((forward(w, sx) - sy) ** 2).mean()

    fast = InnerLoop(steps=STEPS, optimizer=optimizer).run(loss, params)
    variables = [keras.Variable(p.clone()) for p in params]
    for _ in range(STEPS):
        values = [v.value.detach().requires_grad_() for v in variables]
        grads = torch.autograd.grad(loss(values), values)
        optimizer.apply(list(grads), variables)
    for got, variable in zip(fast, variables):
        torch.testing.assert_close(got, variable.value.detach(), rtol=1e-5, atol=1e-6)


def test_without_momentum_sgd_is_todays_default_exactly():
    params, rates, data = problem()
    today = metakeras_meta_gradient(
        InnerLoop(steps=STEPS, learning_rate=0.1), params, rates, data, None
    )
    for optimizer in (keras.optimizers.SGD(0.1), "sgd"):
        inner = InnerLoop(steps=STEPS, learning_rate=0.1, optimizer=optimizer)
        got = metakeras_meta_gradient(inner, params, rates, data, None)
        for a, b in zip(today[0] + list(today[1]), got[0] + list(got[1])):
            assert torch.equal(a, b)


@pytest.mark.parametrize("first_order", [False, True])
def test_vmap_over_tasks_equals_the_task_loop(first_order):
    params, _, _ = problem()
    generator = torch.Generator().manual_seed(1)
    xs = torch.randn(3, 8, 2, generator=generator, dtype=torch.float64).to(DEVICE)
    ys = torch.randn(3, 8, 1, generator=generator, dtype=torch.float64).to(DEVICE)
    inner = InnerLoop(
        steps=STEPS, first_order=first_order, optimizer=OPTIMIZERS["nesterov"]()
    )
    params = [p.clone().requires_grad_() for p in params]

    def task(x, y):
        def loss(w, index=None):
            return ((forward(w, x) - y) ** 2).mean()

        fast = inner.run(loss, params)
        return ((forward(fast, x) - y) ** 2).mean()

    batched = torch.func.vmap(task)(xs, ys).sum()
    looped = sum(task(x, y) for x, y in zip(xs, ys))
    torch.testing.assert_close(batched, looped)
    for a, b in zip(
        torch.autograd.grad(batched, params), torch.autograd.grad(looped, params)
    ):
        torch.testing.assert_close(a, b)


def test_adam_meta_gradient_is_finite_where_a_gradient_is_zero():
    # A weight whose inner gradient is exactly 0 (a dead ReLU unit): Adam's
    # sqrt(v) at v = 0 would give an infinite second derivative.
    w = torch.tensor([1.0, 2.0], device=DEVICE, requires_grad=True)
    inner = InnerLoop(steps=2, optimizer=keras.optimizers.Adam(0.1))
    (fast,) = inner.run(lambda p, index=None: (p[0][0] - 3.0) ** 2, [w])
    (grad,) = torch.autograd.grad((fast**2).sum(), [w])
    assert torch.isfinite(grad).all() and grad[1] == 2 * 2.0


@pytest.mark.parametrize(
    "optimizer, message",
    [
        (keras.optimizers.Adagrad(), r"Received: optimizer=Adagrad\(\.\.\.\)"),
        (keras.optimizers.AdamW(), r"or RMSprop. Received: optimizer=AdamW"),
        ("adamw", r"'rmsprop' or a keras.optimizers.SGD.*optimizer='adamw'"),
        (keras.optimizers.Adam(amsgrad=True), "does not support `amsgrad`"),
        (keras.optimizers.RMSprop(centered=True), "does not support `centered`"),
        (keras.optimizers.SGD(weight_decay=0.1), "`weight_decay`: received"),
        (keras.optimizers.SGD(clipnorm=1.0), r"use InnerLoop\(clipnorm=...\)"),
        (
            keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(0.1, 10)),
            "needs a constant learning rate; received the schedule CosineDecay",
        ),
    ],
)
def test_unsupported_optimizers_and_options_are_refused(optimizer, message):
    with pytest.raises(ValueError, match=message):
        InnerLoop(optimizer=optimizer)


def test_learning_rate_comes_from_the_optimizer_or_by_name():
    assert InnerLoop(optimizer=keras.optimizers.Adam(0.003)).learning_rate == 0.003
    assert InnerLoop(optimizer="adam", learning_rate=0.4).learning_rate == 0.4
    assert InnerLoop(optimizer="rmsprop").learning_rate == 0.01
    assert InnerLoop().learning_rate == 0.01
    with pytest.raises(ValueError, match="learning_rate=0.4 and an optimizer whose"):
        InnerLoop(learning_rate=0.4, optimizer=keras.optimizers.Adam(0.001))


def test_config_and_keras_file_round_trip(tmp_path):
    optimizer = keras.optimizers.SGD(0.2, momentum=0.7, nesterov=True)
    inner = InnerLoop(steps=2, optimizer=optimizer)
    again = InnerLoop.from_config(inner.get_config())
    assert again.get_config() == inner.get_config()
    assert "SGD(momentum=0.7, nesterov=True)" in repr(again)
    model = metakeras.MAML(dense_learner(seed=4), inner=inner)
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(informative_episodes(tasks=2, seed=1), batch_size=2, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert loaded.inner.get_config() == inner.get_config()
    episode = informative_episodes(tasks=1, seed=2)
    sx, sy = episode["support_x"][0], episode["support_y"][0]
    np.testing.assert_allclose(
        loaded.adapt(sx, sy).predict(sx, verbose=0),
        model.adapt(sx, sy).predict(sx, verbose=0),
        rtol=1e-6,
    )


@pytest.mark.parametrize("first_order", [False, True])
def test_maml_trains_alike_vectorized_and_task_by_task(first_order):
    updates = []
    for vectorize_tasks in (False, True):
        model = metakeras.MAML(
            dense_learner(seed=5),
            inner=InnerLoop(
                steps=2,
                first_order=first_order,
                optimizer=keras.optimizers.RMSprop(0.01, momentum=0.5),
                batch_size=4,
                shuffle=False,
            ),
            vectorize_tasks=vectorize_tasks,
        )
        model.compile(
            optimizer=keras.optimizers.SGD(1.0),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        before = model.learner.get_weights()
        model.train_on_batch(informative_episodes(tasks=3, seed=6))
        updates.append([a - b for a, b in zip(before, model.learner.get_weights())])
    assert np.abs(updates[0][0]).max() > 0
    for a, b in zip(*updates):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_meta_sgd_learns_its_rates_through_adam():
    model = metakeras.MetaSGD(
        dense_learner(seed=7), inner_steps=2, inner_optimizer="adam"
    )
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(informative_episodes(tasks=2, seed=8), batch_size=2, verbose=0)
    rates = keras.ops.convert_to_numpy(model.inner_rates[0])
    assert np.abs(rates - 0.01).max() > 0


def test_the_cuda_graph_key_of_a_model_with_an_inner_optimizer_is_hashable():
    # compile(jit_compile=True) keys its recorded graphs by this signature.
    optimizer = keras.optimizers.Adam(0.01, beta_1=0.5)
    model = metakeras.MAML(dense_learner(), inner_optimizer=optimizer)
    other = metakeras.MAML(dense_learner(), inner_optimizer="adam")
    assert hash(model._graph_signature()) is not None
    assert model._graph_signature() != other._graph_signature()
