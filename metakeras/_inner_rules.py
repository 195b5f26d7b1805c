"""Differentiable update rules of the inner loop, read from Keras optimizers.

`InnerLoop(optimizer=...)` takes a `keras.optimizers.SGD` (with momentum
and Nesterov), `Adam` or `RMSprop`. Keras's own `apply` assigns to
variables, which the outer gradient cannot see through; here each rule is
the same arithmetic as the optimizer's `update_step`, written as a pure
function `(weight, gradient, slots, rate, step) -> (weight, slots)` of
tensors, with the slots (momentum, second moments) carried from step to
step. Second-order MAML differentiates through every operation, as the
functional optimizers of torchopt and higher do; `torch.func.vmap` batches
them over tasks.
"""

import copy

import keras
import torch

from metakeras._checks import invalid

# The supported optimizers by the name `keras.optimizers.get` knows them.
OPTIMIZERS = {
    "sgd": keras.optimizers.SGD,
    "adam": keras.optimizers.Adam,
    "rmsprop": keras.optimizers.RMSprop,
}
_CHOICES = "None, 'sgd', 'adam', 'rmsprop' or a keras.optimizers.SGD, Adam or RMSprop"
# Options of every Keras optimizer that the inner loop does not implement,
# with what they are when unused, and what to use instead.
_UNSUPPORTED = {
    "weight_decay": (None, "add a weight penalty to the task loss instead"),
    "clipnorm": (None, "use InnerLoop(clipnorm=...)"),
    "global_clipnorm": (None, "use InnerLoop(global_clipnorm=...)"),
    "clipvalue": (None, "clip by norm with InnerLoop(clipnorm=...)"),
    "use_ema": (False, "an inner loop keeps no moving average of its weights"),
    "gradient_accumulation_steps": (None, "use InnerLoop(batch_size=...)"),
    "loss_scale_factor": (None, "the inner loop runs without loss scaling"),
    "amsgrad": (False, "use Adam without amsgrad"),
    "centered": (False, "use RMSprop without centered"),
}


def as_optimizer(optimizer):
    """The Keras optimizer that `InnerLoop(optimizer=...)` describes.

    Args:
        optimizer: `None`, a name of `OPTIMIZERS`, a serialized optimizer
            (a `get_config` dict, as `.keras` files hold) or an instance.

    Returns:
        A `keras.optimizers.SGD`, `Adam` or `RMSprop`, or `None`.

    Raises:
        ValueError: for another optimizer or value (the message lists the
            supported ones).
    """
    if optimizer is None:
        return None
    if isinstance(optimizer, str) and optimizer.lower() in OPTIMIZERS:
        return OPTIMIZERS[optimizer.lower()]()
    if isinstance(optimizer, dict):
        try:
            # `deserialize` edits the dict it reads.
            optimizer = keras.optimizers.deserialize(copy.deepcopy(optimizer))
        except (TypeError, ValueError) as error:
            raise invalid("optimizer", _CHOICES, optimizer) from error
    # On the torch backend `keras.optimizers.Adam()` is an instance of a
    # backend subclass of the same name; AdamW and other subclasses change
    # the update and are refused.
    known = {cls.__name__: cls for cls in OPTIMIZERS.values()}
    name = type(optimizer).__name__
    if name not in known or not isinstance(optimizer, known[name]):
        if isinstance(optimizer, keras.optimizers.Optimizer):
            raise ValueError(
                f"`optimizer` must be {_CHOICES}. Received: optimizer={name}(...)"
            )
        raise invalid("optimizer", _CHOICES, optimizer)
    return optimizer


