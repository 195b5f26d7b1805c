import pytest
import torch

from metakeras import InnerLoop


def quadratic(target):
    return lambda w, index=None: ((w[0] - target) ** 2).sum()


def test_steps_follow_gradient_descent():
    target = torch.tensor([1.0, -2.0])
    start = [torch.zeros(2)]
    inner = InnerLoop(steps=3, learning_rate=0.1)
    fast = inner.run(quadratic(target), start)
    expected = torch.zeros(2)
    for _ in range(3):
        expected = expected - 0.1 * 2 * (expected - target)
    torch.testing.assert_close(fast[0], expected)
    assert torch.equal(start[0], torch.zeros(2))


def test_zero_steps_is_identity_and_steps_override():
    w = [torch.ones(3)]
    assert InnerLoop(steps=0).run(quadratic(torch.zeros(3)), w)[0] is w[0]
    fast = InnerLoop(steps=0, learning_rate=0.5).run(
        quadratic(torch.zeros(3)), w, steps=1
    )
    torch.testing.assert_close(fast[0], torch.zeros(3))


def test_second_order_and_first_order_gradients():
    # One step on f(w) = a*w^2/2 from w gives w' = w(1 - lr*a); the query
    # loss (w' - b)^2 has d/dw = 2(w' - b)(1 - lr*a) second order and
    # 2(w' - b) first order (the inner Jacobian taken as the identity).
    a, b, lr = 3.0, 0.5, 0.1
    for first_order, factor in ((False, 1 - lr * a), (True, 1.0)):
        w = torch.tensor(2.0, requires_grad=True)
        inner = InnerLoop(steps=1, learning_rate=lr, first_order=first_order)
        (fast,) = inner.run(lambda p, index: a * p[0] ** 2 / 2, [w])
        (grad,) = torch.autograd.grad((fast - b) ** 2, [w])
        expected = 2 * (2.0 * (1 - lr * a) - b) * factor
        assert grad.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"steps": -1}, "`steps` must be a non-negative integer"),
        ({"steps": 1.5}, "`steps`"),
        ({"learning_rate": 0}, "`learning_rate` must be a positive"),
        ({"learning_rate": float("nan")}, "`learning_rate` must be a positive"),
        ({"learning_rate": "0.1"}, "`learning_rate` must be a number"),
        ({"first_order": "yes"}, "`first_order`"),
        ({"batch_size": 0}, "`batch_size` must be None"),
        ({"shuffle": None}, "`shuffle`"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        InnerLoop(**kwargs)


def test_config_round_trip():
    inner = InnerLoop(steps=4, learning_rate=0.2, first_order=True, batch_size=3)
    assert InnerLoop.from_config(inner.get_config()).get_config() == inner.get_config()
    assert "steps=4" in repr(inner)


def regression_loss(x, y):
    def loss(w, index=None):
        xb, yb = (x, y) if index is None else (x[index], y[index])
        return ((xb @ w[0] - yb) ** 2).mean()

    return loss


def test_mini_batches_cover_the_support_set_pass_by_pass():
    torch.manual_seed(0)
    inner = InnerLoop(steps=5, batch_size=4)
    batches = inner.batches(num_examples=10)
    assert [len(b) for b in batches] == [4] * 5
    # two full batches per pass; each pass is a permutation without repeats
    for first, second in ((0, 1), (2, 3)):
        both = torch.cat([batches[first], batches[second]])
        assert len(set(both.tolist())) == 8
    ordered = InnerLoop(steps=3, batch_size=4, shuffle=False).batches(10)
    assert [b.tolist() for b in ordered] == [[0, 1, 2, 3], [4, 5, 6, 7], [0, 1, 2, 3]]
    assert InnerLoop(steps=3).batches(10) is None


def test_mini_batch_sgd_with_the_whole_support_matches_full_batch():
    torch.manual_seed(1)
    x, y = torch.randn(6, 3), torch.randn(6)
    w = [torch.randn(3)]
    full = InnerLoop(steps=4, learning_rate=0.1).run(regression_loss(x, y), w)
    sgd = InnerLoop(steps=4, learning_rate=0.1, batch_size=6)
    mini = sgd.run(regression_loss(x, y), w, batches=sgd.batches(6))
    torch.testing.assert_close(full[0], mini[0])
    smaller = InnerLoop(steps=4, learning_rate=0.1, batch_size=2)
    other = smaller.run(regression_loss(x, y), w, batches=smaller.batches(6))
    assert not torch.allclose(full[0], other[0])


def test_adapt_mask_freezes_weights_and_learning_rates_scale_steps():
    target = torch.tensor([1.0, 1.0])

    def loss(w, index=None):
        return ((w[0] - target) ** 2).sum() + ((w[1] - target) ** 2).sum()

    w = [torch.zeros(2), torch.zeros(2)]
    inner = InnerLoop(steps=1, learning_rate=0.25)
    frozen = inner.run(loss, w, adapt_mask=[False, True])
    assert frozen[0] is w[0]
    torch.testing.assert_close(frozen[1], torch.full((2,), 0.5))
    rates = [torch.tensor([0.5, 0.0]), torch.tensor(0.25)]
    scaled = inner.run(loss, w, learning_rates=rates)
    torch.testing.assert_close(scaled[0], torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(scaled[1], torch.full((2,), 0.5))


def test_constraints_apply_after_every_step():
    mask = torch.tensor([1.0, 0.0])
    w = [torch.ones(2)]
    fast = InnerLoop(steps=2, learning_rate=0.25).run(
        quadratic(torch.full((2,), 3.0)), w, constraints=[lambda t: t * mask]
    )
    # step 1: 1 - 0.25 * 2 * (1 - 3) = 2 -> masked [2, 0]; step 2: 2.5, masked 0
    torch.testing.assert_close(fast[0], torch.tensor([2.5, 0.0]))
