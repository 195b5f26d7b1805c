"""scikit-learn estimators that meta-learn: `MetaClassifier` and `MetaRegressor`.

They wrap the whole metakeras chain (episodes from `X, y`, a `MetaModel`,
adaptation) behind the scikit-learn estimator API, so a meta-learner drops
into `Pipeline`, `GridSearchCV` and `cross_val_score`:

- `fit(X, y)` meta-trains on episodes drawn from the rows of `X, y`: few-shot
  classification episodes over the classes of `y` (`metakeras.tasks.
  TaskSampler`), or, for regression, support/query sets drawn within the tasks
  named by `groups`. It then adapts to the whole training set, so `predict`,
  `predict_proba` and `score` work in the ordinary scikit-learn way.
- `adapt(X_support, y_support)` adapts to a new task (its classes may never
  have been seen in `fit`) from a few labelled rows; afterwards `predict`,
  `predict_proba` and `score` refer to that task. The meta-learned weights are
  not changed, so one can adapt again to another task.

This module is named `metakeras.sklearn`; it imports scikit-learn with
absolute imports (`import sklearn`), which always resolve to the top-level
scikit-learn package.
"""

import contextlib
import numbers
import random

import keras
import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from metakeras.models import MetaModel, registry
from metakeras.models.registry import _accepted_arguments
from metakeras.tasks import TaskSampler

