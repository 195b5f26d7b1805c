import pytest
import torch

from metakeras import InnerLoop


def quadratic(target):
    return lambda w: ((w[0] - target) ** 2).sum()


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
        (fast,) = inner.run(lambda p: a * p[0] ** 2 / 2, [w])
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
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        InnerLoop(**kwargs)


def test_config_round_trip():
    inner = InnerLoop(steps=4, learning_rate=0.2, first_order=True)
    assert InnerLoop.from_config(inner.get_config()).get_config() == inner.get_config()
    assert "steps=4" in repr(inner)
