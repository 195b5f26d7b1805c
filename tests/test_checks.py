"""The shared argument checks of `metakeras._checks`."""

import re

import numpy as np
import pytest

from metakeras import _checks


@pytest.mark.parametrize("value", [3, np.int64(3), np.int32(3), np.uint8(3)])
def test_is_int_accepts_python_and_numpy_integers(value):
    assert _checks.is_int(value)
    assert _checks.is_int(value, minimum=3)
    assert not _checks.is_int(value, minimum=4)


@pytest.mark.parametrize("value", [True, False, np.True_, 3.0, "3", None, [3]])
def test_is_int_refuses_bools_and_non_integers(value):
    assert not _checks.is_int(value)


def test_is_int_types_narrows_to_python_int():
    assert _checks.is_int(3, types=int)
    assert not _checks.is_int(np.int64(3), types=int)
    assert not _checks.is_int(True, types=int)


@pytest.mark.parametrize("value", [0.5, 2, np.float32(0.5), np.int64(2)])
def test_is_number_accepts_real_numbers(value):
    assert _checks.is_number(value, positive=True)


@pytest.mark.parametrize(
    "value", [True, np.False_, "1", None, complex(1, 0), float("nan"), float("inf")]
)
def test_is_number_refuses_bools_text_and_non_finite(value):
    assert not _checks.is_number(value)


def test_is_number_bounds_and_finiteness():
    assert _checks.is_number(0.0) and not _checks.is_number(0.0, positive=True)
    assert _checks.is_number(-1) and not _checks.is_number(-1, minimum=0)
    assert _checks.is_number(float("inf"), positive=True, finite=False)
    assert not _checks.is_number(float("nan"), positive=True, finite=False)
    assert not _checks.is_number(10**400)  # too large for a float
    assert _checks.is_number(10**400, finite=False)
    assert not _checks.is_number(np.float32(1), types=(int, float))


def test_is_fraction():
    for value in (0, 0.0, 0.5, np.float64(0.99)):
        assert _checks.is_fraction(value)
    for value in (1, 1.0, -0.1, float("nan"), True, False, "0.5"):
        assert not _checks.is_fraction(value)


def test_is_flag():
    assert _checks.is_flag(True) and _checks.is_flag(False)
    for value in (1, 0, "True", None, np.True_):
        assert not _checks.is_flag(value)
    assert _checks.is_flag(np.True_, types=(bool, np.bool_))


def test_is_choice_matches_bools_only_to_bools():
    assert _checks.is_choice(1, ("auto", 0, 1, 2))
    assert not _checks.is_choice(True, ("auto", 0, 1, 2))
    assert _checks.is_choice(True, (True, False, "auto"))
    assert not _checks.is_choice(1, ("a", "b"))


def test_check_int_message_echoes_name_and_value():
    with pytest.raises(ValueError, match=r"^`ways` must be a positive integer\. "):
        _checks.check_int("ways", 0)
    with pytest.raises(ValueError, match=r"Received: ways=True$"):
        _checks.check_int("ways", True)
    with pytest.raises(ValueError, match=r"^`seed` must be a non-negative integer"):
        _checks.check_int("seed", -1, 0)
    with pytest.raises(ValueError, match=r"must be an integer >= 3\. Received: k=2"):
        _checks.check_int("k", 2, 3)
    with pytest.raises(ValueError, match=r"must be an integer\. Received: k=1\.5"):
        _checks.check_int("k", 1.5, None)


def test_check_int_options():
    assert _checks.check_int("k", np.int64(4)) == 4
    assert _checks.check_int("k", None, none=True) is None
    with pytest.raises(ValueError, match=r"`k` must be None or a positive integer"):
        _checks.check_int("k", 0, none=True)
    with pytest.raises(ValueError, match=r"`k` must be odd\. Received: 'x'$"):
        _checks.check_int("k", "x", expected="odd", echo_name=False)
    with pytest.raises(ValueError, match="Received: k=np.int64"):
        _checks.check_int("k", np.int64(4), types=int)


def test_check_positive_ints_names_the_bad_one():
    _checks.check_positive_ints(shots=1, queries=np.int64(2))
    with pytest.raises(ValueError, match=r"`queries` must be .* queries=0"):
        _checks.check_positive_ints(shots=1, queries=0)


def test_check_number():
    assert _checks.check_number("lr", 0.1) == 0.1
    assert _checks.check_number("lr", None, none=True) is None
    for value in (0, -1.0, float("nan"), float("inf"), True, "0.1"):
        with pytest.raises(ValueError, match=r"^`lr` must be a positive number"):
            _checks.check_number("lr", value)
    with pytest.raises(ValueError, match=r"`lr` must be None or a positive number"):
        _checks.check_number("lr", 0, none=True)
    with pytest.raises(ValueError, match=r"`x` must be a number\. Received: x='a'"):
        _checks.check_number("x", "a", positive=False)


def test_check_flag():
    assert _checks.check_flag("shuffle", False) is False
    with pytest.raises(
        ValueError, match=r"^`shuffle` must be True or False\. Received: shuffle=1$"
    ):
        _checks.check_flag("shuffle", 1)
    with pytest.raises(ValueError, match=r"True or False or \"auto\"\. Received: 'a'"):
        _checks.check_flag(
            "v", "a", expected='True or False or "auto"', echo_name=False
        )


def test_check_choice_lists_the_choices():
    assert _checks.check_choice("mode", "a", ("a", "b")) == "a"
    message = "`mode` must be one of ['a', 'b']. Received: mode='c'"
    with pytest.raises(ValueError, match=re.escape(message)):
        _checks.check_choice("mode", "c", ("a", "b"))
    with pytest.raises(ValueError, match=re.escape("Received: True")):
        _checks.check_choice("verbose", True, (0, 1, 2), echo_name=False)


def test_resolve_seed():
    assert _checks.resolve_seed(np.int64(7)) == 7
    assert isinstance(_checks.resolve_seed(None), int)
    for value in (-1, True, 1.0):
        with pytest.raises(ValueError, match="`seed` must be None or a non-negative"):
            _checks.resolve_seed(value)


def test_preview():
    assert _checks.preview([1, 2, 3]) == "[1, 2, 3]"
    assert _checks.preview(np.arange(12), limit=3) == "[0, 1, 2, ...]"
    assert _checks.preview(np.array(["a", "b"])) == "['a', 'b']"