__all__ = ["MetaClassifier", "MetaRegressor"]

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
            if isinstance(value, (bool, np.bool_)) or (
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
        if not _is_int(self.verbose, 0):
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
            or not all(_is_int(u, minimum=1) for u in units)
        ):
            raise ValueError(
                f"{name}: `hidden_units` must be a non-empty sequence of positive "
                f"integers, e.g. (64, 64). Received: hidden_units={units!r}"
            )
        for param, minimum in self._int_params():
            value = getattr(self, param)
            if not _is_int(value, minimum):
                raise ValueError(
                    f"{name}: `{param}` must be an integer >= {minimum}. "
                    f"Received: {param}={value!r}"
                )
        if self.adapt_steps is not None and not _is_int(self.adapt_steps, 0):
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
        if value is not None and (
            isinstance(value, bool)
            or not isinstance(value, numbers.Real)
            or not np.isfinite(value)
            or value <= 0
        ):
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

    def _has_inner_loop(self):
        return self._algorithm().inner_loop

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
        continuing = warm and hasattr(self, "model_")
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
        task_source, n_outputs, adapt_targets = self._prepare_fit(
            X, y, groups, seeds.draw(), continuing
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
            self._adapt_to(X, adapt_targets)
        return self

    def _adapt_to(self, X, targets):
        """Adapts the meta-learned model to one task and keeps the result."""
        raise NotImplementedError

    def _outputs(self, X):
        """Validates X and runs the adapted model on it, in batches."""
        check_is_fitted(self, "adapted_model_")
        X = validate_data(self, X, reset=False, dtype=(np.float32, np.float64))
        X = np.asarray(X, dtype=np.float32)
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
        if not self._has_inner_loop():
            return None
        if self.adapt_steps is None:
            return self.model_.inner.steps
        return self.adapt_steps


class MetaClassifier(ClassifierMixin, _MetaEstimatorBase):
    """A few-shot classifier that meta-learns, as a scikit-learn estimator.

    `fit(X, y)` meta-trains a metakeras `MetaModel` on N-way K-shot episodes
    drawn from the rows of `X, y` (`metakeras.tasks.TaskSampler`): every
    episode picks `ways` classes, `shots` support and `queries` query rows of
    each, and relabels the classes `0..ways-1` in random order. The model
    thus learns to *learn a new classification task from a few rows* rather
    than one fixed mapping. `fit` then adapts to the whole training set, so
    `predict`, `predict_proba` and `score` classify among `classes_` as any
    scikit-learn classifier does. `adapt(X_support, y_support)` adapts to a
    new task from a few labelled rows, classes unseen in `fit` included; the
    predictions then refer to that task's classes.

    Small data. Episodes use `ways_ = min(ways, number of classes)` classes.
    Every class needs at least `shots + 1` rows (its support rows and at
    least one query row), otherwise `fit` raises a `ValueError`; the number
    of query rows per class is lowered to what the smallest class allows
    (`queries_`).

    Output width. Gradient-based algorithms (all but protonet) learn a head
    of `ways_` logits, so they can adapt to tasks of at most `ways_` classes:
    fitting them on more classes than `ways`, or adapting to a larger task,
    raises a `ValueError` (use `ways` >= the number of classes, or
    protonet). Protonet classifies by distance to class-mean embeddings and
    adapts to any number of classes.

    Algorithm settings. `inner_steps`, `inner_learning_rate`, `first_order`,
    `inner_batch_size`, `inner_shuffle`, `inner_clipnorm`,
    `inner_global_clipnorm`, `per_step_bn_statistics`, `transductive_eval`
    and `zero_head` are the settings of `metakeras.models.registry`. `None`
    (their default) takes the algorithm's default for classification there
    (`metakeras.models.get(algorithm).defaults("classification")`). A
    setting the algorithm does not take is ignored (the inner-loop ones for
    protonet, `per_step_bn_statistics` for reptile), as is `first_order` for
    fomaml and reptile, which are first order by definition.

    Args:
        algorithm: a name of `metakeras.models.available()` (protonet,
            maml, fomaml for first-order MAML, metasgd, anil, reptile), or a
            `metakeras.MetaModel` subclass (built as `cls(learner,
            **settings it accepts)`, with the defaults of the registered
            class it derives from). Defaults to `"protonet"`.
        learner: `None` (an MLP from `hidden_units`), a `keras.Model` (cloned
            with fresh weights at each fit) or a callable
            `learner(n_features_in, n_outputs)` returning a Keras model;
            `n_outputs` is `ways_` (logits), or `None` for ProtoNet (an
            embedding of any width). On a GPU the callable is called twice
            per fit (the first model, built on the CPU, gives the initial
            weights, so that `random_state` means the same network on every
            device). Defaults to `None`.
        hidden_units: widths of the default MLP's hidden layers; for ProtoNet
            the last one is the (linear) embedding. Defaults to `(64, 64)`.
        ways: classes per meta-training episode (N). Defaults to `5`.
        shots: support rows per class in an episode (K). Defaults to `1`.
        queries: query rows per class in an episode (Q). Defaults to `5`.
        meta_batch_size: episodes per meta-update. Defaults to `8`.
        inner_steps: inner-loop gradient steps in meta-training (gradient
            algorithms). Defaults to `None` (the algorithm's: 1, reptile 5).
        inner_learning_rate: inner-loop step size. Defaults to `None` (the
            algorithm's default for classification, 0.4).
        first_order: first-order meta-gradients. Defaults to `None` (`False`;
            fomaml and reptile are first order).
        inner_batch_size: support rows per inner step. Defaults to `None`
            (all of them: full-batch steps).
        adapt_steps: inner steps when adapting (`fit`'s final adaptation and
            `adapt`); `None` uses `inner_steps`. Defaults to `None`.
        epochs: meta-training epochs; `0` skips meta-training. Defaults to
            `10`.
        steps_per_epoch: meta-batches per epoch. Defaults to `20`.
        optimizer: the outer optimizer: a Keras optimizer name or instance
            (copied at each fit). Defaults to `"adam"`.
        learning_rate: outer learning rate; `None` keeps the optimizer's own.
            Defaults to `None`.
        vectorize_tasks: run the tasks of a meta-batch together under
            `torch.func.vmap` (`True`), one by one (`False`), or choose by
            device and learner (`"auto"`: batched on GPUs). Defaults to
            `"auto"`.
        warm_start: continue meta-training the current model on the next
            `fit` instead of starting again. Defaults to `False`.
        random_state: `None`, an int or a `numpy.random.RandomState`; an int
            makes `fit` reproducible (weights, episodes, dropout). The global
            random states are restored afterwards. Defaults to `None`.
        verbose: Keras `fit` verbosity. Defaults to `0`.
        callbacks: list of `keras.callbacks.Callback` for meta-training.
            Defaults to `None`.
        inner_shuffle: with `inner_batch_size`, draw the inner mini-batches
            from a fresh permutation of the support rows. Defaults to `None`
            (`True`).
        inner_clipnorm: clip each weight's inner gradient to this L2 norm at
            every inner step (`InnerLoop(clipnorm=...)`). Defaults to `None`
            (no clipping).
        inner_global_clipnorm: clip the joint L2 norm of all inner gradients
            to this at every inner step. Defaults to `None` (no clipping).
        per_step_bn_statistics: keep BatchNormalization moving statistics
            per inner step (MAML++); needs a `learner` with
            BatchNormalization layers. Defaults to `None` (`False`).
        transductive_eval: predict with batch statistics: the model's
            episodic evaluation does (`MetaModel`'s `transductive_eval`), and
            `predict`, `predict_proba` and `score` run the adapted model in training mode
            on the rows they are given, in batches of 1024 rows, so that
            BatchNormalization normalises them with their own statistics
            (Dropout is active too). Defaults to `None` (`False`).
        zero_head: keep the learner's head at zero between meta-updates
            (`metakeras.callbacks.ZeroHead`, the zeroing trick), run before
            `callbacks`. Defaults to `None` (`False`).

    Attributes:
        classes_: class labels of the current task (the training set after
            `fit`, the support set after `adapt`).
        meta_classes_: class labels seen in meta-training.
        n_features_in_, feature_names_in_: as in scikit-learn.
        model_: the meta-trained `metakeras.MetaModel`.
        adapted_model_: the Keras model adapted to the current task.
        history_: dict of per-epoch meta-training metrics.
        ways_, queries_: the episode sizes actually used.
        n_outputs_: width of the learner's head (`None` for ProtoNet).

    Example:

    ```python
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from metakeras.sklearn import MetaClassifier

    clf = make_pipeline(StandardScaler(), MetaClassifier(ways=5, shots=1))
    clf.fit(X_train, y_train)                 # meta-train on the classes of y
    clf[-1].adapt(clf[0].transform(X_few), y_few)   # a new task, new classes
    clf.predict(X_new)
    ```
    """

    _task = "classification"

    def __init__(
        self,
        algorithm="protonet",
        learner=None,
        hidden_units=(64, 64),
        ways=5,
        shots=1,
        queries=5,
        meta_batch_size=8,
        inner_steps=None,
        inner_learning_rate=None,
        first_order=None,
        inner_batch_size=None,
        adapt_steps=None,
        epochs=10,
        steps_per_epoch=20,
        optimizer="adam",
        learning_rate=None,
        vectorize_tasks="auto",
        warm_start=False,
        random_state=None,
        verbose=0,
        callbacks=None,
        inner_shuffle=None,
        inner_clipnorm=None,
        inner_global_clipnorm=None,
        per_step_bn_statistics=None,
        transductive_eval=None,
        zero_head=None,
    ):
        self.algorithm = algorithm
        self.learner = learner
        self.hidden_units = hidden_units
        self.ways = ways
        self.shots = shots
        self.queries = queries
        self.meta_batch_size = meta_batch_size
        self.inner_steps = inner_steps
        self.inner_learning_rate = inner_learning_rate
        self.first_order = first_order
        self.inner_batch_size = inner_batch_size
        self.adapt_steps = adapt_steps
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.vectorize_tasks = vectorize_tasks
        self.warm_start = warm_start
        self.random_state = random_state
        self.verbose = verbose
        self.callbacks = callbacks
        self.inner_shuffle = inner_shuffle
        self.inner_clipnorm = inner_clipnorm
        self.inner_global_clipnorm = inner_global_clipnorm
        self.per_step_bn_statistics = per_step_bn_statistics
        self.transductive_eval = transductive_eval
        self.zero_head = zero_head

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = True
        tags.classifier_tags.multi_label = False
        return tags

    def _int_params(self):
        return (("ways", 2),) + super()._int_params()

    def _loss(self):
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def _metrics(self):
        return ["accuracy"]

    def _output_meaning(self, n_outputs):
        if n_outputs is None:
            return "an embedding (ProtoNet)"
        return f"{n_outputs} logits, one per class of an episode"

    # ------------------------------------------------------------- fit

    def fit(self, X, y):
        """Meta-trains on episodes drawn from `X, y`, then adapts to all of it.

        Args:
            X: array-like or DataFrame, `(n_samples, n_features)`, numeric.
            y: class labels, `(n_samples,)`; at least two classes, each with
                at least `shots + 1` rows.

        Returns:
            `self`.

        Raises:
            ValueError: for NaN/inf or non-numeric features, fewer than two
                classes, a class with fewer than `shots + 1` rows, invalid
                hyper-parameters, or (gradient algorithms) more classes than
                `ways`.
        """
        return self._fit(X, y, None, self.epochs, warm=self.warm_start)

    def partial_fit(self, X, y, classes=None):
        """Meta-trains one more epoch on episodes from `X, y`.

        The first call builds the model; later calls continue meta-training
        it (optimizer state included). Unlike an ordinary classifier the
        calls may hold different classes: the model learns to adapt, not a
        fixed set of classes. Afterwards the estimator is adapted to `X, y`.

        Args:
            X: array-like, `(n_samples, n_features)`.
            y: class labels, `(n_samples,)`.
            classes: optional labels that `y` must be drawn from (accepted for
                compatibility with scikit-learn's incremental API). Defaults
                to `None`.

        Returns:
            `self`.
        """
        if classes is not None:
            unknown = np.setdiff1d(np.unique(np.asarray(y)), np.asarray(classes))
            if unknown.size:
                raise ValueError(
                    f"`y` holds labels {unknown.tolist()[:10]} that are not in "
                    f"`classes` ({np.asarray(classes).tolist()[:10]})."
                )
        return self._fit(X, y, None, 1, warm=True)

    def _prepare_fit(self, X, y, groups, seed, continuing):
        name = type(self).__name__
        y = _column(y)
        check_classification_targets(y)
        classes, encoded = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(
                f"{name} needs samples of at least 2 classes in the data, but the "
                f"data contains only one class: {classes[0].item()!r}."
            )
        counts = np.bincount(encoded)
        smallest = int(counts.min())
        needed = self.shots + 1
        if smallest < needed:
            few = np.flatnonzero(counts < needed)
            detail = ", ".join(
                f"{classes[i].item()!r} has {counts[i]} sample{'s' if counts[i] != 1 else ''}"
                for i in few[:5]
            )
            raise ValueError(
                f"{name} needs at least shots + 1 = {needed} rows of every class "
                f"(shots={self.shots} support rows and at least one query row per "
                f"episode), but {len(few)} class(es) have fewer: {detail}"
                f"{' ...' if len(few) > 5 else ''}. Lower `shots` or add rows."
            )
        self.meta_classes_ = classes
        self.ways_ = min(int(self.ways), len(classes))
        self.queries_ = min(int(self.queries), smallest - self.shots)
        n_outputs = None if self._is_prototype_algorithm() else self.ways_
        if n_outputs is not None and len(classes) > n_outputs:
            raise ValueError(
                f"{name}: algorithm={self.algorithm!r} learns a head of ways="
                f"{n_outputs} logits, so it cannot classify the {len(classes)} "
                f"classes of the training set after meta-training. Use ways >= "
                f"{len(classes)}, or algorithm='protonet' (any number of classes)."
            )
        sampler = TaskSampler(
            X,
            encoded,
            ways=self.ways_,
            shots=self.shots,
            queries=self.queries_,
            meta_batch_size=self.meta_batch_size,
            steps=self.steps_per_epoch,
            seed=seed,
            shuffle=True,
        )
        return _ContractOnly(sampler), n_outputs, (classes, encoded)

    def _adapt_to(self, X, targets):
        classes, encoded = targets
        if self.n_outputs_ is not None and len(classes) > self.n_outputs_:
            raise ValueError(
                f"{type(self).__name__}: this model (algorithm={self.algorithm!r}) "
                f"has a head of {self.n_outputs_} logits, so it can adapt to tasks "
                f"of at most {self.n_outputs_} classes; the support set has "
                f"{len(classes)} classes ({_preview(classes)}). Refit with ways >= "
                f"{len(classes)}, or use algorithm='protonet'."
            )
        steps = self._adapt_steps()
        kwargs = {} if steps is None else {"steps": steps}
        self.adapted_model_ = self.model_.adapt(X, encoded.astype("int64"), **kwargs)
        self.classes_ = classes

    # ------------------------------------------------------------ adapt

    def adapt(self, X_support, y_support):
        """Adapts the meta-learned model to a new task from labelled rows.

        The task's classes may never have been seen in `fit`. The
        meta-learned weights are left unchanged; afterwards `predict`,
        `predict_proba`, `score` and `classes_` refer to this task.

        Args:
            X_support: array-like, `(n_rows, n_features)`: the task's
                labelled rows (a few per class).
            y_support: their labels, at least two classes.

        Returns:
            `self`.

        Raises:
            ValueError: for invalid data, a single class, or (gradient
                algorithms) more classes than the learned head (`n_outputs_`).

        Example:

        ```python
        clf.fit(X_old_classes, y_old_classes)
        clf.adapt(X_new_few, y_new_few).score(X_new_test, y_new_test)
        ```
        """
        X, y = self._validate_adapt_data(X_support, y_support)
        y = _column(y)
        check_classification_targets(y)
        classes, encoded = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(
                f"{type(self).__name__}.adapt needs rows of at least 2 classes, but "
                f"`y_support` contains only one class: {classes[0].item()!r}."
            )
        with _Seeds(self.random_state).context():
            self._adapt_to(X, (classes, encoded))
        return self

    # -------------------------------------------------------- prediction

    def _logits(self, X):
        outputs = self._outputs(X)
        # A gradient-based head may be wider than the current task.
        return outputs[:, : len(self.classes_)]

    def predict_proba(self, X):
        """Class probabilities for the current task (softmax of the logits).

        Args:
            X: array-like, `(n_samples, n_features)`.

        Returns:
            `(n_samples, n_classes)` array; columns follow `classes_`.
        """
        logits = self._logits(X)
        logits = logits - logits.max(axis=1, keepdims=True)
        probabilities = np.exp(logits)
        return probabilities / probabilities.sum(axis=1, keepdims=True)

    def predict_log_proba(self, X):
        """Log of `predict_proba`.

        Args:
            X: array-like, `(n_samples, n_features)`.

        Returns:
            `(n_samples, n_classes)` array of log-probabilities.
        """
        logits = self._logits(X)
        logits = logits - logits.max(axis=1, keepdims=True)
        return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))

    def predict(self, X):
        """Predicts class labels of the current task.

        Args:
            X: array-like, `(n_samples, n_features)`.

        Returns:
            `(n_samples,)` array of labels from `classes_`.
        """
        logits = self._logits(X)
        return self.classes_[np.argmax(logits, axis=1)]


