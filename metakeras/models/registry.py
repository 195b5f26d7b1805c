"""The meta-learning algorithms by name, with their documented default settings.

This module is the one list of algorithm names and of the settings that
choose how they learn (the inner loop, BatchNormalization statistics,
evaluation mode, the zeroing trick). The scikit-learn estimators
(`metakeras.sklearn`), the command line (`metakeras train`: its flags and
configuration-file keys) and the demo read it, so an algorithm or a setting
added here is offered everywhere at once.

`get(name)` returns an `Algorithm`: its class, the settings it takes and
their defaults for a task type (`"classification"` or `"regression"`), and
`create`, which builds the model from a learner.

Defaults, per algorithm (`-`: the setting does not apply; the command line
refuses it, the estimators ignore it):

| setting | maml | fomaml | metasgd | anil | reptile | mamlpp | imaml | protonet | matchingnet | r2d2 | relationnet | baseline | baselinepp | simpleshot |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|
| `inner_steps` | 1 | 1 | 1 | 1 | 5 | 5 | 10 | - | - | - | - | - | - | - |
| `inner_learning_rate` | 0.4 / 0.01 | 0.4 / 0.01 | 0.4 / 0.01 | 0.4 / 0.01 | 0.4 / 0.01 | 0.1 / 0.01 | 0.1 / 0.01 | - | - | - | - | - | - | - |
| `first_order` | False | True (fixed) | False | False | True (fixed) | False | - | - | - | - | - | - | - | - |
| `inner_batch_size` | None | None | None | None | None | None | None | - | - | - | - | - | - | - |
| `inner_shuffle` | True | True | True | True | True | True | True | - | - | - | - | - | - | - |
| `inner_clipnorm` | None | None | None | None | None | None | None | - | - | - | - | - | - | - |
| `inner_global_clipnorm` | None | None | None | None | None | None | None | - | - | - | - | - | - | - |
| `inner_optimizer` | None | None | None | None | None | None | None | - | - | - | - | - | - | - |
| `per_step_bn_statistics` | False | False | False | False | - | None | - | - | - | - | - | - | - | - |
| `proximal_lambda` | - | - | - | - | - | - | 1.0 | - | - | - | - | - | - | - |
| `cg_steps` | - | - | - | - | - | - | 5 | - | - | - | - | - | - | - |
| `cg_damping` | - | - | - | - | - | - | 20.0 | - | - | - | - | - | - | - |
| `transductive_eval` | False | False | False | False | False | False | False | False | False | False | False | False | False | False |
| `zero_head` | False | False | False | False | False | False | False | - | - | - | - | - | - | - |

Why these values:

- `inner_learning_rate`: the MAML paper's values (Finn et al., 2017), 0.4
  for (5-way Omniglot) classification and 0.01 for (sinusoid) regression,
  for every gradient-based algorithm (Meta-SGD's learned rates start there).
  The model classes keep 0.01, the regression value, as their own default
  (`MAML(learner)`); `create(learner, task)` picks by task.
- `inner_steps`: one, as in the MAML paper's 5-way and sinusoid runs;
  Reptile needs several (with one, its update is a gradient step on the
  support loss) and takes 5, as in the Reptile paper's Omniglot runs.
- `fomaml` is MAML with `first_order=True`; Reptile never differentiates
  through its inner loop. Both fix the setting.
- `mamlpp` (`MAMLPlusPlus`, Antoniou et al., 2019) takes the paper's five
  steps at 0.1 (its learned per-step rates start there); its
  `per_step_bn_statistics` default `None` switches them on when the learner
  has BatchNormalization layers. Its multi-step loss and derivative-order
  annealing are the class's defaults (arguments of the model, not settings).
- `imaml` (`IMAML`, Rajeswaran et al., 2019) solves a proximal inner
  problem with more, smaller steps than MAML and takes its meta-gradient
  implicitly: it has no `first_order`; `proximal_lambda`, `cg_steps` and
  `cg_damping` are its own settings; 5 conjugate-gradient steps as in the
  paper, and a damped Hessian (20 on the diagonal) as in the authors' code.
- `inner_optimizer` names a Keras optimizer (`"sgd"`, `"adam"`,
  `"rmsprop"`) whose update the inner loop differentiates through
  (`InnerLoop(optimizer=...)`); a configured optimizer object goes to the
  model classes directly.
- The rest is what the model classes do by default.
"""

import inspect

