"""The settings an algorithm of `metakeras.models.registry` can take.

Each `Setting` is one option of the estimators, the command line and the
models (an `InnerLoop` argument, a model flag or a training callback), with
its type, its check and its flag; the registry says which algorithm takes
which, with what default.
"""

import numpy as np

from metakeras._checks import check_choice, is_flag, is_int, is_number
from metakeras._inner_rules import OPTIMIZERS

TASKS = ("classification", "regression")


def _is_optimizer_name(value):
    return isinstance(value, str) and value.lower() in OPTIMIZERS


_KINDS = {
    # kind: (check, description of valid values, conversion)
    "count": (lambda v: is_int(v, 0), "an integer >= 0", int),
    "size": (lambda v: is_int(v, 1), "a positive integer", int),
    "rate": (lambda v: is_number(v, positive=True), "a positive number", float),
    "damping": (lambda v: is_number(v, minimum=0), "a number >= 0", float),
    "flag": (lambda v: is_flag(v, types=(bool, np.bool_)), "true or false", bool),
    "optimizer": (
        _is_optimizer_name,
        f"one of {', '.join(OPTIMIZERS)}",
        lambda v: v.lower(),
    ),
}


def _zero_head():
    from metakeras.callbacks import ZeroHead

    return ZeroHead()


class Setting:
    """One setting of the algorithms, as the estimators and the CLI offer it.

    A setting is a keyword argument of the model classes (`inner_steps`, ...)
    or a training callback switched on by a flag (`zero_head`). `None` as a
    value means "not given": the algorithm's default applies.

    Args:
        name: the keyword, estimator parameter and configuration key; the
            command-line flag is the name with dashes (`--inner-steps`).
        kind: `"count"` (an integer >= 0), `"size"` (a positive integer),
            `"rate"` (a positive number), `"damping"` (a number >= 0),
            `"flag"` (true or false) or
            `"optimizer"` (the name of an inner optimizer, `"sgd"`,
            `"adam"` or `"rmsprop"`).
        help: one line saying what it does.
        callback: `None` for a model argument, else a function returning
            the `keras.callbacks.Callback` that the setting, when true, adds
            to training. Defaults to `None`.
        none: what the value `None` means where it is the default (`"all
            support examples"`). Defaults to `None`.

    Example:

    >>> setting = get_setting("inner_clipnorm")
    >>> setting.check(1.0), setting.check(-1)
    (True, False)
    """

    def __init__(self, name, kind, help, callback=None, none=None):
        check_choice("kind", kind, _KINDS, echo_name=False)
        self.name = name
        self.kind = kind
        self.help = help
        self.callback = callback
        self.none = none

    @property
    def flag(self):
        """The command-line flag, e.g. `--inner-steps`."""
        return "--" + self.name.replace("_", "-")

    @property
    def what(self):
        """Description of the valid values, e.g. `"a positive integer"`."""
        return _KINDS[self.kind][1]

    def check(self, value):
        """Whether `value` is valid (not `None`) for this setting.

        Args:
            value: the value to check.

        Returns:
            `True` or `False`.
        """
        return bool(_KINDS[self.kind][0](value))

    def convert(self, value):
        """`value` as the plain Python type the models take (`None` stays).

        Args:
            value: a valid value (NumPy scalars included) or `None`.

        Returns:
            An `int`, `float`, `bool`, `str` or `None`.
        """
        return None if value is None else _KINDS[self.kind][2](value)

    def __repr__(self):
        return f"Setting({self.name!r}, {self.kind!r})"


# Every setting, in the order of the command line's help and config.json: one
# per `InnerLoop` argument (`metakeras.inner.SHORTHANDS`), then the others.
_NO_CLIP = "no clipping"
SETTINGS = (
    Setting("inner_steps", "count", "inner gradient steps per task"),
    Setting(
        "inner_learning_rate",
        "rate",
        "inner step size (metasgd: the start of its learned rates)",
    ),
    Setting(
        "first_order",
        "flag",
        "first-order meta-gradient (the inner gradients as constants)",
    ),
    Setting(
        "inner_batch_size",
        "size",
        "support examples per inner step",
        none="all support examples",
    ),
    Setting(
        "inner_shuffle",
        "flag",
        "draw inner mini-batches (inner_batch_size) from a fresh permutation "
        "of the support set",
    ),
    Setting(
        "inner_clipnorm",
        "rate",
        "clip each weight's inner gradient to this L2 norm at every inner step",
        none=_NO_CLIP,
    ),
    Setting(
        "inner_global_clipnorm",
        "rate",
        "clip the joint L2 norm of all inner gradients to this at every inner step",
        none=_NO_CLIP,
    ),
    Setting(
        "inner_optimizer",
        "optimizer",
        "the inner update rule: Keras's SGD, Adam or RMSprop at "
        "inner_learning_rate, differentiated through",
        none="plain gradient descent",
    ),
    Setting(
        "per_step_bn_statistics",
        "flag",
        "keep BatchNormalization moving statistics per inner step (MAML++); "
        "needs BatchNormalization layers",
        none="when the learner has BatchNormalization layers",
    ),
    Setting(
        "proximal_lambda",
        "rate",
        "imaml: strength of the proximal term that keeps the adapted weights "
        "near the initialisation",
    ),
    Setting(
        "cg_steps",
        "size",
        "imaml: conjugate-gradient steps (Hessian-vector products) per task",
    ),
    Setting(
        "cg_damping",
        "damping",
        "imaml: damping added to the Hessian's diagonal in the conjugate-gradient "
        "system (0: undamped)",
    ),
    Setting(
        "transductive_eval",
        "flag",
        "at evaluation, normalise each query set with its own batch statistics",
    ),
    Setting(
        "zero_head",
        "flag",
        "keep the learner's head at zero between meta-updates (the zeroing "
        "trick, metakeras.callbacks.ZeroHead)",
        callback=_zero_head,
    ),
)
_SETTINGS = {setting.name: setting for setting in SETTINGS}


def get_setting(name):
    """The `Setting` of a name.

    Args:
        name: a setting name, e.g. `"inner_clipnorm"`.

    Returns:
        A `Setting`.

    Raises:
        ValueError: for an unknown name (the valid ones are listed).

    Example:

    >>> get_setting("zero_head").flag
    '--zero-head'
    """
    if name not in _SETTINGS:
        raise ValueError(
            f"Unknown setting {name!r}; valid settings: {', '.join(_SETTINGS)}."
        )
    return _SETTINGS[name]