class MetaRegressor(RegressorMixin, _MetaEstimatorBase):
    """A few-shot regressor that meta-learns, as a scikit-learn estimator.

    `fit(X, y, groups=groups)` meta-trains a metakeras `MetaModel` on
    regression tasks: `groups` names the task of every row (a user, a site,
    a sinusoid), and each episode draws one task, `shots` support rows and
    `queries` other query rows of it. The model learns an initialisation
    from which a few gradient steps on a new task's support rows fit that
    task. `adapt(X_support, y_support)` then adapts to a new task;
    `predict` and `score` refer to it. Without `groups` all rows form one
    task and meta-training amounts to ordinary training on random subsets.

    After `fit`, the model is adapted to the whole training set (all groups
    pooled), so `predict` works as for any regressor; call `adapt` with one
    task's rows for per-task predictions.

    Small data. Every task (group) needs at least `shots + 1` rows,
    otherwise `fit` raises a `ValueError`; `queries` is lowered to what the
    smallest task allows (`queries_`). `y` may be 1-D or `(n_samples,
    n_targets)`.

    Algorithm settings (`inner_steps` to `zero_head`, as for
    `MetaClassifier`): `None` takes the algorithm's default for regression
    in `metakeras.models.registry`; a setting the algorithm does not take is
    ignored.

    Args:
        algorithm: a name of `metakeras.models.available("regression")`
            (maml, fomaml, metasgd, anil, reptile), or a
            `metakeras.MetaModel` subclass. Defaults to `"maml"`.
        learner: `None` (an MLP from `hidden_units`), a `keras.Model` (cloned
            with fresh weights at each fit) or a callable
            `learner(n_features_in, n_outputs)` returning a Keras model with
            `n_outputs` outputs (called twice per fit on a GPU, as for
            `MetaClassifier`). Defaults to `None`.
        hidden_units: hidden-layer widths of the default MLP (ReLU). Defaults
            to `(40, 40)`, the MAML paper's sinusoid network.
        shots: support rows per task in an episode (K). Defaults to `5`.
        queries: query rows per task in an episode. Defaults to `10`.
        meta_batch_size: tasks per meta-update. Defaults to `8`.
        inner_steps: inner-loop gradient steps in meta-training (gradient
            algorithms). Defaults to `None` (the algorithm's: 1, reptile 5).
        inner_learning_rate: inner-loop step size. Defaults to `None` (the
            algorithm's default for regression, 0.01).
        first_order: first-order meta-gradients. Defaults to `None` (`False`;
            fomaml and reptile are first order).
        inner_batch_size: support rows per inner step. Defaults to `None`
            (all of them: full-batch steps).
        adapt_steps: inner steps when adapting (`fit`'s final adaptation and
            `adapt`); `None` uses `inner_steps`. Defaults to `None`.
        epochs: meta-training epochs; `0` skips meta-training. Defaults to
            `10`.
        steps_per_epoch: meta-batches per epoch. Defaults to `20`.
        optimizer: Keras optimizer name or instance. Defaults to `"adam"`.
        learning_rate: outer learning rate; `None` keeps the optimizer's own.
            Defaults to `None`.
        vectorize_tasks: run the tasks of a meta-batch under
            `torch.func.vmap` (`True`), one by one (`False`), or choose by
            device and learner (`"auto"`). Defaults to `"auto"`.
        warm_start: continue meta-training on the next `fit`. Defaults to
            `False`.
        random_state: `None`, an int or a `numpy.random.RandomState`.
            Defaults to `None`.
        verbose: Keras `fit` verbosity. Defaults to `0`.
        callbacks: list of `keras.callbacks.Callback`. Defaults to `None`.
        inner_shuffle: with `inner_batch_size`, draw the inner mini-batches
            from a fresh permutation of the support rows. Defaults to `None`
            (`True`).
        inner_clipnorm: clip each weight's inner gradient to this L2 norm at
            every inner step (`InnerLoop(clipnorm=...)`). Defaults to `None`
            (no clipping).
        inner_global_clipnorm: clip the joint L2 norm of all inner gradients
            to this at every inner step. Defaults to `None` (no clipping).
        per_step_bn_statistics: keep BatchNormalization moving statistics
            per inner step (MAML++); needs a `learner` with
            BatchNormalization layers. Defaults to `None` (`False`).
        transductive_eval: predict with batch statistics: the model's
            episodic evaluation does (`MetaModel`'s `transductive_eval`), and
            `predict` and `score` run the adapted model in training mode
            on the rows they are given, in batches of 1024 rows, so that
            BatchNormalization normalises them with their own statistics
            (Dropout is active too). Defaults to `None` (`False`).
        zero_head: keep the learner's head at zero between meta-updates
            (`metakeras.callbacks.ZeroHead`, the zeroing trick), run before
            `callbacks`. Defaults to `None` (`False`).

    Attributes:
        n_features_in_, feature_names_in_: as in scikit-learn.
        model_: the meta-trained `metakeras.MetaModel`.
        adapted_model_: the Keras model adapted to the current task.
        history_: dict of per-epoch meta-training metrics.
        queries_: query rows per task actually used.
        n_outputs_: number of targets.
        n_groups_: number of tasks in the training data.

    Example:

    ```python
    from metakeras.sklearn import MetaRegressor

    reg = MetaRegressor(shots=10, adapt_steps=10, epochs=20)
    reg.fit(X, y, groups=task_ids)            # rows of many related tasks
    reg.adapt(X_new_task[:10], y_new_task[:10]).predict(X_new_task[10:])
    ```
    """

    _task = "regression"

    def __init__(
        self,
        algorithm="maml",
        learner=None,
        hidden_units=(40, 40),
        shots=5,
        queries=10,
        meta_batch_size=8,
        inner_steps=None,
        inner_learning_rate=None,
        first_order=None,
        inner_batch_size=None,
        adapt_steps=None,
        epochs=10,
        steps_per_epoch=20,
        optimizer="adam",
        learning_rate=None,
        vectorize_tasks="auto",
        warm_start=False,
        random_state=None,
        verbose=0,
        callbacks=None,
        inner_shuffle=None,
        inner_clipnorm=None,
        inner_global_clipnorm=None,
        per_step_bn_statistics=None,
        transductive_eval=None,
        zero_head=None,
    ):
        self.algorithm = algorithm
        self.learner = learner
        self.hidden_units = hidden_units
        self.shots = shots
        self.queries = queries
        self.meta_batch_size = meta_batch_size
        self.inner_steps = inner_steps
        self.inner_learning_rate = inner_learning_rate
        self.first_order = first_order
        self.inner_batch_size = inner_batch_size
        self.adapt_steps = adapt_steps
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.vectorize_tasks = vectorize_tasks
        self.warm_start = warm_start
        self.random_state = random_state
        self.verbose = verbose
        self.callbacks = callbacks
        self.inner_shuffle = inner_shuffle
        self.inner_clipnorm = inner_clipnorm
        self.inner_global_clipnorm = inner_global_clipnorm
        self.per_step_bn_statistics = per_step_bn_statistics
        self.transductive_eval = transductive_eval
        self.zero_head = zero_head

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags

    def _multi_output_y(self):
        return True

    def _loss(self):
        return "mse"

    def _metrics(self):
        return None

    def fit(self, X, y, groups=None):
        """Meta-trains on tasks drawn from the groups of `X, y`, then adapts to all.

        Args:
            X: array-like or DataFrame, `(n_samples, n_features)`, numeric.
            y: targets, `(n_samples,)` or `(n_samples, n_targets)`.
            groups: task label of every row, `(n_samples,)`; support and
                query rows of an episode come from one task. Defaults to
                `None` (all rows are one task).

        Returns:
            `self`.

        Raises:
            ValueError: for NaN/inf or non-numeric data, a task with fewer
                than `shots + 1` rows, or invalid hyper-parameters.
        """
        return self._fit(X, y, groups, self.epochs, warm=self.warm_start)

    def partial_fit(self, X, y, groups=None):
        """Meta-trains one more epoch on tasks from `X, y`.

        The first call builds the model; later calls continue meta-training
        it. Afterwards the estimator is adapted to `X, y`.

        Args:
            X: array-like, `(n_samples, n_features)`.
            y: targets, `(n_samples,)` or `(n_samples, n_targets)`.
            groups: task label of every row. Defaults to `None`.

        Returns:
            `self`.
        """
        return self._fit(X, y, groups, 1, warm=True)

    def _prepare_fit(self, X, y, groups, seed, continuing):
        name = type(self).__name__
        y = np.asarray(y, dtype=np.float32)
        self._y_ndim = y.ndim
        targets = y.reshape(len(y), -1)
        if groups is None:
            groups = np.zeros(len(X), dtype="int64")
        groups = column_or_1d(np.asarray(groups), warn=True)
        if len(groups) != len(X):
            raise ValueError(
                f"{name}: `groups` must hold one task label per row of X; got "
                f"{len(groups)} labels for {len(X)} rows."
            )
        tasks = _GroupedRegressionTasks(
            X,
            targets,
            groups,
            shots=self.shots,
            queries=self.queries,
            meta_batch_size=self.meta_batch_size,
            steps=self.steps_per_epoch,
            seed=seed,
        )
        self.queries_ = tasks.queries
        self.n_groups_ = tasks.num_groups
        return tasks, targets.shape[1], targets

    def _adapt_to(self, X, targets):
        steps = self._adapt_steps()
        kwargs = {} if steps is None else {"steps": steps}
        self.adapted_model_ = self.model_.adapt(X, targets, **kwargs)

    def adapt(self, X_support, y_support):
        """Adapts the meta-learned model to a new task from its labelled rows.

        The meta-learned weights are left unchanged; afterwards `predict`
        and `score` refer to this task.

        Args:
            X_support: array-like, `(n_rows, n_features)`: the task's rows.
            y_support: their targets, with as many targets as in `fit`.

        Returns:
            `self`.

        Example:

        ```python
        reg.adapt(X_task[:5], y_task[:5]).predict(X_task[5:])
        ```
        """
        X, y = self._validate_adapt_data(X_support, y_support)
        targets = np.asarray(y, dtype=np.float32).reshape(len(y), -1)
        if targets.shape[1] != self.n_outputs_:
            raise ValueError(
                f"{type(self).__name__}.adapt: `y_support` has {targets.shape[1]} "
                f"target(s) per row, but the model was fit on {self.n_outputs_}."
            )
        with _Seeds(self.random_state).context():
            self._adapt_to(X, targets)
        return self

    def predict(self, X):
        """Predicts targets of the current task.

        Args:
            X: array-like, `(n_samples, n_features)`.

        Returns:
            `(n_samples,)`, or `(n_samples, n_targets)` when fit on 2-D `y`.
        """
        outputs = self._outputs(X)
        if self._y_ndim == 1:
            return outputs.ravel()
        return outputs


