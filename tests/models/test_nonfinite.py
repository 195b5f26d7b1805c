"""Non-finite losses stop or skip a meta-update; inner and outer clipping."""

import keras
import numpy as np
import pytest
import torch
from conftest import mlp, sine_episodes

import metakeras
from metakeras import InnerLoop


def weights_of(model):
    return [np.array(w) for w in model.get_weights()]


def assert_unchanged(before, model):
    for a, b in zip(before, weights_of(model)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("vectorize_tasks", [False, True])
def test_a_diverging_inner_loop_is_named_with_its_task_and_step(vectorize_tasks):
    model = metakeras.MAML(
        mlp(hidden=8),
        inner_steps=3,
        inner_learning_rate=1e6,
        vectorize_tasks=vectorize_tasks,
    )
    model.compile("adam", loss="mse")
    before = weights_of(model)
    with pytest.raises(
        FloatingPointError,
        match=r"inner loop of task 0 of the meta-batch.* inner step [1-3]",
    ):
        model.train_on_batch(sine_episodes())
    assert_unchanged(before, model)
    assert int(model.optimizer.iterations) == 0


def test_a_non_finite_query_loss_is_named_as_the_outer_loss():
    data = sine_episodes()
    data["query_y"][2] = 1e30  # finite targets whose squared error overflows
    model = metakeras.MAML(mlp(hidden=8), inner_steps=2, inner_learning_rate=0.01)
    model.compile("adam", loss="mse")
    before = weights_of(model)
    with pytest.raises(
        FloatingPointError,
        match=r"query loss \(outer loop\) of task 2 .* inner loop stayed finite",
    ):
        model.train_on_batch(data)
    assert_unchanged(before, model)


def test_reptile_names_its_inner_loop_too():
    model = metakeras.Reptile(mlp(hidden=8), inner_steps=3, inner_learning_rate=1e6)
    model.compile(keras.optimizers.SGD(1.0), loss="mse")
    with pytest.raises(FloatingPointError, match="inner loop of task"):
        model.train_on_batch(sine_episodes())


def test_skip_mode_leaves_weights_unchanged_and_counts_the_skipped_batches():
    good, bad = sine_episodes(tasks=2, seed=1), sine_episodes(tasks=2, seed=2)
    bad["query_y"][:] = 1e30
    data = {k: np.concatenate([bad[k], good[k], bad[k]]) for k in good}
    model = metakeras.MAML(mlp(hidden=8), inner_steps=1, inner_learning_rate=0.01)
    model.compile(keras.optimizers.SGD(0.1), loss="mse", on_nonfinite="skip")
    # Only the good meta-batch moves the weights: the same as training on it.
    reference = metakeras.MAML(
        keras.models.clone_model(model.learner), inner_steps=1, inner_learning_rate=0.01
    )
    reference.learner.set_weights(model.learner.get_weights())
    reference.compile(keras.optimizers.SGD(0.1), loss="mse")
    expected = reference.train_on_batch(good, return_dict=True)
    history = model.fit(data, batch_size=2, epochs=1, shuffle=False, verbose=0)
    assert history.history["skipped_batches"] == [2.0]
    assert int(model.optimizer.iterations) == 1
    np.testing.assert_allclose(history.history["loss"][0], expected["loss"], rtol=1e-5)
    for a, b in zip(weights_of(model), weights_of(reference)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    # The next epoch counts afresh.
    history = model.fit(bad, batch_size=2, epochs=1, verbose=0)
    assert history.history["skipped_batches"] == [1.0]


def test_ignore_mode_applies_the_update_as_plain_keras_does():
    model = metakeras.MAML(mlp(hidden=8), inner_steps=3, inner_learning_rate=1e6)
    model.compile("sgd", loss="mse", on_nonfinite="ignore")
    model.train_on_batch(sine_episodes())
    assert not all(np.isfinite(w).all() for w in weights_of(model))


def test_on_nonfinite_is_validated_and_saved(tmp_path):
    model = metakeras.MAML(mlp(hidden=8))
    with pytest.raises(ValueError, match=r"`on_nonfinite` must be one of .*'maybe'"):
        model.compile("adam", loss="mse", on_nonfinite="maybe")
    model.compile("adam", loss="mse", on_nonfinite="skip")
    model.train_on_batch(sine_episodes())
    path = str(tmp_path / "m.keras")
    model.save(path)
    restored = keras.models.load_model(path)
    assert restored.on_nonfinite == "skip"


# ------------------------------------------------------------------ clipping


def _manual_step(model, x, y, lr, clip):
    """One clipped SGD step on the support loss, computed directly in torch."""
    weights = [
        torch.tensor(np.array(w), requires_grad=True)
        for w in model.learner.get_weights()
    ]
    kernel1, bias1, kernel2, bias2 = weights
    hidden = torch.tanh(torch.from_numpy(x) @ kernel1 + bias1)
    loss = torch.mean((hidden @ kernel2 + bias2 - torch.from_numpy(y)) ** 2)
    grads = torch.autograd.grad(loss, weights)
    out = []
    for w, g in zip(weights, grads):
        norm = float(torch.linalg.vector_norm(g))
        out.append((w - lr * g * (clip / max(norm, clip))).detach().numpy())
    return out


def test_inner_clipnorm_clips_each_step_in_adapt_and_evaluation():
    data = sine_episodes(tasks=2)
    model = metakeras.MAML(
        mlp(hidden=8), inner_steps=1, inner_learning_rate=0.5, inner_clipnorm=0.05
    )
    model.compile("adam", loss="mse")
    x, y = data["support_x"][0], data["support_y"][0]
    adapted = model.adapt(x, y)
    expected = _manual_step(model, x, y, 0.5, 0.05)
    for got, want in zip(adapted.get_weights(), expected):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # Evaluation adapts with the same clipped inner loop.
    batched = model.adapt_and_predict(
        data["support_x"], data["support_y"], data["query_x"]
    )
    np.testing.assert_allclose(
        batched[0], adapted.predict(data["query_x"][0], verbose=0), rtol=1e-5
    )


def test_inner_global_clipnorm_bounds_the_joint_step():
    inner = InnerLoop(steps=1, learning_rate=1.0, global_clipnorm=0.1)
    start = [torch.ones(3), torch.ones(2)]

    def loss_fn(weights, index=None):
        return 1e3 * sum(torch.sum(w**2) for w in weights)

    fast = inner.run(loss_fn, start)
    step = torch.cat([(a - b).reshape(-1) for a, b in zip(start, fast)])
    assert float(torch.linalg.vector_norm(step)) == pytest.approx(0.1, rel=1e-5)
    # Clipping is differentiable, also for a zero gradient (no NaN).
    zero = [torch.zeros(3, requires_grad=True)]
    fast = InnerLoop(steps=2, learning_rate=1.0, clipnorm=1.0).run(
        lambda w, index=None: torch.sum(w[0] ** 2), zero
    )
    (grad,) = torch.autograd.grad(fast[0].sum(), zero)
    assert torch.isfinite(grad).all()


def test_inner_clipping_lets_a_diverging_learning_rate_train():
    model = metakeras.MAML(
        mlp(hidden=8), inner_steps=3, inner_learning_rate=1e6, inner_clipnorm=1e-7
    )
    model.compile("adam", loss="mse")
    logs = model.train_on_batch(sine_episodes(), return_dict=True)
    assert np.isfinite(logs["loss"])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"clipnorm": 0}, "`clipnorm` must be None or a positive finite"),
        ({"global_clipnorm": float("inf")}, "`global_clipnorm` must be None"),
        ({"clipnorm": 1.0, "global_clipnorm": 1.0}, "Only one of"),
        ({"clipnorm": True}, "`clipnorm`"),
    ],
)
def test_inner_clipping_arguments_are_validated(kwargs, match):
    with pytest.raises(ValueError, match=match):
        InnerLoop(**kwargs)