from metakeras._checks import check_choice
from metakeras.models._pretraining import Pretrained
from metakeras.models.anil import ANIL
from metakeras.models.baseline import Baseline, BaselinePlusPlus
from metakeras.models.imaml import IMAML
from metakeras.models.maml import MAML
from metakeras.models.maml_plus_plus import MAMLPlusPlus
from metakeras.models.matching_net import MatchingNet
from metakeras.models.meta_model import MetaModel
from metakeras.models.meta_sgd import MetaSGD
from metakeras.models.protonet import ProtoNet
from metakeras.models.r2d2 import R2D2
from metakeras.models.relation_net import RelationNet
from metakeras.models.reptile import Reptile
from metakeras.models.settings import (  # noqa: F401  (public through registry)
    _SETTINGS,
    SETTINGS,
    TASKS,
    Setting,
    get_setting,
)
from metakeras.models.simpleshot import SimpleShot


class Algorithm:
    """A meta-learning algorithm by name: its class and default settings.

    Returned by `get`. The settings an algorithm takes and their defaults
    are the table in `metakeras.models.registry`.

    Args:
        name: the algorithm's name, e.g. `"fomaml"`.
        cls: its `MetaModel` subclass.
        summary: one line saying what it does.
        defaults: dict of the settings it takes to their defaults; a default
            may be a dict `{task: value}` with one value per task type.
        fixed: names of settings the name fixes to their default (`fomaml`:
            `("first_order",)`). Defaults to `()`.
        tasks: the task types it handles. Defaults to
            `("classification", "regression")`.

    Example:

    >>> algorithm = get("fomaml")
    >>> algorithm.cls.__name__, algorithm.defaults("classification")["first_order"]
    ('MAML', True)
    """

    def __init__(self, name, cls, summary, defaults, fixed=(), tasks=TASKS):
        self.name = name
        self.cls = cls
        self.summary = summary
        self._defaults = dict(defaults)
        self.fixed = tuple(fixed)
        self.tasks = tuple(tasks)

    @property
    def settings(self):
        """Names of the settings this algorithm takes, in `SETTINGS` order."""
        return tuple(s.name for s in SETTINGS if s.name in self._defaults)

    @property
    def inner_loop(self):
        """Whether it adapts by gradient steps (takes the inner-loop settings)."""
        return "inner_steps" in self._defaults

    @property
    def head(self):
        """Whether its learner ends in a head (ProtoNet's is an embedding)."""
        return not issubclass(self.cls, (ProtoNet, Pretrained))

    @property
    def pretrains(self):
        """Whether it trains as a classifier of all base classes (Baseline).

        Its task source must say which base class every episode label is
        (`TaskSampler` batches carry `classes`).
        """
        return issubclass(self.cls, Pretrained)

    def default(self, setting, task):
        """The default of one setting for a task type.

        Args:
            setting: a setting name this algorithm takes.
            task: `"classification"` or `"regression"`.

        Returns:
            The default value.

        Raises:
            ValueError: for a setting it does not take or an unknown task.
        """
        self._check_task(task)
        if setting not in self._defaults:
            raise ValueError(
                f"{self.name} does not take the setting {setting!r}; its "
                f"settings: {', '.join(self.settings) or 'none'}."
            )
        value = self._defaults[setting]
        return value[task] if isinstance(value, dict) else value

    def defaults(self, task):
        """The defaults of all the settings it takes, for a task type.

        Args:
            task: `"classification"` or `"regression"`.

        Returns:
            A dict of setting names to default values.
        """
        return {name: self.default(name, task) for name in self.settings}

    def resolve(self, task, **settings):
        """Checks given settings and fills in the defaults for a task type.

        Args:
            task: `"classification"` or `"regression"`.
            **settings: setting values; `None` means not given.

        Returns:
            A dict with every name of `SETTINGS`: the given value or the
            default for the settings it takes, `None` for the others.

        Raises:
            ValueError: for an unknown setting or task, an invalid value, a
                setting it does not take, or a value that contradicts a
                setting the name fixes (`fomaml` with `first_order=False`).
        """
        self._check_task(task)
        given = {k: v for k, v in settings.items() if v is not None}
        for name, value in given.items():
            setting = get_setting(name)
            if not setting.check(value):
                raise ValueError(
                    f"`{name}` must be {setting.what}. Received: {name}={value!r}"
                )
        foreign = [name for name in given if name not in self._defaults]
        if foreign:
            users = [
                a.name
                for a in _ALGORITHMS.values()
                if task in a.tasks and all(n in a._defaults for n in foreign)
            ]
            subject = (
                f"{self.name} has no inner loop, so these settings do not apply"
                if not self.inner_loop
                else f"these settings do not apply to {self.name}"
            )
            raise ValueError(
                f"{subject}: {', '.join(foreign)}. Remove them"
                + (f", or choose {', '.join(users)}." if users else ".")
            )
        for name in self.fixed:
            fixed = self.default(name, task)
            if name in given and get_setting(name).convert(given[name]) != fixed:
                raise ValueError(
                    f"{self.name} always has {name}={fixed} ({self.summary}); "
                    f"received {name}={given[name]!r}."
                )
        resolved = dict.fromkeys(_SETTINGS)
        for name in self.settings:
            value = given.get(name, self.default(name, task))
            resolved[name] = get_setting(name).convert(value)
        return resolved

    def create(self, learner, task, **kwargs):
        """Builds the algorithm's model around a learner.

        Args:
            learner: the `keras.Model` to meta-learn.
            task: `"classification"` or `"regression"`, which picks the
                defaults.
            **kwargs: settings (names of `SETTINGS`; `None`: the default)
                and other arguments of the class (`vectorize_tasks`, `name`).

        Returns:
            The (uncompiled) `MetaModel`. Settings made of callbacks
            (`zero_head`) are not part of the model: pass
            `callbacks(...)` to `fit`.

        Example:

        ```python
        model = metakeras.models.get("fomaml").create(learner, "classification")
        model.inner  # InnerLoop(steps=1, learning_rate=0.4, first_order=True, ...)
        ```
        """
        settings = {k: kwargs.pop(k) for k in list(kwargs) if k in _SETTINGS}
        resolved = self.resolve(task, **settings)
        accepted = _accepted_arguments(self.cls)
        arguments = {
            name: resolved[name]
            for name in self.settings
            if get_setting(name).callback is None and name in accepted
        }
        return self.cls(learner, **arguments, **kwargs)

    def callbacks(self, **settings):
        """The training callbacks that settings switch on (`zero_head`).

        Args:
            **settings: setting values, e.g. from `resolve`; the others are
                ignored.

        Returns:
            A list of new `keras.callbacks.Callback`s for `fit`.
        """
        return [
            _SETTINGS[name].callback()
            for name in self.settings
            if _SETTINGS[name].callback is not None and settings.get(name)
        ]

    def _check_task(self, task):
        check_choice("task", task, TASKS, echo_name=False)
        if task not in self.tasks:
            raise ValueError(
                f"{self.name} ({self.summary}) has no {task} form; choose one of "
                f"{', '.join(available(task))}."
            )

    def __repr__(self):
        return f"Algorithm({self.name!r}, {self.cls.__name__})"


