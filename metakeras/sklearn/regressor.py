"""`MetaRegressor`: a few-shot regressor that meta-learns."""

import numpy as np
from sklearn.base import RegressorMixin
from sklearn.utils.validation import column_or_1d

from metakeras.sklearn._base import _MetaEstimatorBase, _Seeds
from metakeras.tasks import GroupedTasks

__all__ = ["MetaRegressor"]


class MetaRegressor(RegressorMixin, _MetaEstimatorBase):
    """A few-shot regressor that meta-learns, as a scikit-learn estimator.

    `fit(X, y, groups=groups)` meta-trains a metakeras `MetaModel` on
    regression tasks: `groups` names the task of every row (a user, a site,
    a sinusoid), and each episode draws one task, `shots` support rows and
    `queries` other query rows of it (`metakeras.tasks.GroupedTasks`). The model learns an initialisation
    from which a few gradient steps on a new task's support rows fit that
    task. `adapt(X_support, y_support)` then adapts to a new task;
    `predict` and `score` refer to it. Without `groups` all rows form one
    task and meta-training amounts to ordinary training on random subsets.

    After `fit`, the model is adapted to the whole training set (all groups
    pooled), so `predict` works as for any regressor; call `adapt` with one
    task's rows for per-task predictions.

    Model selection on tasks never trained on: `cv=TaskSplit(...)` and
    `scoring=cv.scorer()` (`metakeras.sklearn.TaskSplit`).

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
        inner_optimizer: the inner update rule by name, `"sgd"`, `"adam"` or
            `"rmsprop"` (Keras's optimizer at `inner_learning_rate`,
            `InnerLoop(optimizer=...)`). Defaults to `None` (plain gradient
            descent).
        per_step_bn_statistics: keep BatchNormalization moving statistics
            per inner step (MAML++); needs a `learner` with
            BatchNormalization layers. Defaults to `None` (`False`).
        proximal_lambda: imaml's proximal strength `lambda`. Defaults to
            `None` (`1.0`).
        cg_steps: imaml's conjugate-gradient steps per task. Defaults to
            `None` (`5`).
        cg_damping: imaml's damping of the Hessian in the conjugate-gradient
            system. Defaults to `None` (`20.0`).
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
        inner_optimizer=None,
        proximal_lambda=None,
        cg_steps=None,
        cg_damping=None,
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
        self.inner_optimizer = inner_optimizer
        self.proximal_lambda = proximal_lambda
        self.cg_steps = cg_steps
        self.cg_damping = cg_damping
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

    def _prepare_fit(self, X, y, groups, seed, continuing, warm):
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
        tasks = GroupedTasks(
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
        return tasks, targets.shape[1], targets, None

    def _adapt_to(self, X, targets):
        steps = self._adapt_steps()
        kwargs = {} if steps is None else {"inner_steps": steps}
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
