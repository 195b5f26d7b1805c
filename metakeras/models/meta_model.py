"""`MetaModel`: the Keras model that meta-learns over episodes."""

import warnings

import keras
import numpy as np
import torch

from metakeras import _keras_compat, distributed
from metakeras._progress import resolve_verbose
from metakeras.config import _tune_malloc_for_training
from metakeras.layers.batch_normalization import _discarding_moving_statistics
from metakeras.models import _resume
from metakeras.models._cuda_graph import GraphedTrainStep
from metakeras.models._stateless import stateless_forward
from metakeras.models._task_loss import TaskLoss
from metakeras.models._vectorize import auto_vectorize, channels_last_layers
from metakeras.tasks.episode import EPISODE_KEYS, unpack_episode, validate_episode

NONFINITE_MODES = ("raise", "skip", "ignore")


@keras.saving.register_keras_serializable(package="metakeras")
class MetaModel(_keras_compat.BuildHook, keras.Model):
    """Base class of the meta-learning algorithms.

    A `MetaModel` wraps an ordinary Keras model, the `learner`, and trains it
    on episodes instead of batches of examples. Each training step receives a
    meta-batch in the episode contract (`support_x (T, N*K, ...)`,
    `support_y`, `query_x (T, N*Q, ...)`, `query_y`, see
    `metakeras.tasks.episode`), adapts the learner to every task's support set
    and scores the adapted learner on that task's query set. `compile`
    configures the *outer* update (optimizer, task loss, metrics); the logged
    loss and metrics are query-set values after adaptation.

    Subclasses define how one task is adapted (`_task_forward`) and what
    `adapt` returns. The tasks of a meta-batch run one after another, or all
    at once through `torch.func.vmap` with `vectorize_tasks=True` (much faster
    for small dense learners; measure it for convolutional ones).

    Calling the model on plain inputs (`model(x)`, `model.predict(x)`) runs the
    learner with the meta-learned weights, before any adaptation.

    Args:
        learner: a built or buildable `keras.Model` (Sequential, functional or
            subclassed) mapping inputs to predictions.
        vectorize_tasks: `True` batches the tasks of a meta-batch with
            `torch.func.vmap`, `False` runs them one after another (and
            keeps one task's activations in memory at a time), `"auto"`
            batches them where that is correct and faster: on GPUs, for
            learners made of the layers listed in
            `metakeras.models._vectorize`. Defaults to `"auto"`.
        **kwargs: passed to `keras.Model` (e.g. `name`).

    Example:

    ```python
    # MetaModel is abstract: use one of its subclasses, which all share
    # this workflow.
    model = metakeras.MAML(learner)  # a MetaModel
    model.compile(optimizer="adam", loss="mse")
    model.fit(metakeras.tasks.SinusoidTasks(shots=5), epochs=2)
    model.evaluate(metakeras.tasks.SinusoidTasks(shots=5, seed=1, steps=4))
    ```
    """

    def __init__(self, learner, vectorize_tasks="auto", **kwargs):
        super().__init__(**kwargs)
        if not isinstance(learner, keras.Model):
            raise ValueError(
                "`learner` must be a keras.Model (Sequential, functional or "
                f"subclassed). Received: {type(learner).__name__}"
            )
        if vectorize_tasks != "auto":
            _check_flag(vectorize_tasks, "vectorize_tasks", extra=' or "auto"')
        _check_single_input_output(learner)
        self.learner = learner
        self.vectorize_tasks = vectorize_tasks
        self._auto_vectorize = None
        self._learner_input_shape = None
        self._learner_output_shape = None
        self._task_loss = None
        self.on_nonfinite = "raise"
        self._step_episode = None
        self._step_rng = None
        self._step_loss_state = None
        self._step_skipped = False
        self._graph_runner = None
        self._graph_episode = None
        self._graph_checks = None
        if learner.built and getattr(learner, "outputs", None):
            self._learner_input_shape = tuple(learner.inputs[0].shape)
            self._learner_output_shape = tuple(learner.outputs[0].shape)
            self.built = True

    def call(self, inputs, training=False):
        return self.learner(inputs, training=training)

    def predict(self, x, batch_size=None, verbose="auto", steps=None, **kwargs):
        """Predicts with the meta-learned weights, before any adaptation.

        As `keras.Model.predict`; array inputs are checked first, so a wrong
        rank, feature shape or dtype, an empty array or NaN raises a
        `ValueError` naming `x` rather than an error from inside the learner.

        Args:
            x: inputs `(examples, *features)`: an array, a tensor, or any
                input `keras.Model.predict` accepts.
            batch_size: as in Keras. Defaults to `None` (32).
            verbose: as in Keras. Defaults to `"auto"`.
            steps: as in Keras. Defaults to `None`.
            **kwargs: other `keras.Model.predict` arguments (`callbacks`).

        Returns:
            NumPy array of predictions `(examples, *outputs)`.

        Raises:
            ValueError: for malformed array inputs.

        Example:

        ```python
        y0 = model.predict(x_new)  # the initialisation's predictions
        ```
        """
        _refuse_episodes(x)
        if isinstance(x, (np.ndarray, torch.Tensor, list)):
            x = self._check_inputs(x, "x")
        return super().predict(
            x, batch_size=batch_size, verbose=verbose, steps=steps, **kwargs
        )

    def _check_inputs(self, x, name):
        """Validates a batch of plain learner inputs `(examples, *features)`."""
        x = _to_tensor(x, name)
        if x.ndim < 1 or x.shape[0] == 0:
            raise ValueError(
                f"`{name}` must hold at least one example along its first axis; "
                f"received shape {tuple(x.shape)}."
            )
        if x.is_floating_point() and not bool(torch.isfinite(x).all()):
            raise ValueError(f"`{name}` contains NaN or infinite values.")
        self._check_example_shape(tuple(x.shape[1:]), name)
        return keras.ops.convert_to_numpy(x)

    def _check_example_shape(self, received, name):
        """Raises unless one example of shape `received` fits the learner."""
        expected = self._learner_input_shape
        if expected is None:
            return
        wanted = tuple(expected[1:])
        if len(wanted) != len(received) or any(
            w is not None and w != r for w, r in zip(wanted, received)
        ):
            raise ValueError(
                f"`{name}` has feature shape {received}, but the learner "
                f"expects inputs of shape {wanted}."
            )

    def compile(
        self,
        optimizer="adam",
        loss=None,
        metrics=None,
        on_nonfinite="raise",
        **kwargs,
    ):
        """Configures the outer (meta) update.

        Non-finite values: every training step checks the meta-gradient (after
        it is averaged over processes under `metakeras.distributed`, so all
        processes decide alike) and the learner's new state once, with one
        host synchronisation. When a value is NaN or infinite, no update is
        applied, and by default training stops with a `FloatingPointError`
        that says whether the inner loop (which task, which inner step) or
        the outer loss went non-finite. Gradient clipping: the optimizer's own
        `clipnorm`/`global_clipnorm` clip the meta-gradient; the algorithms'
        `inner_clipnorm`/`inner_global_clipnorm` clip every inner step.

        Args:
            optimizer: the outer optimizer, as in `keras.Model.compile`.
                Defaults to `"adam"`.
            loss: the task loss, used both for the inner loop on the support
                set and for the outer loss on the query set: a name, a
                function `fn(y_true, y_pred)` or a `keras.losses.Loss`.
            metrics: query-set metrics, as in `keras.Model.compile`.
            on_nonfinite: what a training step does when its meta-gradient
                or new learner state holds NaN or infinite values:
                `"raise"` stops training with a `FloatingPointError` naming
                the cause; `"skip"` leaves the weights and the optimizer
                unchanged, leaves the step out of the loss and metrics, and
                counts it in the logged metric `skipped_batches` (per epoch);
                `"ignore"` applies the update anyway, as plain Keras does (no
                check, no synchronisation). With a
                `keras.optimizers.LossScaleOptimizer` the check is left to
                it. Defaults to `"raise"`.
            **kwargs: other `keras.Model.compile` arguments.
                `jit_compile=True` records the whole training step (inner
                loop with its second-order gradients, outer backward,
                optimizer update, metrics) as a CUDA graph after two eager
                steps, and replays it for every later meta-batch of the same
                shape: the same results with a fraction of the kernel
                launches and none of the Python. `torch.compile`, what the
                switch means for other Keras models on the torch backend,
                cannot differentiate twice. Where a graph cannot replay the
                step (no CUDA device, several processes, weight constraints,
                a `LossScaleOptimizer`, a layer that reads values on the
                host or copies from it) the model warns once, saying why,
                and trains eagerly. Defaults to Keras's `"auto"`, which is
                eager.

        Raises:
            ValueError: for a missing or multiple `loss`, or an unknown
                `on_nonfinite`.

        Example:

        ```python
        model.compile(
            optimizer=keras.optimizers.Adam(1e-3, global_clipnorm=1.0),
            loss="mse",
            on_nonfinite="skip",  # log `skipped_batches` instead of stopping
        )
        ```
        """
        if on_nonfinite not in NONFINITE_MODES:
            raise ValueError(
                f"`on_nonfinite` must be one of {NONFINITE_MODES}. Received: "
                f"on_nonfinite={on_nonfinite!r}"
            )
        if loss is None:
            raise ValueError(
                "MetaModel.compile() needs a `loss`: the task loss used in the "
                "inner loop and on the query set, e.g. loss='mse' or "
                "loss='sparse_categorical_crossentropy'."
            )
        if isinstance(loss, (list, tuple, dict)):
            raise ValueError(
                "MetaModel supports a single task loss; received a "
                f"{type(loss).__name__} of losses: {loss!r}."
            )
        graphed = kwargs.get("jit_compile") is True
        # Keras would hand the step to torch.compile, which cannot
        # differentiate twice; the CUDA graph replaces it.
        kwargs["jit_compile"] = False
        self._graph_runner = GraphedTrainStep(self) if graphed else None
        self._task_loss = TaskLoss(loss)
        self.on_nonfinite = on_nonfinite
        if on_nonfinite == "skip" and not hasattr(self, "_skipped_tracker"):
            self._skipped_tracker = keras.metrics.Sum(name="skipped_batches")
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)

    def get_compile_config(self):
        config = super().get_compile_config()
        if config is not None and self.on_nonfinite != "raise":
            config = dict(config, on_nonfinite=self.on_nonfinite)
        if config is not None and self._graph_runner is not None:
            config = dict(config, jit_compile=True)
        return config

    def compile_from_config(self, config):
        # Keras skips models that override `compile`; ours takes the same
        # arguments, so the saved configuration can be replayed as is.
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.optimizer is not None and self.built:
            self.optimizer.build(self.trainable_variables)

    def fit(
        self,
        x=None,
        y=None,
        batch_size=None,
        epochs=1,
        verbose="auto",
        callbacks=None,
        **kwargs,
    ):
        """Meta-trains on a task source, as `keras.Model.fit`.

        Every `keras.callbacks.BackupAndRestore` among `callbacks` (also its
        subclasses, such as `metakeras.distributed.BackupAndRestore`) runs
        with exact resumption: a run killed at any point, also mid-epoch
        (`save_freq=<batches>`), and started again with the same code,
        arguments and seed ends with the same weights as a run that was
        never interrupted. The backup holds the weights and the optimizer
        state, the epoch and the batches done, the task source's position
        (its `epoch`), the learner's non-trainable state (including Keras
        seed generators, which `save_weights` leaves out), the metric states,
        and the Python, NumPy, PyTorch and Keras random states; the batches
        of the interrupted epoch that the backup covers are fetched again
        (Keras's batch order is reproduced) but not trained on. Each backup
        is written to new files and committed with an atomic rename, so a
        kill while writing leaves the previous backup usable. The callback
        objects passed in are not modified.

        Args:
            x: the task source: a `keras.utils.PyDataset` of meta-batches
                (`metakeras.tasks.TaskSampler`, `SinusoidTasks`) or a dict of
                episode arrays.
            y: unused (the targets are in the episodes). Defaults to `None`.
            batch_size: tasks per meta-batch when `x` holds arrays.
                Defaults to `None`.
            epochs: as in Keras. Defaults to `1`.
            verbose: as in Keras; `"auto"` is a progress bar (1) on an
                interactive terminal and a line per epoch (2) otherwise, so
                logs do not fill with a line per update. Defaults to
                `"auto"`.
            callbacks: as in Keras. Defaults to `None`.
            **kwargs: the other `keras.Model.fit` arguments.

        Returns:
            A `keras.callbacks.History`.

        Example:

        ```python
        backup = keras.callbacks.BackupAndRestore("run/backup", save_freq=50)
        model.fit(tasks, epochs=10, callbacks=[backup])  # rerun after a kill
        ```
        """
        if isinstance(x, dict):
            validate_episode(*unpack_episode(x), num_classes=None)
        if isinstance(verbose, str) and verbose == "auto":
            verbose = resolve_verbose(verbose)
        return super().fit(
            x,
            y,
            batch_size=batch_size,
            epochs=epochs,
            verbose=verbose,
            callbacks=_resume.exact_backups(callbacks, x),
            **kwargs,
        )

    # ------------------------------------------------------------------ steps

    def make_train_function(self, force=False):
        # `train_on_batch` asks for the train function on every call; tune
        # only when it is built.
        if (self.train_function is None or force) and self.trainable_variables:
            # Per-task buffers are freed and reallocated many times a step;
            # see metakeras.config for why freed memory is kept for reuse.
            _tune_malloc_for_training(self.trainable_variables[0].value.device.type)
        return super().make_train_function(force=force)

    def train_step(self, data):
        if self._replays_graphs():
            return self._graph_runner(data)
        support_x, support_y, query_x, query_y = self._episode_tensors(data)
        variables = self.trainable_variables
        if self._vectorized() or not self._loss_is_mean():
            predictions, new_state = self._episode_forward(
                support_x, support_y, query_x, training=True
            )
            y = _merge_tasks(query_y)
            y_pred = _merge_tasks(predictions)
            loss = self._query_loss(y, y_pred, self._loss_is_plain())
            _keras_compat.loss_tracker(self).update_state(
                loss, sample_weight=y.shape[0]
            )
            gradients = self._gradients(self.optimizer.scale_loss(loss), variables)
        else:
            y, y_pred, new_state, gradients = self._accumulated_gradients(
                support_x, support_y, query_x, query_y, variables
            )
        gradients = self._with_loss_check(gradients)
        with torch.no_grad():
            self._apply_meta_update(gradients, variables, new_state)
        return self.compute_metrics(None, y, y_pred.detach())

    def _replays_graphs(self):
        """Whether `train_step` hands this step to the CUDA graph runner.

        Every `train_step` starts by asking (`compile(jit_compile=True)`);
        the runner then calls `train_step` again for the step it records.
        """
        runner = self._graph_runner
        return (
            runner is not None
            and runner.reason is None
            and (self._graph_episode is None)
        )

    def _graph_signature(self):
        """The Python-side settings a recorded CUDA graph depends on."""
        inner = getattr(self, "inner", None)
        return (
            type(self),
            self._vectorized(),
            self.on_nonfinite,
            self.trainable,
            None if inner is None else tuple(inner.get_config().items()),
        )

    def _vectorized(self):
        """Whether this model's tasks run under `torch.func.vmap`.

        `vectorize_tasks="auto"` is resolved once the learner is built (see
        `metakeras.models._vectorize`).
        """
        if not self.vectorize_tasks:
            return False
        cached = self._auto_vectorize
        if cached is None or cached[0] != self.vectorize_tasks:
            if not self.learner.built:
                return False
            if self.vectorize_tasks == "auto":
                value = auto_vectorize(self.learner)
            else:
                value = not _warn_channels_last(self.learner)
            self._auto_vectorize = (self.vectorize_tasks, value)
        return self._auto_vectorize[1]

    def _gradients(self, loss, variables):
        gradients = torch.autograd.grad(
            loss, [v.value for v in variables], allow_unused=True
        )
        return [
            torch.zeros_like(v.value) if g is None else g
            for v, g in zip(variables, gradients)
        ]

    def _accumulated_gradients(self, support_x, support_y, query_x, query_y, variables):
        """The meta-gradient with one backward pass per task.

        Equal to differentiating the loss of the whole meta-batch (the tasks
        have equal query sizes and the loss is a mean), but each task's graph
        is freed before the next is built, so peak memory holds one task's
        activations instead of the whole meta-batch's.

        Returns:
            `(y, y_pred, new_state, gradients)` as the joint computation would.
        """
        weights = [v.value for v in self.learner.trainable_variables]
        state = [v.value for v in self._state_variables()]
        context = self._episode_context(support_x, support_y, None)
        num_tasks = support_x.shape[0]
        plain = self._loss_is_plain()
        predictions, states, losses, gradients = [], [], [], None
        for i in range(num_tasks):
            task_pred, task_state = self._task_forward(
                weights, state, support_x[i], support_y[i], query_x[i], True, context
            )
            loss = self._query_loss(query_y[i], task_pred, plain)
            losses.append(loss.detach())
            task_gradients = self._gradients(
                self.optimizer.scale_loss(loss) / num_tasks, variables
            )
            if gradients is None:
                gradients = task_gradients
            else:
                torch._foreach_add_(gradients, task_gradients)
            predictions.append(task_pred.detach())
            states.append([_detached(value) for value in task_state])
        # Every task has as many queries, so the mean of the task losses
        # weighted by all queries is the tracker's per-task update summed.
        _keras_compat.loss_tracker(self).update_state(
            torch.stack(losses).mean(), sample_weight=num_tasks * query_y.shape[1]
        )
        new_state = [_reduce_over_tasks(torch.stack(values)) for values in zip(*states)]
        y = _merge_tasks(query_y)
        y_pred = torch.cat(predictions, dim=0)
        return y, y_pred, new_state, gradients

    def _loss_is_plain(self):
        """Whether the query loss is the task loss alone, in PyTorch's form.

        Keras's `compute_loss` adds the learner's regularization losses to
        the compiled loss; without any, and for a loss `TaskLoss` computes
        with one PyTorch call, the two are the same value.
        """
        return self._task_loss.fused and not self.losses

    def _query_loss(self, y, y_pred, plain):
        """The compiled loss on query predictions, as Keras's `compute_loss`."""
        if plain:
            return self._task_loss(y, y_pred)
        return _keras_compat.compute_loss(self, y, y_pred, training=True)

    def _loss_is_mean(self):
        """Whether the compiled loss averages over examples (Keras's default)."""
        loss = self.loss
        if isinstance(loss, keras.losses.Loss):
            return loss.reduction in ("sum_over_batch_size", "mean")
        return isinstance(loss, str) or (
            callable(loss) and not isinstance(loss, (list, dict, tuple))
        )

    def _apply_meta_update(self, gradients, variables, new_state):
        """Applies one outer step: the meta-gradients and the learner's new state.

        Every algorithm's `train_step` ends here, so what must happen to every
        meta-gradient before the optimizer sees it lives in one place.
        """
        # Data parallelism (metakeras.distributed): average the meta-gradients
        # and the learner's floating state (BatchNorm statistics) over the
        # processes first, so every process applies the same step. A no-op
        # in a single process.
        gradients, new_state = distributed.all_reduce_mean((gradients, new_state))
        if self._graph_checks is not None:
            # In a CUDA graph step: no host synchronisation here; the graph
            # runner takes the update back if this flag is false.
            finite = None
            if self.on_nonfinite != "ignore":
                finite = _all_finite(
                    list(gradients) + [v for v in new_state if v.is_floating_point()]
                )
            self._graph_checks.append((gradients, finite))
        # After the reduction, so that every process takes the same decision.
        elif not self._update_is_finite(gradients, variables, new_state):
            return
        self.optimizer.apply(gradients, variables)
        for variable, value in zip(self._state_variables(), new_state):
            variable.assign(value.detach())

    def _with_loss_check(self, gradients):
        """Makes the gradients non-finite when this step's loss is.

        A loss can overflow while its gradient stays finite (the squared
        error of a target of 1e30). Adding `0 * loss_total` (exactly zero
        for a finite loss) to a gradient lets the single check after the
        distributed reduction see it, on every process alike.
        """
        if self.on_nonfinite == "ignore" or not gradients:
            return gradients
        total = _keras_compat.loss_tracker(self).total.value.detach()
        return [gradients[0] + 0.0 * total, *gradients[1:]]

    def _update_is_finite(self, gradients, variables, new_state):
        """Checks a meta-update; skips or raises per `on_nonfinite`.

        One host synchronisation per step: the inner loop is not checked
        step by step; only when the update is non-finite is the meta-batch
        run again, task by task and step by step, to say where.

        Returns:
            `True` if the update may be applied, `False` if it is skipped.

        Raises:
            FloatingPointError: with `on_nonfinite="raise"`, naming the cause.
        """
        if self.on_nonfinite == "ignore" or isinstance(
            self.optimizer, keras.optimizers.LossScaleOptimizer
        ):
            return True
        values = list(gradients) + [v for v in new_state if v.is_floating_point()]
        if not values or bool(_all_finite(values)):
            return True
        # The step's loss is left out of the epoch's mean, as its metrics are
        # (`compute_metrics`), so the next step starts from a finite total.
        if self._step_loss_state is not None:
            for variable, value in zip(
                _keras_compat.loss_tracker(self).variables, self._step_loss_state
            ):
                variable.assign(value)
        if self.on_nonfinite == "skip":
            self._step_skipped = True
            # Metric states are summed over processes, which all skip alike.
            if distributed.rank() == 0:
                self._skipped_tracker.update_state(1.0)
            return False
        raise FloatingPointError(self._nonfinite_message(gradients, variables))

    def _nonfinite_message(self, gradients, variables):
        bad = [
            v.path
            for v, g in zip(variables, gradients)
            if not bool(torch.isfinite(g).all())
        ]
        cause = self._locate_nonfinite()
        if cause is None:
            where = (
                f"the meta-gradient of {_preview_names(bad)} is non-finite "
                "(outer loop), although the support and query losses of every "
                "task are finite: it arises when differentiating the query "
                "loss through the inner loop"
                + (", or on another process" if distributed.is_distributed() else "")
                if bad
                else "the learner's new state (e.g. BatchNormalization moving "
                "statistics) is non-finite"
            )
        else:
            where = cause
        step = int(keras.ops.convert_to_numpy(self.optimizer.iterations)) + 1
        return (
            f"Non-finite values in meta-training step {step}: {where}. The "
            "weights were left unchanged. Lower the inner or outer learning "
            "rate, clip the gradients (`inner_clipnorm=` on the model, "
            "`clipnorm=`/`global_clipnorm=` on the optimizer), or pass "
            "`on_nonfinite='skip'` to `compile` to skip such meta-batches."
        )

    def _locate_nonfinite(self):
        """Re-runs the last meta-batch task by task to find what went non-finite.

        Returns:
            A description naming the inner or outer loss, the task and the
            inner step, or `None` if every loss is finite.
        """
        if self._step_episode is None or self._task_loss is None:
            return None
        weights = [v.value.detach() for v in self.learner.trainable_variables]
        if not all(bool(torch.isfinite(w).all()) for w in weights):
            return "the meta-learned weights themselves are non-finite"
        state = [v.value.detach() for v in self._state_variables()]
        support_x, support_y, query_x, query_y = self._step_episode
        rng = _get_rng_state(support_x.device)
        if self._step_rng is not None:
            # Draw the same inner mini-batches as the failed step did.
            _set_rng_state(self._step_rng)
        try:
            context = dict(self._episode_context(support_x, support_y, None))
            for task in range(support_x.shape[0]):
                found, last = [], []
                context["monitor"] = _inner_monitor(task, found, last)
                predictions, _ = self._task_forward(
                    weights,
                    state,
                    support_x[task],
                    support_y[task],
                    query_x[task],
                    True,
                    context,
                )
                if found:
                    return found[0]
                loss = self._task_loss(query_y[task], predictions)
                if not bool(torch.isfinite(loss).all()) and last:
                    # Finite but huge fast weights: did the inner loop diverge?
                    step, fast = last[-1]
                    support = self._support_loss(
                        state, support_x[task], support_y[task]
                    )
                    after = support(fast)
                    if not bool(torch.isfinite(after).all()):
                        return (
                            f"the inner loop of task {task} of the meta-batch "
                            f"diverged: its support loss after inner step {step + 1} "
                            f"is {float(after)} (query loss {float(loss)})"
                        )
                if not bool(torch.isfinite(loss).all()):
                    return (
                        f"the query loss (outer loop) of task {task} of the "
                        f"meta-batch is {float(loss)} after adaptation; the "
                        "inner loop stayed finite"
                    )
        finally:
            _set_rng_state(rng)
        return None

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        """Updates the compiled metrics, as `keras.Model.compute_metrics`.

        A training step skipped for non-finite values
        (`compile(on_nonfinite="skip")`) leaves the metrics unchanged.

        Args:
            x: the inputs (unused).
            y: the query targets.
            y_pred: the query predictions.
            sample_weight: optional sample weights. Defaults to `None`.

        Returns:
            A dict of the metric values, as `get_metrics_result()`.
        """
        if self._step_skipped:
            self._step_skipped = False
            return self.get_metrics_result()
        return super().compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def test_step(self, data):
        support_x, support_y, query_x, query_y = self._episode_tensors(data)
        predictions, _ = self._episode_forward(
            support_x, support_y, query_x, training=False
        )
        y = _merge_tasks(query_y)
        y_pred = _merge_tasks(predictions)
        loss = _keras_compat.compute_loss(self, y, y_pred, training=False)
        _keras_compat.loss_tracker(self).update_state(loss, sample_weight=y.shape[0])
        return self.compute_metrics(None, y, y_pred)

    # ------------------------------------------------------------ adaptation

    def adapt(self, support_x, support_y, steps=None):
        """Adapts to one task and returns a Keras model for it.

        The meta-learned weights are left untouched.

        Args:
            support_x: the task's labelled inputs, `(examples, *features)`.
            support_y: their targets, `(examples, *targets)`.
            steps: inner steps, for algorithms that take steps; defaults to
                the model's own setting.

        Returns:
            A new `keras.Model` that predicts for this task.
        """
        raise NotImplementedError(
            f"{type(self).__name__} does not define `adapt`; subclasses of "
            "MetaModel must implement it."
        )

    def adapt_and_predict(
        self, support_x, support_y, query_x, steps=None, batch_size=32
    ):
        """Adapts to each task of a meta-batch and predicts its query inputs.

        This is the batched form of `adapt(...).predict(query_x)`, used for
        evaluation on many tasks at once.

        Args:
            support_x: `(T, N*K, *features)` support inputs.
            support_y: `(T, N*K, *targets)` support targets.
            query_x: `(T, N*Q, *features)` query inputs.
            steps: inner steps; defaults to the model's own setting.
            batch_size: tasks processed together. Defaults to `32`.

        Returns:
            NumPy array `(T, N*Q, *outputs)` of query predictions.
        """
        for name, value in (
            ("support_x", support_x),
            ("support_y", support_y),
            ("query_x", query_x),
        ):
            if np.ndim(value) < 2:
                raise ValueError(
                    f"`{name}` must have a leading task axis and an example "
                    "axis, i.e. shape (tasks, examples, ...). Received shape "
                    f"{tuple(np.shape(value))}."
                )
        if (
            isinstance(batch_size, bool)
            or not isinstance(batch_size, int)
            or batch_size < 1
        ):
            raise ValueError(
                "`batch_size` must be a positive integer. Received: "
                f"batch_size={batch_size!r}"
            )
        # Placeholder targets with the support targets' shape, for validation only.
        query_y = np.zeros(
            np.shape(query_x)[:2] + np.shape(support_y)[2:],
            dtype=keras.ops.convert_to_numpy(support_y[:1]).dtype,
        )
        outputs = []
        for start in range(0, len(support_x), batch_size):
            sl = slice(start, start + batch_size)
            sx, sy, qx, _ = self._episode_tensors(
                (support_x[sl], support_y[sl], query_x[sl], query_y[sl]),
                check_labels=False,
            )
            with torch.no_grad():
                predictions, _ = self._episode_forward(
                    sx, sy, qx, training=False, steps=steps
                )
            outputs.append(keras.ops.convert_to_numpy(predictions))
        return np.concatenate(outputs, axis=0)

    # ------------------------------------------------------- per-task logic

    def _task_forward(
        self, weights, state, support_x, support_y, query_x, training, context
    ):
        """Adapts to one task and predicts its query set.

        Must be a pure function of its arguments (it may run under
        `torch.func.vmap`).

        Args:
            weights: the learner's trainable values (meta-learned weights).
            state: the learner's non-trainable values.
            support_x: one task's support inputs (no task axis).
            support_y: its support targets.
            query_x: its query inputs.
            training: whether the query pass runs in training mode.
            context: the dict `_episode_context` made for this meta-batch.

        Returns:
            `(query_predictions, new_state)` where `new_state` is the list of
            the learner's non-trainable values after the query forward pass.
        """
        raise NotImplementedError(
            f"{type(self).__name__} must implement `_task_forward`."
        )

    def _episode_context(self, support_x, support_y, steps):
        """Values shared by all tasks of a meta-batch, computed outside vmap.

        Returns:
            A dict handed to every `_task_forward` call; by default
            `{"steps": steps}`.
        """
        return {"steps": steps}

    def _state_variables(self):
        """The variables whose values travel as `state` through a training step.

        The learner's non-trainable variables (BatchNormalization statistics,
        seed generators); subclasses may append their own (MAML's per-step
        statistics). `_task_forward` returns new values for all of them.
        """
        return list(self.learner.non_trainable_variables)

    def _forward(self, weights, state, x, training):
        """The learner's forward pass with the given weights and state."""
        return stateless_forward(self.learner, weights, state, x, training)

    def _support_loss(self, state, x, y):
        """Returns `loss(weights, index=None)` on a support set, pure in `weights`.

        With `index` (a 1-D tensor of positions) the loss is taken on those
        support examples only (a mini-batch).
        """

        def loss(weights, index=None):
            x_, y_ = _select(x, y, index)
            with _discarding_moving_statistics():
                predictions, _ = self._forward(weights, state, x_, training=True)
            return self._task_loss(y_, predictions)

        return loss

    def _episode_forward(self, support_x, support_y, query_x, training, steps=None):
        if self._task_loss is None:
            raise RuntimeError(
                "The model must be compiled before training, evaluation or "
                "adaptation: call model.compile(optimizer, loss, metrics)."
            )
        weights = [v.value for v in self.learner.trainable_variables]
        state = [v.value for v in self._state_variables()]
        context = self._episode_context(support_x, support_y, steps)

        def task(sx, sy, qx):
            return self._task_forward(weights, state, sx, sy, qx, training, context)

        return _map_tasks(task, (support_x, support_y, query_x), self._vectorized())

    # --------------------------------------------------------- input checks

    def _episode_tensors(self, data, check_labels=True):
        if self._graph_episode is not None:
            # A CUDA graph step: the runner has checked and placed them.
            return self._graph_episode
        arrays = unpack_episode(data)
        support_x, support_y, query_x, query_y = (
            _to_tensor(value, name) for value, name in zip(arrays, _NAMES)
        )
        self._build_learner(support_x)
        validate_episode(
            support_x,
            support_y,
            query_x,
            query_y,
            num_classes=self._num_classes() if check_labels else None,
        )
        self._episode_checks(support_x, support_y, query_y)
        # Kept for `_locate_nonfinite` and the `skip` mode of this step.
        self._step_episode = (support_x, support_y, query_x, query_y)
        if self.on_nonfinite != "ignore":
            self._step_rng = _get_rng_state(support_x.device)
        if self.on_nonfinite != "ignore" and self.compiled:
            self._step_loss_state = [
                v.value.detach().clone()
                for v in _keras_compat.loss_tracker(self).variables
            ]
        self._check_example_shape(tuple(support_x.shape[2:]), "support_x")
        self._check_classification_head()
        return support_x, support_y, query_x, query_y

    def _check_classification_head(self):
        """A cross-entropy loss needs one output per class, at least two."""
        shape = self._learner_output_shape
        if not shape or shape[-1] is None or shape[-1] >= 2:
            return
        loss = getattr(self, "loss", None)
        name = loss if isinstance(loss, str) else type(loss).__name__
        if str(name).lower().replace("_", "") in _CROSS_ENTROPIES:
            raise ValueError(
                f"The compiled loss {name} is a classification loss, but the "
                f"learner predicts {shape[-1]} value(s) per example: it needs one "
                "output (logit) per class of an episode, at least 2 (e.g. "
                "`Dense(ways)` as its last layer)."
            )

    def _episode_checks(self, support_x, support_y, query_y):
        """Checks of a subclass on a validated meta-batch, before the step."""

    def _check_single_task(self, support_x, support_y):
        """Validates one task's support set (no task axis); returns tensors."""
        support_x = _to_tensor(support_x, "support_x")
        support_y = _to_tensor(support_y, "support_y")
        for name, value in (("support_x", support_x), ("support_y", support_y)):
            if value.ndim < 1:
                raise ValueError(
                    f"`{name}` must hold one task's examples along its first "
                    f"axis; received a scalar of shape {tuple(value.shape)}."
                )
        batch = (support_x[None], support_y[None])
        self._build_learner(batch[0])
        self._check_example_shape(tuple(support_x.shape[1:]), "support_x")
        validate_episode(*batch, *batch, num_classes=self._num_classes())
        return support_x, support_y

    def _num_classes(self):
        """Number of classes for integer labels, or None for regression."""
        shape = self._learner_output_shape
        if shape is None or len(shape) < 2 or shape[-1] is None or shape[-1] < 2:
            return None
        return int(shape[-1])

    def _build_learner(self, support_x):
        """Builds the learner from one example of `support_x (T, n, ...)`."""
        if self.learner.built and self._learner_output_shape is not None:
            return
        example = support_x[0, :1]
        if self._learner_input_shape is None:
            self._learner_input_shape = (None, *example.shape[1:])
        with torch.no_grad():
            output = self.learner(example, training=False)
        self._learner_output_shape = (None, *output.shape[1:])
        self.built = True

    def _build_for_steps(self, first_batch):
        """Builds the model before the first step of `fit` or `evaluate`.

        Replaces Keras's symbolic build (see `_keras_compat.BuildHook`),
        which pulls a batch from the data to build the metrics symbolically
        and so shifts a PyDataset's batches for the epoch. The compiled loss,
        metrics and optimizer build on first use, so a batch is only needed
        to build a learner whose input shape is unknown.

        Args:
            first_batch: a function returning the first batch of the data.
        """
        if self._learner_output_shape is None:
            support_x = _to_tensor(unpack_episode(first_batch())[0], "support_x")
            self._build_learner(support_x)
        if self.optimizer is not None and not self.optimizer.built:
            self.optimizer.build(self.trainable_variables)
        # metakeras.distributed: every process starts `fit` and `evaluate`
        # from rank 0's weights and optimizer state (no-op in one process).
        optimizer = list(self.optimizer.variables) if self.optimizer else []
        distributed.broadcast(self.weights + optimizer)

    def get_metrics_result(self):
        """Returns the model's metric values as a dict, as in `keras.Model`.

        Under `metakeras.distributed` the values cover every process's tasks
        (the metric states are summed over the processes), so all processes
        log, and decide to stop on, the same numbers.

        Returns:
            A dict of metric names to scalar tensors, e.g. `{"loss": ...}`.
        """
        return distributed._metrics_result(self, super().get_metrics_result)

    # ------------------------------------------------------- serialization

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "learner": keras.saving.serialize_keras_object(self.learner),
            "vectorize_tasks": self.vectorize_tasks,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        learner = keras.saving.deserialize_keras_object(config.pop("learner"))
        return cls(learner=learner, **config)

    def get_build_config(self):
        if self._learner_input_shape is None:
            return None
        return {"learner_input_shape": list(self._learner_input_shape)}

    def build_from_config(self, config):
        shape = config.get("learner_input_shape") if config else None
        if shape is None:
            return
        example = np.zeros([1] + [d or 1 for d in shape[1:]], dtype="float32")
        self._build_learner(example[None])