_LEARNING_RATE = {"classification": 0.4, "regression": 0.01}
_INNER_DEFAULTS = {
    "inner_steps": 1,
    "inner_learning_rate": _LEARNING_RATE,
    "first_order": False,
    "inner_batch_size": None,
    "inner_shuffle": True,
    "inner_clipnorm": None,
    "inner_global_clipnorm": None,
    "inner_optimizer": None,
}
_OTHER_DEFAULTS = {"transductive_eval": False, "zero_head": False}
_MAML_DEFAULTS = {**_INNER_DEFAULTS, "per_step_bn_statistics": False, **_OTHER_DEFAULTS}

_ALGORITHMS = {
    a.name: a
    for a in (
        Algorithm(
            "maml",
            MAML,
            "second-order MAML, through the inner loop",
            _MAML_DEFAULTS,
        ),
        Algorithm(
            "fomaml",
            MAML,
            "first-order MAML: the inner gradients as constants",
            {**_MAML_DEFAULTS, "first_order": True},
            fixed=("first_order",),
        ),
        Algorithm(
            "metasgd",
            MetaSGD,
            "MAML with a learned inner learning rate per weight",
            _MAML_DEFAULTS,
        ),
        Algorithm(
            "anil",
            ANIL,
            "MAML that adapts only the head",
            _MAML_DEFAULTS,
        ),
        Algorithm(
            "reptile",
            Reptile,
            "moves the initialisation towards the adapted weights, first order",
            {
                **_INNER_DEFAULTS,
                "inner_steps": 5,
                "first_order": True,
                **_OTHER_DEFAULTS,
            },
            fixed=("first_order",),
        ),
        Algorithm(
            "mamlpp",
            MAMLPlusPlus,
            "MAML++: learned per-step rates, multi-step loss, annealed order",
            {
                **_MAML_DEFAULTS,
                "inner_steps": 5,
                "inner_learning_rate": {"classification": 0.1, "regression": 0.01},
                "per_step_bn_statistics": None,
            },
        ),
        Algorithm(
            "imaml",
            IMAML,
            "implicit MAML: the meta-gradient of a solved proximal inner problem",
            {
                **{k: v for k, v in _INNER_DEFAULTS.items() if k != "first_order"},
                "inner_steps": 10,
                "inner_learning_rate": {"classification": 0.1, "regression": 0.01},
                "proximal_lambda": 1.0,
                "cg_steps": 5,
                "cg_damping": 20.0,
                **_OTHER_DEFAULTS,
            },
        ),
        Algorithm(
            "protonet",
            ProtoNet,
            "classifies by distance to class-mean embeddings",
            {"transductive_eval": False},
            tasks=("classification",),
        ),
        Algorithm(
            "matchingnet",
            MatchingNet,
            "classifies by attention over the support examples' embeddings",
            {"transductive_eval": False},
            tasks=("classification",),
        ),
        Algorithm(
            "r2d2",
            R2D2,
            "a closed-form ridge-regression head on the support embeddings",
            {"transductive_eval": False},
            tasks=("classification",),
        ),
        Algorithm(
            "relationnet",
            RelationNet,
            "a learned relation module scores each query against each class",
            {"transductive_eval": False},
            tasks=("classification",),
        ),
        Algorithm(
            "baseline",
            Baseline,
            "pretrains on all base classes, fits a linear head per task",
            {"transductive_eval": False},
            tasks=("classification",),
        ),
        Algorithm(
            "baselinepp",
            BaselinePlusPlus,
            "pretrains on all base classes, fits a cosine head per task",
            {"transductive_eval": False},
            tasks=("classification",),
        ),
        Algorithm(
            "simpleshot",
            SimpleShot,
            "pretrains on all base classes, nearest centroid on CL2N features",
            {"transductive_eval": False},
            tasks=("classification",),
        ),
    )
}


