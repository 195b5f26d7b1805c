"""Argument checks shared by metakeras, with one message style.

Predicates (`is_int`, `is_number`, `is_fraction`, `is_flag`, `is_choice`)
say whether a value is valid; raisers (`check_int`, `check_number`,
`check_flag`, `check_choice`, ...) raise a `ValueError` in the project's
style, built by `invalid`:

    `{name}` must be {expected}. Received: {name}={value!r}

(`echo_name=False` gives `Received: {value!r}`, where a site always said
so). A bool is never a number here, though Python counts `True` as an
`int`; numpy integers and floats are numbers (`numbers.Integral`,
`numbers.Real`) unless a caller narrows `types` (e.g. `types=int`).
"""

import math
import numbers
import warnings

import numpy as np

_BOOLS = (bool, np.bool_)


def is_int(value, minimum=None, types=numbers.Integral):
    """Whether `value` is an integer (not a bool) and `>= minimum` if given."""
    return (
        not isinstance(value, _BOOLS)
        and isinstance(value, types)
        and (minimum is None or value >= minimum)
    )


def is_number(value, minimum=None, positive=False, finite=True, types=numbers.Real):
    """Whether `value` is a real number (not a bool) within the given bounds.

    Args:
        value: the value to judge.
        minimum: the smallest valid value, or `None` for no lower bound.
        positive: whether the value must be `> 0` (NaN never is).
        finite: whether NaN, infinities and integers beyond the float range
            are refused.
        types: the valid types; `(int, float)` refuses numpy's `float32`.
    """
    if isinstance(value, _BOOLS) or not isinstance(value, types):
        return False
    if finite and not _is_finite(value):
        return False
    if positive and not value > 0:
        return False
    return minimum is None or value >= minimum


def _is_finite(value):
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def is_fraction(value, types=numbers.Real):
    """Whether `value` is a number (not a bool) in `[0, 1)`."""
    return is_number(value, minimum=0, types=types) and value < 1


def is_flag(value, types=bool):
    """Whether `value` is True or False (`types=_BOOLS` admits `np.bool_`)."""
    return isinstance(value, types)


def is_choice(value, choices):
    """Whether `value` is one of `choices`; a bool only matches a bool."""
    if isinstance(value, bool):
        return any(isinstance(c, bool) and c == value for c in choices)
    return value in choices


def invalid(name, expected, value, echo_name=True):
    """The `ValueError` "`name` must be `expected`. Received: ...", to raise."""
    received = f"{name}={value!r}" if echo_name else repr(value)
    return ValueError(f"`{name}` must be {expected}. Received: {received}")


def _int_words(minimum):
    if minimum is None:
        return "an integer"
    return {0: "a non-negative integer", 1: "a positive integer"}.get(
        minimum, f"an integer >= {minimum}"
    )


def check_int(
    name,
    value,
    minimum=1,
    *,
    none=False,
    expected=None,
    echo_name=True,
    types=numbers.Integral,
):
    """Raises unless `value` is an integer `>= minimum` (or None if `none`).

    `expected` replaces the words for the valid values ("a positive
    integer", "None or a non-negative integer", ...). Returns `value`.
    """
    if (none and value is None) or is_int(value, minimum, types):
        return value
    if expected is None:
        expected = ("None or " if none else "") + _int_words(minimum)
    raise invalid(name, expected, value, echo_name)


def check_positive_ints(**values):
    """Raises unless every keyword's value is a positive integer, naming it."""
    for name, value in values.items():
        check_int(name, value)


def check_number(
    name,
    value,
    *,
    positive=True,
    finite=True,
    none=False,
    expected=None,
    echo_name=True,
    types=numbers.Real,
):
    """Raises unless `value` is a number (> 0 if `positive`), or None if `none`.

    `expected` replaces the words "a positive number". Returns `value`.
    """
    if (none and value is None) or is_number(
        value, positive=positive, finite=finite, types=types
    ):
        return value
    if expected is None:
        words = "a positive number" if positive else "a number"
        expected = ("None or " if none else "") + words
    raise invalid(name, expected, value, echo_name)


def check_flag(name, value, *, expected="True or False", echo_name=True):
    """Raises unless `value` is True or False. Returns `value`."""
    if not is_flag(value):
        raise invalid(name, expected, value, echo_name)
    return value


def check_choice(name, value, choices, *, echo_name=True):
    """Raises unless `value` is one of `choices`, listing them. Returns `value`."""
    if not is_choice(value, choices):
        raise invalid(name, f"one of {list(choices)}", value, echo_name)
    return value


def resolve_seed(seed):
    """`seed` as an int; `None` draws a random one. Raises for anything else."""
    if seed is None:
        seed = int(np.random.SeedSequence().generate_state(1)[0])
    check_int(
        "seed", seed, 0, expected="None or a non-negative integer", echo_name=False
    )
    return int(seed)


def preview(values, limit=10):
    """`values` as a short list for a message: `[1, 2, ...]` past `limit`."""
    values = list(np.asarray(values).tolist())
    text = ", ".join(repr(v) for v in values[:limit])
    return f"[{text}{', ...' if len(values) > limit else ''}]"


_UNSET = object()


def inner_steps_argument(kwargs, inner_steps, where, default=None):
    """`inner_steps`, or its deprecated name `steps` taken out of `kwargs`.

    `steps` counts batches in Keras and in metakeras's task sources
    (`TaskSampler(steps=...)`), so the number of inner gradient steps is
    `inner_steps` everywhere, as in the models' constructors. `steps=`
    still works, with a `DeprecationWarning`.

    Args:
        kwargs: the caller's `**kwargs`; must hold nothing but `steps`.
        inner_steps: the value passed as `inner_steps`.
        where: the function's name, for messages (e.g. `"MAML.adapt"`).
        default: `inner_steps`'s default. Defaults to `None`.

    Returns:
        The number of inner steps to use (or the setting passed).

    Raises:
        TypeError: for both names at once, or another unknown keyword.
    """
    steps = kwargs.pop("steps", _UNSET)
    if kwargs:
        raise TypeError(
            f"{where}() got unexpected keyword argument(s) {sorted(kwargs)}."
        )
    if steps is _UNSET:
        return inner_steps
    if inner_steps is not default and not (
        isinstance(inner_steps, str) and inner_steps == default
    ):
        raise TypeError(
            f"{where}() got both `inner_steps` and its deprecated name `steps` "
            f"(inner_steps={inner_steps!r}, steps={steps!r}); pass only `inner_steps`."
        )
    warnings.warn(
        f"`steps` of {where}() is renamed `inner_steps` (`steps` counts batches "
        f"in Keras and in task sources). Pass inner_steps={steps!r}.",
        DeprecationWarning,
        stacklevel=3,
    )
    return steps