_NAMES = ("support_x", "support_y", "query_x", "query_y")


def _to_tensor(value, name):
    if not isinstance(value, torch.Tensor):
        array = np.asarray(value)
        if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
            raise ValueError(
                f"`{name}` must be a numeric array; received dtype {array.dtype}."
            )
        value = array
    tensor = keras.ops.convert_to_tensor(value)
    if tensor.is_floating_point() and tensor.dtype != torch.float32:
        tensor = tensor.to(torch.float32)
    return tensor


def _detached(tensor):
    return tensor.detach() if tensor.requires_grad else tensor


def _all_finite(tensors):
    """A 0-d bool tensor: whether every element of `tensors` is finite.

    `0 * x` is 0 for finite `x` and NaN otherwise, and NaN survives a sum,
    so two multi-tensor operations check every tensor at once (instead of
    three operators per tensor), and large finite values cannot overflow.
    """
    zeros = torch._foreach_mul(tensors, 0.0)
    return torch.stack(torch._foreach_norm(zeros, 1)).sum() == 0


def _get_rng_state(device):
    """The state of the random generator that draws on `device`."""
    if device.type == "cuda":
        return device, torch.cuda.get_rng_state(device)
    return device, torch.get_rng_state()


def _set_rng_state(saved):
    device, state = saved
    if device.type == "cuda":
        torch.cuda.set_rng_state(state, device)
    else:
        torch.set_rng_state(state)


