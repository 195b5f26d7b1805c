"""Keras progress bars for the library's long phases (evaluation, fits)."""

import sys

import keras

from metakeras._checks import check_choice

_VERBOSE = ("auto", 0, 1, 2)


def resolve_verbose(verbose, name="verbose"):
    """Checks a Keras-style `verbose` and turns `"auto"` into 0, 1 or 2.

    `"auto"` is a live progress bar (1) on an interactive terminal and one
    summary line at the end (2) otherwise, so logs and notebooks run
    without a terminal do not fill with a line per update.

    Args:
        verbose: `"auto"`, `0` (silent), `1` (progress bar) or `2` (one line
            when done).
        name: the argument's name, for the error message. Defaults to
            `"verbose"`.

    Returns:
        `0`, `1` or `2`.

    Raises:
        ValueError: for any other value.
    """
    check_choice(name, verbose, _VERBOSE)
    if verbose == "auto":
        return 1 if _interactive() else 2
    return int(verbose)


def progress_bar(verbose, target, unit_name):
    """A `keras.utils.Progbar`, or `None` when `verbose` is 0.

    Args:
        verbose: as `resolve_verbose` returns it.
        target: the number of units, or `None` if unknown.
        unit_name: what one unit is (`"episode"`, `"task"`).

    Returns:
        A `keras.utils.Progbar` or `None`.
    """
    if not verbose:
        return None
    return keras.utils.Progbar(target, verbose=verbose, unit_name=unit_name)


def _interactive():
    stdout = sys.stdout
    return bool(getattr(stdout, "isatty", None) and stdout.isatty()) or (
        "ipykernel" in sys.modules
    )