class _GroupedRegressionTasks(keras.utils.PyDataset):
    """Meta-batches of regression episodes, each drawn within one group of rows.

    Every episode picks a group (without replacement within a meta-batch
    when there are enough groups), then `shots + queries` distinct rows of
    it: the first `shots` are the support set, the rest the query set.
    Batches are a pure function of `(seed, epoch, index)`, like
    `metakeras.tasks.TaskSampler`.

    Args:
        x: float32 `(n, features)`.
        y: float32 `(n, targets)`.
        groups: `(n,)` task labels.
        shots: support rows per episode.
        queries: wanted query rows per episode; lowered to what the smallest
            group allows (`self.queries`).
        meta_batch_size: episodes per batch.
        steps: batches per epoch.
        seed: integer seed.
    """

    def __init__(self, x, y, groups, shots, queries, meta_batch_size, steps, seed):
        super().__init__()
        labels, codes = np.unique(groups, return_inverse=True)
        sizes = np.bincount(codes)
        needed = shots + 1
        small = np.flatnonzero(sizes < needed)
        if small.size:
            detail = ", ".join(
                f"task {labels[i].item()!r} has {sizes[i]} sample{'s' if sizes[i] != 1 else ''}"
                for i in small[:5]
            )
            raise ValueError(
                f"MetaRegressor needs at least shots + 1 = {needed} rows in every "
                f"task (shots={shots} support rows and at least one query row), but "
                f"{small.size} task(s) have fewer: {detail}"
                f"{' ...' if small.size > 5 else ''}. Lower `shots`, or merge or "
                "drop small groups."
            )
        self.x, self.y = x, y
        self.members = [np.flatnonzero(codes == g) for g in range(len(labels))]
        self.num_groups = len(labels)
        self.shots = int(shots)
        self.queries = int(min(queries, sizes.min() - shots))
        self.meta_batch_size = int(meta_batch_size)
        self.steps = int(steps)
        self.seed = int(seed)
        self.epoch = 0

    def __len__(self):
        return self.steps

    def __getitem__(self, index):
        if not 0 <= index < self.steps:
            raise IndexError(f"Batch index {index} out of range [0, {self.steps}).")
        rng = np.random.default_rng([self.seed, self.epoch, index])
        t = self.meta_batch_size
        chosen = rng.choice(self.num_groups, t, replace=t > self.num_groups)
        per_task = self.shots + self.queries
        rows = np.stack(
            [rng.choice(self.members[g], per_task, replace=False) for g in chosen]
        )
        support, query = rows[:, : self.shots], rows[:, self.shots :]
        return {
            "support_x": self.x[support],
            "support_y": self.y[support],
            "query_x": self.x[query],
            "query_y": self.y[query],
        }

    def on_epoch_end(self):
        self.epoch += 1


class _ContractOnly(keras.utils.PyDataset):
    """A task source reduced to the four episode-contract keys.

    `TaskSampler` batches also carry `classes`; Keras would otherwise hand
    them to the model with the episode.
    """

    def __init__(self, source):
        super().__init__()
        self.source = source

    def __len__(self):
        return len(self.source)

    def __getitem__(self, index):
        batch = self.source[index]
        return {
            key: batch[key] for key in ("support_x", "support_y", "query_x", "query_y")
        }

    def on_epoch_end(self):
        self.source.on_epoch_end()


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


def _is_int(value, minimum):
    return (
        not isinstance(value, (bool, np.bool_))
        and isinstance(value, numbers.Integral)
        and value >= minimum
    )


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


def _preview(values, limit=10):
    values = list(np.asarray(values).tolist())
    text = ", ".join(repr(v) for v in values[:limit])
    return f"[{text}{', ...' if len(values) > limit else ''}]"