def _map_tasks(task, tensors, vectorize):
    """Runs `task` on every task of a meta-batch and stacks the results.

    Returns:
        `(outputs, state)`: the first output of `task` stacked over tasks,
        and each state value combined over tasks by `_reduce_over_tasks`.
    """
    if vectorize:
        outputs, state = torch.func.vmap(task, randomness="different")(*tensors)
    else:
        results = [task(*(t[i] for t in tensors)) for i in range(tensors[0].shape[0])]
        outputs = keras.tree.map_structure(
            lambda *xs: torch.stack(xs), *[r[0] for r in results]
        )
        state = [torch.stack(values) for values in zip(*[r[1] for r in results])]
    return outputs, [_reduce_over_tasks(value) for value in state]


def _check_flag(value, name, extra=""):
    """Raises unless `value` is a bool, naming the argument `name`."""
    if not isinstance(value, bool):
        raise ValueError(f"`{name}` must be True or False{extra}. Received: {value!r}")


def _select(x, y, index):
    """The support examples at `index` (a 1-D tensor), or all with `None`."""
    if index is None:
        return x, y
    return torch.index_select(x, 0, index), torch.index_select(y, 0, index)


def _merge_tasks(tensor):
    """(T, n, ...) -> (T*n, ...)."""
    return tensor.reshape(-1, *tensor.shape[2:])


