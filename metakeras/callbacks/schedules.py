"""Pruning schedules: how sparse the pruned weights are at each training step."""

import keras

from metakeras._checks import check_int, check_number, invalid, is_fraction


@keras.saving.register_keras_serializable(package="metakeras")
class PruningSchedule:
    """Base class of pruning schedules.

    A schedule maps the outer optimizer's step (`optimizer.iterations`, one
    step per meta-batch) to `(should_prune, sparsity)`: whether the masks are
    recomputed at that step and the fraction of weights they remove. The
    names and semantics follow TensorFlow Model Optimization, so schedules
    written for `tfmot.sparsity.keras` carry over.

    Subclasses implement `sparsity_at(step)` and `get_config()`.

    Args:
        begin_step: first step at which masks are computed. Defaults to `0`.
        end_step: last step at which masks are computed; `-1` for no end.
            Defaults to `-1`.
        frequency: masks are recomputed every `frequency` steps from
            `begin_step`. Defaults to `100`.

    Example:

    ```python
    class Steps(PruningSchedule):
        def sparsity_at(self, step):
            return 0.25 if step < 500 else 0.5

    pruning = metakeras.callbacks.MagnitudePruning(Steps(frequency=50))
    ```
    """

    def __init__(self, begin_step=0, end_step=-1, frequency=100):
        _check_int("begin_step", begin_step, minimum=0)
        _check_int("end_step", end_step, minimum=-1)
        _check_int("frequency", frequency, minimum=1)
        if end_step != -1 and end_step < begin_step:
            raise ValueError(
                "`end_step` must be -1 (no end) or >= `begin_step`. Received: "
                f"end_step={end_step}, begin_step={begin_step}."
            )
        self.begin_step = begin_step
        self.end_step = end_step
        self.frequency = frequency

    def __call__(self, step):
        """Returns `(should_prune, sparsity)` at an optimizer step.

        Args:
            step: the optimizer step (an integer >= 0).

        Returns:
            A tuple `(bool, float)`.
        """
        step = int(step)
        in_range = step >= self.begin_step and (
            self.end_step == -1 or step <= self.end_step
        )
        on_turn = (step - self.begin_step) % self.frequency == 0
        return in_range and on_turn, self.sparsity_at(step)

    def sparsity_at(self, step):
        """The scheduled sparsity at one step.

        Args:
            step: the outer optimizer's step (`optimizer.iterations`).

        Returns:
            The fraction of weights to prune, in [0, 1).
        """
        raise NotImplementedError(
            f"{type(self).__name__} must implement `sparsity_at(step)`."
        )

    def get_config(self):
        return {
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "frequency": self.frequency,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


@keras.saving.register_keras_serializable(package="metakeras")
class ConstantSparsity(PruningSchedule):
    """Prunes to one target sparsity, re-ranking every `frequency` steps.

    Weights pruned at `begin_step` are zero and so stay the smallest: later
    re-rankings at the same sparsity keep the same mask unless a kept weight
    has shrunk to exactly zero.

    Args:
        target_sparsity: fraction of weights set to zero, in [0, 1).
        begin_step: first step at which masks are computed. Defaults to `0`.
        end_step: last step at which masks are computed; `-1` for no end.
            Defaults to `-1`.
        frequency: steps between mask updates. Defaults to `100`.

    Raises:
        ValueError: for a sparsity outside [0, 1), negative steps or
            `end_step < begin_step`.

    Example:

    >>> schedule = ConstantSparsity(0.8, begin_step=10)
    >>> schedule(10)
    (True, 0.8)
    >>> schedule(11)
    (False, 0.8)
    """

    def __init__(self, target_sparsity, begin_step=0, end_step=-1, frequency=100):
        super().__init__(begin_step=begin_step, end_step=end_step, frequency=frequency)
        self.target_sparsity = _check_sparsity("target_sparsity", target_sparsity)

    def sparsity_at(self, step):
        return self.target_sparsity

    def get_config(self):
        return {"target_sparsity": self.target_sparsity, **super().get_config()}


@keras.saving.register_keras_serializable(package="metakeras")
class PolynomialDecay(PruningSchedule):
    """Raises sparsity from `initial_sparsity` to `final_sparsity` polynomially.

    Gradual pruning (Zhu and Gupta, 2017) lets the network recover between
    mask updates: at step `t` the sparsity is
    `final + (initial - final) * (1 - p) ** power` with
    `p = clip((t - begin_step) / (end_step - begin_step), 0, 1)`, so it rises
    fast at first and levels off at `final_sparsity` at `end_step`.

    Args:
        initial_sparsity: sparsity at `begin_step`, in [0, 1).
        final_sparsity: sparsity from `end_step` on, in [0, 1).
        begin_step: first step at which masks are computed.
        end_step: step at which `final_sparsity` is reached (must be
            > `begin_step`; `-1` is not allowed since the decay needs an
            end).
        power: exponent of the decay. Defaults to `3`.
        frequency: steps between mask updates. Defaults to `100`.

    Raises:
        ValueError: for a sparsity outside [0, 1), negative steps,
            `end_step <= begin_step` or a non-positive `power`.

    Example:

    >>> schedule = PolynomialDecay(0.0, 0.8, begin_step=0, end_step=100,
    ...                            frequency=10)
    >>> schedule(100)
    (True, 0.8)
    """

    def __init__(
        self,
        initial_sparsity,
        final_sparsity,
        begin_step,
        end_step,
        power=3,
        frequency=100,
    ):
        super().__init__(begin_step=begin_step, end_step=end_step, frequency=frequency)
        if end_step == -1 or end_step <= begin_step:
            raise ValueError(
                "`end_step` must be greater than `begin_step` for PolynomialDecay. "
                f"Received: begin_step={begin_step}, end_step={end_step}."
            )
        check_number("power", power, finite=False, echo_name=False)
        self.initial_sparsity = _check_sparsity("initial_sparsity", initial_sparsity)
        self.final_sparsity = _check_sparsity("final_sparsity", final_sparsity)
        self.power = power

    def sparsity_at(self, step):
        progress = (step - self.begin_step) / (self.end_step - self.begin_step)
        progress = min(1.0, max(0.0, progress))
        return (
            self.final_sparsity
            + (self.initial_sparsity - self.final_sparsity)
            * (1.0 - progress) ** self.power
        )

    def __call__(self, step):
        should_prune, sparsity = super().__call__(step)
        # The final sparsity is reached at `end_step` even when it is not on
        # the `frequency` grid, as in TensorFlow Model Optimization.
        return should_prune or int(step) == self.end_step, sparsity

    def get_config(self):
        config = super().get_config()
        return {
            "initial_sparsity": self.initial_sparsity,
            "final_sparsity": self.final_sparsity,
            "begin_step": config["begin_step"],
            "end_step": config["end_step"],
            "power": self.power,
            "frequency": config["frequency"],
        }


def _check_sparsity(name, value):
    if not is_fraction(value):
        raise invalid(
            name,
            "a number in [0, 1) (the fraction of weights set to zero; 1 would "
            "remove every weight)",
            value,
        )
    return float(value)


def _check_int(name, value, minimum):
    check_int(name, value, None)
    if value < minimum:
        raise invalid(name, f">= {minimum}", value)
