"""Adapting the learner to the tasks of a meta-batch.

A `MetaModel` subclass defines how one task is adapted and its queries
predicted (`_task_forward`, a pure function of the weights); this module
runs it over the tasks of a meta-batch, one after another or all at once
under `torch.func.vmap` (`vectorize_tasks`), and combines the tasks'
predictions and learner states.
"""

import warnings

import keras
import torch

from metakeras.layers.batch_normalization import _discarding_moving_statistics
from metakeras.models._stateless import stateless_forward
from metakeras.models._vectorize import auto_vectorize, channels_last_layers


class TaskAdaptation:
    """Mixin of `MetaModel`: the per-task forward pass over a meta-batch."""

    def _episode_forward(self, support_x, support_y, query_x, training, steps=None):
        """Adapts to every task of a meta-batch and predicts its queries.

        Returns:
            `(predictions, new_state)`: the query predictions `(T, N*Q, ...)`
            and the learner's non-trainable values combined over the tasks.
        """
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

        return map_tasks(task, (support_x, support_y, query_x), self._vectorized())

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
            x_, y_ = select_examples(x, y, index)
            with _discarding_moving_statistics():
                predictions, _ = self._forward(weights, state, x_, training=True)
            return self._task_loss(y_, predictions)

        return loss

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


def map_tasks(task, tensors, vectorize):
    """Runs `task` on every task of a meta-batch and stacks the results.

    Returns:
        `(outputs, state)`: the first output of `task` stacked over tasks,
        and each state value combined over tasks by `reduce_over_tasks`.
    """
    if vectorize:
        outputs, state = torch.func.vmap(task, randomness="different")(*tensors)
    else:
        results = [task(*(t[i] for t in tensors)) for i in range(tensors[0].shape[0])]
        outputs = keras.tree.map_structure(
            lambda *xs: torch.stack(xs), *[r[0] for r in results]
        )
        state = [torch.stack(values) for values in zip(*[r[1] for r in results])]
    return outputs, [reduce_over_tasks(value) for value in state]


def reduce_over_tasks(values):
    """Combines per-task copies of a state variable into one value.

    Floating state (BatchNormalization moving statistics) is averaged over the
    tasks; integer state (random seed counters) is the same for every task.
    """
    if values.is_floating_point():
        return values.mean(dim=0)
    return values[-1]


def merge_tasks(tensor):
    """(T, n, ...) -> (T*n, ...)."""
    return tensor.reshape(-1, *tensor.shape[2:])


def select_examples(x, y, index):
    """The support examples at `index` (a 1-D tensor), or all with `None`."""
    if index is None:
        return x, y
    return torch.index_select(x, 0, index), torch.index_select(y, 0, index)


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