def _reduce_over_tasks(values):
    """Combines per-task copies of a state variable into one value.

    Floating state (BatchNormalization moving statistics) is averaged over the
    tasks; integer state (random seed counters) is the same for every task.
    """
    if values.is_floating_point():
        return values.mean(dim=0)
    return values[-1]


def _inner_monitor(task, found, last):
    """An `InnerLoop.run` monitor recording the first non-finite inner step."""

    def monitor(step, loss, gradients, weights):
        last[:] = [(step, weights)]
        if found:
            return
        prefix = f"the inner loop of task {task} of the meta-batch"
        if not bool(torch.isfinite(loss).all()):
            found.append(
                f"{prefix}: its support loss is {float(loss)} at inner step {step + 1}"
            )
        elif not all(bool(torch.isfinite(g).all()) for g in gradients):
            found.append(
                f"{prefix}: the gradient of its support loss "
                f"({float(loss):.4g}) is non-finite at inner step {step + 1}"
            )
        elif not all(bool(torch.isfinite(w).all()) for w in weights):
            found.append(
                f"{prefix}: its fast weights became non-finite in inner step "
                f"{step + 1} (support loss {float(loss):.4g}), a step too large"
            )

    return monitor


def _preview_names(names, limit=3):
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _check_single_input_output(learner):
    """Episodes hold one input array and one target array per task."""
    inputs = getattr(learner, "inputs", None) if learner.built else None
    outputs = getattr(learner, "outputs", None) if learner.built else None
    for kind, tensors in (("inputs", inputs), ("outputs", outputs)):
        if tensors is not None and len(tensors) > 1:
            names = [getattr(t, "name", "?") for t in tensors]
            raise ValueError(
                f"The learner has {len(tensors)} {kind} ({names}), but an episode "
                "holds one input array `(tasks, examples, *features)` and one "
                "target array per set, so metakeras learners take one input and "
                "give one output. Concatenate the inputs into one array (and "
                "split it inside the model with a layer), or combine the outputs "
                "into one."
            )