def test_inner_clipping_round_trips_through_get_config(tmp_path):
    model = metakeras.MetaSGD(mlp(hidden=8), inner_global_clipnorm=2.0)
    model.compile("adam", loss="mse")
    model.train_on_batch(sine_episodes())
    path = str(tmp_path / "m.keras")
    model.save(path)
    restored = keras.models.load_model(path)
    assert restored.inner.global_clipnorm == 2.0
    assert InnerLoop.from_config(InnerLoop(clipnorm=3).get_config()).clipnorm == 3.0


@pytest.mark.parametrize("option", ["clipnorm", "global_clipnorm"])
def test_outer_optimizer_clipping_works_with_meta_models(option):
    model = metakeras.MAML(mlp(hidden=8), inner_steps=1, inner_learning_rate=0.01)
    model.compile(keras.optimizers.SGD(1.0, **{option: 1e-3}), loss="mse")
    before = weights_of(model)
    model.train_on_batch(sine_episodes())
    steps = [b - a for a, b in zip(before, weights_of(model))]
    norms = [np.linalg.norm(s) for s in steps]
    if option == "clipnorm":
        assert max(norms) <= 1e-3 * (1 + 1e-4)
    else:
        assert np.sqrt(sum(n**2 for n in norms)) == pytest.approx(1e-3, rel=1e-3)


def test_adapt_names_the_weight_when_adaptation_diverges():
    data = sine_episodes(tasks=1)
    model = metakeras.MAML(mlp(hidden=8), inner_steps=40, inner_learning_rate=1e6)
    model.compile("adam", loss="mse")
    x, y = data["support_x"][0], data["support_y"][0]
    with pytest.raises(
        ValueError, match=r"Adaptation diverged: the adapted weight .* 40 inner"
    ):
        model.adapt(x, y)
    # A clipped inner loop stays finite at the same rate.
    clipped = metakeras.MAML(
        mlp(hidden=8), inner_steps=40, inner_learning_rate=1e6, inner_clipnorm=1e-6
    )
    clipped.compile("adam", loss="mse")
    clipped.adapt(x, y)
