"""Valid values of the command's settings, one rule for flags and config files.

A setting arrives either as a Python value (a TOML or YAML file, or a
caller of `resolve_config`) or as the text of a flag. The predicates here
judge values (`FIELDS` in `_config.py` names them); the `parse_*` argparse
types convert a flag's text and then apply the same predicate, so `ways = 0`
in a file and `--ways 0` are refused by one rule. The predicates are those
of `metakeras._checks`, for Python's own `int` and `float` (what a file or a
flag gives).
"""

import argparse

from metakeras._checks import is_fraction, is_int, is_number
from metakeras._inner_rules import OPTIMIZERS


def positive_int(value):
    """Whether `value` is an integer >= 1 (a bool is not)."""
    return is_int(value, 1, types=int)


def non_negative_int(value):
    """Whether `value` is an integer >= 0 (a bool is not)."""
    return is_int(value, 0, types=int)


def fraction(value):
    """Whether `value` is a number in `[0, 1)` (a bool is not)."""
    return is_fraction(value, types=(int, float))


def positive_number(value):
    """Whether `value` is a finite number > 0 (a bool is not)."""
    return is_number(value, positive=True, types=(int, float))


def non_negative_number(value):
    """Whether `value` is a finite number >= 0 (a bool is not)."""
    return is_number(value, minimum=0, types=(int, float))


def _flag_type(convert, valid, expected):
    """An argparse type: `convert(text)`, accepted when `valid(value)`.

    Args:
        convert: turns the flag's text into a value (`int`, `float`); a
            `ValueError` counts as invalid.
        valid: the predicate the value must pass.
        expected: the valid values in words, for the error message.

    Returns:
        A function of the flag's text that returns the value or raises
        `argparse.ArgumentTypeError("expected <expected>, got '<text>'")`.
    """

    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not valid(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


parse_positive_int = _flag_type(int, positive_int, "a positive integer")
parse_non_negative_int = _flag_type(int, non_negative_int, "an integer >= 0")
parse_positive_number = _flag_type(float, positive_number, "a positive number")
parse_non_negative_number = _flag_type(float, non_negative_number, "a number >= 0")
parse_fraction = _flag_type(float, fraction, "a number in [0, 1)")
parse_inner_optimizer = _flag_type(
    str.lower, lambda v: v in OPTIMIZERS, f"one of {', '.join(OPTIMIZERS)}"
)


def parse_bool(text):
    """An argparse type for true-or-false flags (`true`, `yes`, `1`, `on`, ...).

    Args:
        text: the flag's text, in any case.

    Returns:
        `True` or `False`.

    Raises:
        argparse.ArgumentTypeError: for any other text.
    """
    lowered = text.lower()
    if lowered in ("true", "yes", "1", "on"):
        return True
    if lowered in ("false", "no", "0", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