def update_rule(optimizer):
    """The differentiable update rule of a Keras optimizer.

    Args:
        optimizer: a `keras.optimizers.SGD`, `Adam` or `RMSprop` (see
            `as_optimizer`).

    Returns:
        An `SGDRule`, `AdamRule` or `RMSpropRule` with the optimizer's
        hyperparameters.

    Raises:
        ValueError: for a learning-rate schedule or an option the rules do
            not implement (`amsgrad`, `centered`, `weight_decay`, clipping,
            EMA, ...): the message names the option and what to use.
    """
    name = type(optimizer).__name__
    rate = optimizer._learning_rate
    if isinstance(rate, keras.optimizers.schedules.LearningRateSchedule):
        raise ValueError(
            f"InnerLoop(optimizer={name}(...)) needs a constant learning "
            f"rate; received the schedule {type(rate).__name__}. An inner "
            "loop restarts for every task, so a schedule over optimizer "
            "iterations does not apply; for per-step rates use "
            "`per_step_learning_rates=True` (MAML, MAML++)."
        )
    for option, (unused, advice) in _UNSUPPORTED.items():
        value = getattr(optimizer, option, unused)
        if value not in (unused, 0, 0.0):
            raise ValueError(
                f"InnerLoop(optimizer={name}(...)) does not support "
                f"`{option}`: received {option}={value!r}. Supported: "
                "SGD(learning_rate, momentum, nesterov), Adam(learning_rate, "
                "beta_1, beta_2, epsilon), RMSprop(learning_rate, rho, "
                f"momentum, epsilon); {advice}."
            )
    config = optimizer.get_config()
    if name == "SGD":
        return SGDRule(config["momentum"], config["nesterov"])
    if name == "Adam":
        return AdamRule(config["beta_1"], config["beta_2"], config["epsilon"])
    return RMSpropRule(config["rho"], config["momentum"], config["epsilon"])


def learning_rate_of(optimizer):
    """The constant learning rate of a Keras optimizer, as a float.

    Keras keeps it in a float32 variable; its shortest decimal form gives
    back the number written (`Adam(0.001)`: 0.001, not 0.0010000000475).
    """
    return float(str(keras.ops.convert_to_numpy(optimizer.learning_rate)))


class SGDRule:
    """Keras's SGD: `m <- momentum * m - rate * g; w <- w + m` (or Nesterov)."""

    def __init__(self, momentum=0.0, nesterov=False):
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)

    @property
    def plain(self):
        """Whether the rule is `w - rate * g` (no slots)."""
        return self.momentum == 0

    def slots(self, weight):
        return [] if self.plain else [torch.zeros_like(weight)]

    def update(self, weight, gradient, slots, rate, step):
        if self.plain:
            return weight - rate * gradient, []
        (m,) = slots
        m = self.momentum * m - rate * gradient
        if self.nesterov:
            return weight + (self.momentum * m - rate * gradient), [m]
        return weight + m, [m]


class AdamRule:
    """Keras's Adam, bias correction in the step size as Keras computes it."""

    def __init__(self, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
        self.beta_1 = float(beta_1)
        self.beta_2 = float(beta_2)
        self.epsilon = float(epsilon)
        self.plain = False

    def slots(self, weight):
        return [torch.zeros_like(weight), torch.zeros_like(weight)]

    def update(self, weight, gradient, slots, rate, step):
        m, v = slots
        t = step + 1
        alpha = rate * ((1 - self.beta_2**t) ** 0.5 / (1 - self.beta_1**t))
        m = m + (gradient - m) * (1 - self.beta_1)
        v = v + (torch.square(gradient) - v) * (1 - self.beta_2)
        return weight - m * alpha / (_sqrt(v) + self.epsilon), [m, v]


class RMSpropRule:
    """Keras's RMSprop (not centered), with or without momentum."""

    def __init__(self, rho=0.9, momentum=0.0, epsilon=1e-7):
        self.rho = float(rho)
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.plain = False

    def slots(self, weight):
        count = 2 if self.momentum > 0 else 1
        return [torch.zeros_like(weight) for _ in range(count)]

    def update(self, weight, gradient, slots, rate, step):
        velocity = self.rho * slots[0] + (1 - self.rho) * torch.square(gradient)
        increment = rate * gradient / torch.sqrt(velocity + self.epsilon)
        if self.momentum > 0:
            momentum = self.momentum * slots[1] + increment
            return weight - momentum, [velocity, momentum]
        return weight - increment, [velocity]


def _sqrt(value):
    """`sqrt(value)` for `value >= 0` with a finite derivative at 0.

    Adam divides by `sqrt(v)`, whose derivative is infinite where `v` is 0
    (a weight whose gradient was exactly 0, as behind a dead ReLU); second
    order would turn that into NaN. Where `value` is 0 the result is 0 with
    derivative 0 (the numerator `m` is 0 there too).
    """
    positive = value > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, value, 1.0)), 0.0)


def describe(rule):
    """A short text of a rule and its hyperparameters, e.g. for `repr`."""
    name = type(rule).__name__.removesuffix("Rule")
    values = ", ".join(
        f"{key}={value!r}" for key, value in vars(rule).items() if key != "plain"
    )
    return f"{name}({values})"
