"""`MetaModel`: the Keras model that meta-learns over episodes.

The class is assembled from mixins, as `keras.Model` is from `Trainer`:
`_trainer` (the training and evaluation steps), `_adaptation` (the per-task
forward pass over a meta-batch), `_checks` (episodes and inputs checked
against the learner) and `_nonfinite` (the check of every meta-update, and
the diagnosis of a non-finite one). This module holds the public API.
"""

import os

import keras
import numpy as np
import torch

from metakeras import _keras_compat
from metakeras._checks import check_flag, inner_steps_argument
from metakeras._io import deflate_archive
from metakeras._progress import resolve_verbose
from metakeras.distributed._reduce import metrics_result
from metakeras.models import _resume
from metakeras.models._adaptation import TaskAdaptation
from metakeras.models._annealing import EpochTracker
from metakeras.models._checks import (
    InputChecks,
    check_meta_batch_arrays,
    check_single_input_output,
    refuse_episodes,
)
from metakeras.models._cuda_graph import GraphedTrainStep
from metakeras.models._nonfinite import NonFiniteChecks, check_on_nonfinite
from metakeras.models._task_loss import TaskLoss
from metakeras.models._trainer import MetaTrainer
from metakeras.tasks.episode import unpack_episode, validate_episode


@keras.saving.register_keras_serializable(package="metakeras")
class MetaModel(
    MetaTrainer,
    TaskAdaptation,
    InputChecks,
    NonFiniteChecks,
    _keras_compat.BuildHook,
    keras.Model,
):
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

    BatchNormalization's moving statistics are warmed up in training: the
    `n`-th meta-update moves them by `max(1 / n, 1 - momentum)` of the way to
    the step's batch statistics, so the first `1 / (1 - momentum)` updates
    average those with equal weights before the layer's exponential average
    takes over (a meta-learner trains hundreds of steps, where Keras's
    momentum 0.99 needs many more to forget the starting values).

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
            check_flag(
                "vectorize_tasks",
                vectorize_tasks,
                expected='True or False or "auto"',
                echo_name=False,
            )
        check_single_input_output(learner)
        self.learner = learner
        self.vectorize_tasks = vectorize_tasks
        self._auto_vectorize = None
        self._learner_input_shape = None
        self._learner_output_shape = None
        self._task_loss = None
        self.on_nonfinite = "raise"
        # What the last step received, for the diagnosis of `_nonfinite`.
        self._step_episode = None
        self._step_rng = None
        self._step_loss_state = None
        self._step_skipped = False
        # `compile(jit_compile=True)`: see `_cuda_graph`.
        self._graph_runner = None
        self._graph_episode = None
        self._graph_checks = None
        # The epoch `fit` is in (`EpochTracker`), for schedules over epochs.
        self._epoch = 0
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
        refuse_episodes(x)
        if isinstance(x, (np.ndarray, torch.Tensor, list)):
            x = self._check_inputs(x, "x")
        return super().predict(
            x, batch_size=batch_size, verbose=verbose, steps=steps, **kwargs
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
        check_on_nonfinite(on_nonfinite)
        _check_task_loss(loss)
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
        callbacks = _resume.exact_backups(callbacks, x)
        return super().fit(
            x,
            y,
            batch_size=batch_size,
            epochs=epochs,
            verbose=verbose,
            callbacks=[*(callbacks or []), EpochTracker()],
            **kwargs,
        )

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

    def get_metrics_result(self):
        """Returns the model's metric values as a dict, as in `keras.Model`.

        Under `metakeras.distributed` the values cover every process's tasks
        (the metric states are summed over the processes), so all processes
        log, and decide to stop on, the same numbers.

        Returns:
            A dict of metric names to scalar tensors, e.g. `{"loss": ...}`.
        """
        return metrics_result(self, super().get_metrics_result)

    # ------------------------------------------------------------ adaptation

    def adapt(self, support_x, support_y, inner_steps=None, **kwargs):
        """Adapts to one task and returns a Keras model for it.

        The meta-learned weights are left untouched.

        Args:
            support_x: the task's labelled inputs, `(examples, *features)`.
            support_y: their targets, `(examples, *targets)`.
            inner_steps: inner gradient steps, for algorithms that take
                steps. Defaults to `None` (the model's own setting).
            **kwargs: `steps`, the deprecated name of `inner_steps`.

        Returns:
            A new `keras.Model` that predicts for this task.
        """
        raise NotImplementedError(
            f"{type(self).__name__} does not define `adapt`; subclasses of "
            "MetaModel must implement it."
        )

    def adapt_and_predict(
        self, support_x, support_y, query_x, inner_steps=None, batch_size=32, **kwargs
    ):
        """Adapts to each task of a meta-batch and predicts its query inputs.

        This is the batched form of `adapt(...).predict(query_x)`, used for
        evaluation on many tasks at once.

        Args:
            support_x: `(T, N*K, *features)` support inputs.
            support_y: `(T, N*K, *targets)` support targets.
            query_x: `(T, N*Q, *features)` query inputs.
            inner_steps: inner gradient steps, for algorithms that take
                steps. Defaults to `None` (the model's own setting).
            batch_size: tasks processed together. Defaults to `32`.
            **kwargs: `steps`, the deprecated name of `inner_steps`.

        Returns:
            NumPy array `(T, N*Q, *outputs)` of query predictions.
        """
        steps = inner_steps_argument(kwargs, inner_steps, "adapt_and_predict")
        check_meta_batch_arrays(support_x, support_y, query_x, batch_size)
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

    # ------------------------------------------------------- serialization

    def save(self, filepath, overwrite=True, zipped=None, **kwargs):
        """Saves the model as Keras does; a pruned model's file is compressed.

        Keras writes `.keras` archives uncompressed, so a model pruned by
        `MagnitudePruning` would store its zeros in full plus its masks. When
        the learner has pruning masks, the archive is rewritten with DEFLATE
        compression: the file is smaller than the unpruned model's and
        `keras.models.load_model` reads it as usual (masks included).

        Args:
            filepath: where to save, as for `keras.Model.save`.
            overwrite: whether to replace an existing file. Defaults to
                `True`.
            zipped: as for `keras.Model.save`. Defaults to `None`.
            **kwargs: the other arguments of `keras.Model.save`.

        Example:

        ```python
        model.fit(tasks, callbacks=[metakeras.callbacks.MagnitudePruning(0.5)])
        model.save("pruned.keras")  # smaller than before pruning
        ```
        """
        super().save(filepath, overwrite=overwrite, zipped=zipped, **kwargs)
        # Imported here: callbacks sit beside the models, not below them.
        from metakeras.callbacks.pruning import has_masks

        path = os.fspath(filepath) if isinstance(filepath, (str, os.PathLike)) else None
        if (
            path is not None
            and path.endswith(".keras")
            and zipped is not False
            and os.path.isfile(path)
            and has_masks(self)
        ):
            deflate_archive(path)

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


def _check_task_loss(loss):
    """Raises unless `loss` is one task loss, as `compile` needs."""
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