def _warn_channels_last(learner):
    """Warns (once per model) if `vmap` cannot batch the learner; whether so."""
    blocked = channels_last_layers(learner)
    if blocked:
        names = ", ".join(f"{name!r} ({kind})" for name, kind in blocked)
        warnings.warn(
            f"vectorize_tasks=True: the learner's layer(s) {names} use "
            "data_format='channels_last', which torch.func.vmap cannot batch "
            "(PyTorch: 'NYI: querying is_contiguous inside of vmap'), so the "
            "tasks run one after another instead. Build them with "
            "data_format='channels_first' (also faster on the torch backend) "
            "to batch the tasks.",
            stacklevel=3,
        )
    return bool(blocked)


_CROSS_ENTROPIES = (
    "sparsecategoricalcrossentropy",
    "categoricalcrossentropy",
)


def _refuse_episodes(x):
    """`predict` takes learner inputs; an episode source gets a pointer instead."""
    episode = isinstance(x, dict) and set(EPISODE_KEYS) <= set(x)
    if isinstance(x, keras.utils.PyDataset) and x.num_batches:
        first = x[0]
        episode = isinstance(first, dict) and set(EPISODE_KEYS) <= set(first)
    if episode:
        raise ValueError(
            "`predict` runs the learner with the meta-learned weights on plain "
            "inputs `(examples, *features)`, before any adaptation; received "
            "episodes. To adapt to each episode's support set and predict its "
            "queries, use `model.adapt_and_predict(support_x, support_y, "
            "query_x)` (or `metakeras.evaluation.evaluate_episodes` to score "
            "them)."
        )
