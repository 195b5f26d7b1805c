"""`MetaModel`: the Keras model that meta-learns over episodes."""

import inspect

import keras
import numpy as np
import torch

from metakeras.tasks.episode import unpack_episode, validate_episode


@keras.saving.register_keras_serializable(package="metakeras")
class MetaModel(keras.Model):
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
        vectorize_tasks: if `True`, batch the tasks of a meta-batch with
            `torch.func.vmap`. Defaults to `False`.
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

    def __init__(self, learner, vectorize_tasks=False, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(learner, keras.Model):
            raise ValueError(
                "`learner` must be a keras.Model (Sequential, functional or "
                f"subclassed). Received: {type(learner).__name__}"
            )
        if not isinstance(vectorize_tasks, bool):
            raise ValueError(
                "`vectorize_tasks` must be True or False. Received: "
                f"{vectorize_tasks!r}"
            )
        self.learner = learner
        self.vectorize_tasks = vectorize_tasks
        # `stateless_call` hands keyword arguments straight to `call`.
        self._learner_takes_training = _accepts_training(learner)
        self._learner_input_shape = None
        self._learner_output_shape = None
        self._task_loss = None
        if learner.built and getattr(learner, "outputs", None):
            self._learner_input_shape = tuple(learner.inputs[0].shape)
            self._learner_output_shape = tuple(learner.outputs[0].shape)
            self.built = True

    def call(self, inputs, training=False):
        return self.learner(inputs, training=training)

    def compile(self, optimizer="adam", loss=None, metrics=None, **kwargs):
        """Configures the outer (meta) update.

        Args:
            optimizer: the outer optimizer, as in `keras.Model.compile`.
                Defaults to `"adam"`.
            loss: the task loss, used both for the inner loop on the support
                set and for the outer loss on the query set: a name, a
                function `fn(y_true, y_pred)` or a `keras.losses.Loss`.
            metrics: query-set metrics, as in `keras.Model.compile`.
            **kwargs: other `keras.Model.compile` arguments.
                `jit_compile=True` is not supported (the inner loop uses
                `torch.func` transforms).
        """
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
        if kwargs.get("jit_compile") is True:
            raise ValueError(
                "`jit_compile=True` is not supported by MetaModel: the inner loop "
                "uses torch.func transforms. Use jit_compile=False."
            )
        kwargs["jit_compile"] = False
        self._task_loss = _as_loss_object(loss)
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)

    def compile_from_config(self, config):
        # Keras skips models that override `compile`; ours takes the same
        # arguments, so the saved configuration can be replayed as is.
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.optimizer is not None and self.built:
            self.optimizer.build(self.trainable_variables)

    # ------------------------------------------------------------------ steps

    def train_step(self, data):
        support_x, support_y, query_x, query_y = self._episode_tensors(data)
        predictions, new_state = self._episode_forward(
            support_x, support_y, query_x, training=True
        )
        y = _merge_tasks(query_y)
        y_pred = _merge_tasks(predictions)
        loss = self._compute_loss(y=y, y_pred=y_pred, training=True)
        self._loss_tracker.update_state(loss, sample_weight=y.shape[0])
        loss = self.optimizer.scale_loss(loss)
        variables = self.trainable_variables
        gradients = torch.autograd.grad(
            loss, [v.value for v in variables], allow_unused=True
        )
        gradients = [
            torch.zeros_like(v.value) if g is None else g
            for v, g in zip(variables, gradients)
        ]
        with torch.no_grad():
            self._apply_meta_update(gradients, variables, new_state)
        return self.compute_metrics(None, y, y_pred.detach())

    def _apply_meta_update(self, gradients, variables, new_state):
        """Applies one outer step: the meta-gradients and the learner's new state.

        Every algorithm's `train_step` ends here, so what must happen to every
        meta-gradient before the optimizer sees it lives in one place.
        """
        self.optimizer.apply(gradients, variables)
        for variable, value in zip(self.learner.non_trainable_variables, new_state):
            variable.assign(value.detach())

    def test_step(self, data):
        support_x, support_y, query_x, query_y = self._episode_tensors(data)
        predictions, _ = self._episode_forward(
            support_x, support_y, query_x, training=False
        )
        y = _merge_tasks(query_y)
        y_pred = _merge_tasks(predictions)
        loss = self._compute_loss(y=y, y_pred=y_pred, training=False)
        self._loss_tracker.update_state(loss, sample_weight=y.shape[0])
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

    def _forward(self, weights, state, x, training):
        """The learner's forward pass with the given weights and state."""
        kwargs = {"training": training} if self._learner_takes_training else {}
        return self.learner.stateless_call(weights, state, x, **kwargs)

    def _support_loss(self, state, x, y):
        """Returns `loss(weights, index=None)` on a support set, pure in `weights`.

        With `index` (a 1-D tensor of positions) the loss is taken on those
        support examples only (a mini-batch).
        """

        def loss(weights, index=None):
            if index is not None:
                x_, y_ = (
                    torch.index_select(x, 0, index),
                    torch.index_select(y, 0, index),
                )
            else:
                x_, y_ = x, y
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
        state = [v.value for v in self.learner.non_trainable_variables]
        context = self._episode_context(support_x, support_y, steps)

        def task(sx, sy, qx):
            return self._task_forward(weights, state, sx, sy, qx, training, context)

        return _map_tasks(task, (support_x, support_y, query_x), self.vectorize_tasks)

    # --------------------------------------------------------- input checks

    def _episode_tensors(self, data, check_labels=True):
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
        expected = self._learner_input_shape
        if expected is not None and len(expected) == support_x.ndim - 1:
            received = tuple(support_x.shape[2:])
            wanted = tuple(expected[1:])
            if any(w is not None and w != r for w, r in zip(wanted, received)):
                raise ValueError(
                    f"`support_x` has feature shape {received}, but the learner "
                    f"expects inputs of shape {wanted}."
                )
        return support_x, support_y, query_x, query_y

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

    def _symbolic_build(self, iterator=None, data_batch=None):
        # Keras pulls a batch from the epoch iterator to build the metrics
        # symbolically, which shifts a PyDataset's batches for the epoch. The
        # compiled loss, metrics and optimizer build on first use, so a batch
        # is only needed to build a learner whose input shape is unknown.
        if self._learner_output_shape is None:
            if data_batch is None:
                data_batch = _first_batch(iterator)
            support_x = _to_tensor(unpack_episode(data_batch)[0], "support_x")
            self._build_learner(support_x)
        if self.optimizer is not None and not self.optimizer.built:
            self.optimizer.build(self.trainable_variables)
        self._post_build()

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


def _accepts_training(model):
    parameters = inspect.signature(model.call).parameters.values()
    return any(
        p.name == "training" or p.kind is inspect.Parameter.VAR_KEYWORD
        for p in parameters
    )


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


def _as_loss_object(loss):
    loss = keras.losses.get(loss)
    if isinstance(loss, keras.losses.Loss):
        return loss
    if callable(loss):
        return _FunctionLoss(loss)
    raise ValueError(
        f"`loss` must be a loss name, function or Loss. Received: {loss!r}"
    )


class _FunctionLoss(keras.losses.Loss):
    """A plain loss function `fn(y_true, y_pred)`, reduced over the examples."""

    def __init__(self, fn):
        super().__init__(name=getattr(fn, "__name__", "task_loss"))
        self.fn = fn

    def call(self, y_true, y_pred):
        return self.fn(y_true, y_pred)


def _first_batch(iterator):
    for item in iterator:
        data = item[-1] if isinstance(item, tuple) else item
        if isinstance(data, (list, tuple)):
            return data[0]
        return next(data)
    raise ValueError("The task source yielded no episodes.")
