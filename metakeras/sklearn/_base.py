"""The shared logic of `MetaClassifier` and `MetaRegressor`.

`_MetaEstimatorBase` validates the hyper-parameters, builds the learner and
the `MetaModel`, meta-trains on a task source and predicts with the adapted
model; the subclasses turn targets into task sources. `_Seeds` makes a
seeded fit reproducible.

This package is named `metakeras.sklearn`; its modules import scikit-learn
with absolute imports (`import sklearn`), which always resolve to the
top-level scikit-learn package.
"""

import contextlib
import random

import keras
import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from metakeras._checks import is_flag, is_int, is_number
from metakeras.models import MetaModel, registry
from metakeras.models.registry import _accepted_arguments

# Rows per forward pass when predicting.
_PREDICT_BATCH = 1024


class _MetaEstimatorBase(BaseEstimator):
    """Shared logic of `MetaClassifier` and `MetaRegressor`.

    Subclasses define `__init__` (the hyper-parameters), `_task` (the task
    type, which picks the algorithms and their defaults in
    `metakeras.models.registry`), `_prepare_fit` (targets -> task source),
    `_loss`, `_metrics` and the prediction methods. The algorithm settings
    (`registry.SETTINGS`: the inner loop, `per_step_bn_statistics`,
    `transductive_eval`, `zero_head`) are parameters of both estimators,
    `None` meaning the algorithm's default.
    """

    _task = None

    # ------------------------------------------------------------ tags

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.non_deterministic = self.random_state is None
        return tags

    # ------------------------------------------------------- validation

    def _check_params(self):
        """Validates the hyper-parameters; called by `fit`, never `__init__`."""
        name = type(self).__name__
        self._check_algorithm(name)
        if self.learner is not None and not (
            isinstance(self.learner, keras.Model) or callable(self.learner)
        ):
            raise ValueError(
                f"{name}: `learner` must be None (a default MLP), a keras.Model or "
                "a callable `learner(n_features_in, n_outputs)` returning one. "
                f"Received: {self.learner!r}"
            )
        self._check_numbers(name)
        for param in ("vectorize_tasks", "warm_start"):
            value = getattr(self, param)
            auto_allowed = param == "vectorize_tasks"
            if is_flag(value, types=(bool, np.bool_)) or (
                auto_allowed and value == "auto"
            ):
                continue
            choices = 'True, False or "auto"' if auto_allowed else "True or False"
            raise ValueError(
                f"{name}: `{param}` must be {choices}. Received: {param}={value!r}"
            )
        if not isinstance(self.optimizer, (str, keras.optimizers.Optimizer)):
            raise ValueError(
                f"{name}: `optimizer` must be an optimizer name such as 'adam' or "
                f"a keras.optimizers.Optimizer. Received: optimizer={self.optimizer!r}"
            )
        if self.callbacks is not None and (
            isinstance(self.callbacks, keras.callbacks.Callback)
            or not all(isinstance(c, keras.callbacks.Callback) for c in self.callbacks)
        ):
            raise ValueError(
                f"{name}: `callbacks` must be None or a list of "
                f"keras.callbacks.Callback. Received: callbacks={self.callbacks!r}"
            )
        if not is_int(self.verbose, 0):
            raise ValueError(
                f"{name}: `verbose` must be 0, 1 or 2. Received: verbose={self.verbose!r}"
            )

    def _check_algorithm(self, name):
        """Raises unless `algorithm` names one for this task, or is a class."""
        algorithm = self.algorithm
        valid = list(registry.available(self._task))
        if isinstance(algorithm, str):
            try:
                known = registry.get(algorithm)
            except ValueError:
                known = None
            if known is None or self._task not in known.tasks:
                extra = (
                    f" ({algorithm!r} {known.summary} and has no {self._task} form)"
                    if known is not None
                    else ""
                )
                raise ValueError(
                    f"{name}: `algorithm` must be one of {valid} or a MetaModel "
                    f"subclass. Received: algorithm={algorithm!r}{extra}."
                )
        elif not (isinstance(algorithm, type) and issubclass(algorithm, MetaModel)):
            raise ValueError(
                f"{name}: `algorithm` must be one of {valid} or a subclass of "
                f"metakeras.MetaModel. Received: {algorithm!r}"
            )

    def _check_numbers(self, name):
        """Raises for a numeric hyper-parameter or algorithm setting out of range."""
        units = self.hidden_units
        if (
            isinstance(units, (str, bytes))
            or not hasattr(units, "__len__")
            or len(units) == 0
            or not all(is_int(u, minimum=1) for u in units)
        ):
            raise ValueError(
                f"{name}: `hidden_units` must be a non-empty sequence of positive "
                f"integers, e.g. (64, 64). Received: hidden_units={units!r}"
            )
        for param, minimum in self._int_params():
            value = getattr(self, param)
            if not is_int(value, minimum):
                raise ValueError(
                    f"{name}: `{param}` must be an integer >= {minimum}. "
                    f"Received: {param}={value!r}"
                )
        if self.adapt_steps is not None and not is_int(self.adapt_steps, 0):
            raise ValueError(
                f"{name}: `adapt_steps` must be None or an integer >= 0. "
                f"Received: adapt_steps={self.adapt_steps!r}"
            )
        for setting in registry.SETTINGS:
            value = getattr(self, setting.name)
            if value is not None and not setting.check(value):
                raise ValueError(
                    f"{name}: `{setting.name}` must be None or {setting.what}. "
                    f"Received: {setting.name}={value!r}"
                )
        value = self.learning_rate
        if value is not None and not is_number(value, positive=True):
            raise ValueError(
                f"{name}: `learning_rate` must be a positive finite number or "
                f"None. Received: learning_rate={value!r}"
            )

    def _int_params(self):
        return (
            ("shots", 1),
            ("queries", 1),
            ("meta_batch_size", 1),
            ("epochs", 0),
            ("steps_per_epoch", 1),
        )

    def _algorithm(self):
        """The `registry.Algorithm` of the `algorithm` parameter."""
        return registry.get(self.algorithm)

    def _settings(self):
        """The algorithm's settings: the parameters given, else its defaults.

        Settings the algorithm does not take are ignored, as is a setting its
        name fixes (`first_order` for fomaml and reptile).
        """
        algorithm = self._algorithm()
        given = {
            name: getattr(self, name)
            for name in algorithm.settings
            if name not in algorithm.fixed
        }
        return algorithm.resolve(self._task, **given)

    def _is_prototype_algorithm(self):
        return not self._algorithm().head

    # ----------------------------------------------------------- building

    def _make_learner(self, n_features, n_outputs):
        """A fresh learner for `n_features` inputs and `n_outputs` outputs."""
        name = type(self).__name__
        if self.learner is None:
            layers = [keras.Input((n_features,))]
            units = [int(u) for u in self.hidden_units]
            if n_outputs is None:  # ProtoNet: an embedding, last layer linear
                layers += [keras.layers.Dense(u, activation="relu") for u in units[:-1]]
                layers.append(keras.layers.Dense(units[-1], name="embedding"))
            else:
                layers += [keras.layers.Dense(u, activation="relu") for u in units]
                layers.append(keras.layers.Dense(n_outputs, name="head"))
            return keras.Sequential(layers, name="learner")
        if isinstance(self.learner, keras.Model):
            # Like keras.wrappers: a given model is cloned, so every fit starts
            # from fresh weights and the parameter itself is never modified.
            learner = keras.models.clone_model(self.learner)
        else:
            learner = self.learner(n_features, n_outputs)
            if not isinstance(learner, keras.Model):
                raise ValueError(
                    f"{name}: the `learner` callable must return a keras.Model; "
                    f"it returned {type(learner).__name__}."
                )
        if not learner.built:
            learner(np.zeros((1, n_features), dtype="float32"))
        shape = (
            tuple(learner.inputs[0].shape) if getattr(learner, "inputs", None) else None
        )
        if shape is not None and (
            len(shape) != 2 or shape[1] not in (None, n_features)
        ):
            raise ValueError(
                f"{name}: the learner takes inputs of shape {shape}, but X has "
                f"{n_features} features: it must accept (batch, {n_features})."
            )
        if n_outputs is not None:
            out = learner(np.zeros((1, n_features), dtype="float32"), training=False)
            width = int(out.shape[-1]) if len(out.shape) == 2 else None
            if width != n_outputs:
                raise ValueError(
                    f"{name}: the learner must output (batch, {n_outputs}) "
                    f"({self._output_meaning(n_outputs)}); it outputs shape "
                    f"{tuple(out.shape)}."
                )
        return learner

    def _output_meaning(self, n_outputs):
        return f"{n_outputs} target(s)"

    def _make_optimizer(self):
        if isinstance(self.optimizer, str):
            try:
                optimizer = keras.optimizers.get(self.optimizer)
            except ValueError:
                raise ValueError(
                    f"{type(self).__name__}: unknown `optimizer` "
                    f"{self.optimizer!r}; use a keras.optimizers name such as "
                    "'adam', 'sgd' or 'rmsprop', or an Optimizer instance."
                ) from None
            config = optimizer.get_config()
        else:
            config = self.optimizer.get_config()
            optimizer = self.optimizer
        if self.learning_rate is not None:
            config["learning_rate"] = float(self.learning_rate)
        # A fresh optimizer per fit, so the parameter is never modified.
        return type(optimizer).from_config(config)

    def _build_model(self, n_features, n_outputs):
        algorithm = self._algorithm()
        learner = _drawn_on_cpu(lambda: self._make_learner(n_features, n_outputs))
        settings = self._settings()
        kwargs = {name: settings[name] for name in algorithm.settings}
        if "vectorize_tasks" in _accepted_arguments(algorithm.cls):
            kwargs["vectorize_tasks"] = (
                "auto" if self.vectorize_tasks == "auto" else bool(self.vectorize_tasks)
            )
        model = algorithm.create(learner, self._task, **kwargs)
        model.compile(
            optimizer=self._make_optimizer(), loss=self._loss(), metrics=self._metrics()
        )
        return model

    # ------------------------------------------------------------ fitting

    def _fit(self, X, y, groups, epochs, warm):
        self._check_params()
        # A model that fell back to the raw rows has nothing to continue.
        continuing = (
            warm
            and hasattr(self, "model_")
            and getattr(self, "selected_", "meta-trained") == "meta-trained"
        )
        X, y = validate_data(
            self,
            X,
            y,
            reset=not continuing,
            dtype=(np.float32, np.float64),
            multi_output=self._multi_output_y(),
            y_numeric=not isinstance(self, ClassifierMixin),
        )
        X = np.ascontiguousarray(X, dtype=np.float32)
        seeds = _Seeds(self.random_state)
        task_source, n_outputs, adapt_targets, held_out = self._prepare_fit(
            X, y, groups, seeds.draw(), continuing, warm
        )
        with seeds.context():
            if not continuing:
                self.model_ = self._build_model(X.shape[1], n_outputs)
                self.history_ = {}
                self.n_outputs_ = n_outputs
            elif n_outputs != self.n_outputs_:
                raise ValueError(
                    f"{type(self).__name__}: cannot continue meta-training "
                    f"(warm_start/partial_fit) with {self._output_meaning(n_outputs)}: "
                    f"the model was built for {self._output_meaning(self.n_outputs_)}. "
                    "Refit with warm_start=False."
                )
            if epochs > 0:
                # Settings made of callbacks (`zero_head`) run first.
                callbacks = self._algorithm().callbacks(**self._settings())
                history = self.model_.fit(
                    task_source,
                    epochs=epochs,
                    verbose=self.verbose,
                    callbacks=callbacks + list(self.callbacks or []) or None,
                    shuffle=False,
                )
                for key, values in history.history.items():
                    self.history_.setdefault(key, []).extend(float(v) for v in values)
            if held_out is not None:
                self._select_model(*held_out, seeds.draw())
            self._adapt_to(X, adapt_targets)
        return self

    def _select_model(self, X, y, seed):
        """Checks the trained model on held-out rows (see `MetaClassifier`)."""
        raise NotImplementedError

    def _adapt_to(self, X, targets):
        """Adapts the meta-learned model to one task and keeps the result."""
        raise NotImplementedError

    def _outputs(self, X):
        """Validates X and runs the adapted model on it, in batches."""
        check_is_fitted(self, "adapted_model_")
        X = validate_data(self, X, reset=False, dtype=(np.float32, np.float64))
        return self._forward(np.asarray(X, dtype=np.float32))

    def _forward(self, X):
        """The adapted model's outputs for validated float32 rows."""
        model = self.adapted_model_
        transductive = bool(getattr(self.model_, "transductive_eval", False))
        if transductive:
            state = (
                [v.value for v in model.trainable_variables],
                [v.value for v in model.non_trainable_variables],
            )
        outputs = []
        with torch.no_grad():
            for start in range(0, len(X), _PREDICT_BATCH):
                x = X[start : start + _PREDICT_BATCH]
                if transductive:
                    # Batch statistics of the rows, the model's state untouched.
                    batch, _ = model.stateless_call(*state, x, training=True)
                else:
                    batch = model(x, training=False)
                outputs.append(keras.ops.convert_to_numpy(batch))
        return np.concatenate(outputs).astype(np.float64)

    def _validate_adapt_data(self, X, y):
        check_is_fitted(self, "model_")
        X, y = validate_data(
            self,
            X,
            y,
            reset=False,
            dtype=(np.float32, np.float64),
            multi_output=self._multi_output_y(),
            y_numeric=not isinstance(self, ClassifierMixin),
        )
        return np.ascontiguousarray(X, dtype=np.float32), y

    def _multi_output_y(self):
        return False

    def _adapt_steps(self):
        if getattr(self.model_, "inner", None) is None:
            return None
        if self.adapt_steps is None:
            return self.model_.inner.steps
        return self.adapt_steps