def available(task=None):
    """The names of the algorithms, for one task type or all.

    Args:
        task: `None`, `"classification"` or `"regression"`. Defaults to
            `None` (all algorithms).

    Returns:
        A tuple of names, e.g. `("maml", "fomaml", ...)`.

    Example:

    >>> "protonet" in available("regression")
    False
    """
    if task is not None:
        check_choice("task", task, TASKS, echo_name=False)
    return tuple(n for n, a in _ALGORITHMS.items() if task is None or task in a.tasks)


def get(identifier):
    """The `Algorithm` of a name, as `keras.optimizers.get` does for optimizers.

    Args:
        identifier: an algorithm name (see `available()`), an `Algorithm`
            (returned as is) or a `MetaModel` subclass: its registered
            algorithm, or for a class of your own an `Algorithm` with the
            settings and defaults of the registered class it derives from
            (none if it derives from `MetaModel` only).

    Returns:
        An `Algorithm`.

    Raises:
        ValueError: for an unknown name (the valid ones are listed) or an
            identifier of another type.

    Example:

    >>> get("reptile").default("inner_steps", "regression")
    5
    """
    if isinstance(identifier, Algorithm):
        return identifier
    if isinstance(identifier, str):
        if identifier not in _ALGORITHMS:
            raise ValueError(
                f"Unknown algorithm {identifier!r}; valid choices: "
                f"{', '.join(_ALGORITHMS)}."
            )
        return _ALGORITHMS[identifier]
    if inspect.isclass(identifier) and issubclass(identifier, MetaModel):
        return _of_class(identifier)
    raise ValueError(
        "An algorithm must be a name, an Algorithm or a MetaModel subclass. "
        f"Received: {identifier!r}"
    )


def _of_class(cls):
    """The registered algorithm of `cls`, or one derived from its base."""
    for algorithm in _ALGORITHMS.values():
        if algorithm.cls is cls and not algorithm.fixed:
            return algorithm
    for klass in cls.__mro__:
        base = next((a for a in _ALGORITHMS.values() if a.cls is klass), None)
        if base is not None:
            defaults = base._defaults
            tasks = base.tasks
            break
    else:
        defaults, tasks = {}, TASKS
    return Algorithm(
        cls.__name__,
        cls,
        f"a MetaModel subclass ({cls.__name__})",
        {k: v for k, v in defaults.items() if k in _accepted_arguments(cls)},
        tasks=tasks,
    )


def _accepted_arguments(cls):
    """Keyword arguments `cls.__init__` accepts, up to `MetaModel`'s own."""
    accepted = set()
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            parameters = inspect.signature(klass.__init__).parameters.values()
            accepted |= {
                p.name
                for p in parameters
                if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            }
            if not any(p.kind is p.VAR_KEYWORD for p in parameters):
                break
        if klass is MetaModel:
            break
    # Settings made of callbacks are not constructor arguments.
    return accepted | {s.name for s in SETTINGS if s.callback is not None}
