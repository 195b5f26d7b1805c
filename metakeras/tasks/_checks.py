"""Argument checks shared by the task sources (`TaskSampler`, `SinusoidTasks`,
`GroupedTasks`), with the same messages in all of them."""

import numbers

import numpy as np


def check_positive_ints(**sizes):
    """Raises unless every value is a positive integer (not a bool), naming it."""
    for name, value in sizes.items():
        if (
            isinstance(value, (bool, np.bool_))
            or not isinstance(value, numbers.Integral)
            or value < 1
        ):
            raise ValueError(
                f"`{name}` must be a positive integer. Received: {name}={value!r}"
            )


def resolve_seed(seed):
    """`seed` as an int; `None` draws a random one. Raises for anything else."""
    if seed is None:
        seed = int(np.random.SeedSequence().generate_state(1)[0])
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(
            f"`seed` must be None or a non-negative integer. Received: {seed!r}"
        )
    return int(seed)


def check_flag(name, value):
    """Raises unless `value` is True or False."""
    if not isinstance(value, bool):
        raise ValueError(f"`{name}` must be True or False. Received: {value!r}")