class _Seeds:
    """Seeds drawn from a scikit-learn `random_state`.

    With `random_state=None` nothing is seeded (and `context` does nothing).
    Otherwise `context()` seeds Python, NumPy, PyTorch and Keras (weight
    initialisation, dropout, inner mini-batches) and restores the Python,
    NumPy and PyTorch random states on exit, so a seeded fit is reproducible
    without changing the caller's random streams.
    """

    def __init__(self, random_state):
        self.random_state = random_state
        self._rng = check_random_state(random_state)

    def draw(self):
        return int(self._rng.randint(np.iinfo(np.int32).max))

    @contextlib.contextmanager
    def context(self):
        if self.random_state is None:
            yield
            return
        seed = self.draw()
        python_state = random.getstate()
        numpy_state = np.random.get_state()
        torch_state = torch.random.get_rng_state()
        keras.utils.set_random_seed(seed)
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)
            torch.random.set_rng_state(torch_state)


def _drawn_on_cpu(make_learner):
    """`make_learner()`, with the initial weights it would draw on the CPU.

    Keras draws initial weights from the random generator of the device the
    model lives on, so one seed gives different networks on a CPU and a GPU
    (and different scores: digits 0-5 -> 6-9, `random_state` 0-3, scored
    0.87/0.78/0.84/0.84 on the CPU and 0.80/0.80/0.78/0.86 on a GPU). On an
    accelerator the learner is built once on the CPU for its weights, then
    again from the same Python random state, so that every later random draw
    is the same as in a CPU run, and given those weights: `random_state`
    then means the same model everywhere.
    """
    if keras.ops.convert_to_tensor(0.0).device.type == "cpu":
        return make_learner()
    state = random.getstate()
    with keras.device("cpu"):
        weights = make_learner().get_weights()
    random.setstate(state)
    learner = make_learner()
    learner.set_weights(weights)
    return learner


def _column(y):
    return column_or_1d(y, warn=True)
