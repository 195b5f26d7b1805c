"""The meta-training and evaluation steps of `MetaModel`.

Like Keras's backend trainers (`keras/src/backend/torch/trainer.py`), this
mixin holds what `fit` and `evaluate` run per batch: a training step adapts
to every task of the meta-batch, differentiates the query loss through the
adaptation and applies one outer update; an evaluation step adapts and
scores. What every step shares (building before the first step, the CUDA
graph replay of `compile(jit_compile=True)`, the distributed reduction and
the non-finite check of the update) is here too.
"""

import functools

import keras
import torch

from metakeras import _keras_compat, distributed
from metakeras.config import _tune_malloc_for_training
from metakeras.models._adaptation import merge_tasks, reduce_over_tasks
from metakeras.models._checks import to_tensor
from metakeras.models._nonfinite import all_finite
from metakeras.tasks.episode import unpack_episode


def episodic_train_step(step):
    """Makes `step(self, support_x, support_y, query_x, query_y)` a `train_step`.

    The wrapped step first hands the batch to the CUDA graph runner when it
    replays one, then converts the episode to tensors and checks that the
    model is compiled: the opening every algorithm's own step shares.
    """

    @functools.wraps(step)
    def train_step(self, data):
        if self._replays_graphs():
            return self._graph_runner(data)
        episode = self._episode_tensors(data)
        if self._task_loss is None:
            raise RuntimeError("The model must be compiled before training.")
        return step(self, *episode)

    return train_step


class MetaTrainer:
    """Mixin of `MetaModel`: its training and evaluation steps."""

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
            y = merge_tasks(query_y)
            y_pred = keras.tree.map_structure(merge_tasks, predictions)
            loss, y_pred = self._training_loss(y, y_pred, self._loss_is_plain())
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

    def test_step(self, data):
        support_x, support_y, query_x, query_y = self._episode_tensors(data)
        predictions, _ = self._episode_forward(
            support_x, support_y, query_x, training=False
        )
        y = merge_tasks(query_y)
        y_pred = merge_tasks(predictions)
        loss = _keras_compat.compute_loss(self, y, y_pred, training=False)
        _keras_compat.loss_tracker(self).update_state(loss, sample_weight=y.shape[0])
        return self.compute_metrics(None, y, y_pred)

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
            support_x = to_tensor(unpack_episode(first_batch())[0], "support_x")
            self._build_learner(support_x)
        if self.optimizer is not None and not self.optimizer.built:
            self.optimizer.build(self.trainable_variables)
        # metakeras.distributed: every process starts `fit` and `evaluate`
        # from rank 0's weights and optimizer state (no-op in one process).
        optimizer = list(self.optimizer.variables) if self.optimizer else []
        distributed.broadcast(self.weights + optimizer)

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
            # The repr: a config may hold a serialized (unhashable) optimizer.
            None if inner is None else repr(inner),
        )

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
            loss, task_pred = self._training_loss(query_y[i], task_pred, plain)
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
        new_state = [reduce_over_tasks(torch.stack(values)) for values in zip(*states)]
        y = merge_tasks(query_y)
        y_pred = torch.cat(predictions, dim=0)
        return y, y_pred, new_state, gradients

    def _loss_is_plain(self):
        """Whether the query loss is the task loss alone, in PyTorch's form.

        Keras's `compute_loss` adds the learner's regularization losses to
        the compiled loss; without any, and for a loss `TaskLoss` computes
        with one PyTorch call, the two are the same value.
        """
        return self._task_loss.fused and not self.losses

    def _training_loss(self, y, outputs, plain):
        """The loss a training step minimises, and the predictions to score.

        Args:
            y: query targets.
            outputs: what `_task_forward` returned as predictions (for a
                task or, merged, for a meta-batch): the query predictions,
                or a structure of them (MAML++'s predictions after every
                inner step).
            plain: whether the loss is the task loss alone (see
                `_loss_is_plain`).

        Returns:
            `(loss, predictions)`: the scalar loss and the query
            predictions the metrics see.
        """
        return self._query_loss(y, outputs, plain), outputs

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
                finite = all_finite(
                    list(gradients) + [v for v in new_state if v.is_floating_point()]
                )
            self._graph_checks.append((gradients, finite))
        # After the reduction, so that every process takes the same decision.
        elif not self._update_is_finite(gradients, variables, new_state):
            return
        self.optimizer.apply(gradients, variables)
        updates = self.optimizer.iterations.value  # this one included
        state = self._state_variables()
        for variable, value, momentum in zip(
            state, new_state, self._state_momenta(state)
        ):
            value = value.detach()
            if momentum is not None:
                value = warmed_up_average(variable.value, value, momentum, updates)
            variable.assign(value)

    def _state_momenta(self, state):
        """The BatchNormalization momentum of each state variable, else None.

        Aligned with `state`, the list `_state_variables()` returns: the
        moving mean and variance of the learner's BatchNormalization layers
        (at any depth) get their layer's momentum; other state (seed
        counters, a model's own statistics) None. Cached per set of state
        variables: walking the layers every meta-step cost 0.15 ms on conv4
        (7 us cached).
        """
        key = tuple(id(v) for v in state)
        cached = getattr(self, "_momenta_cache", None)
        if cached is not None and cached[0] == key:
            return cached[1]
        momenta = {}
        for layer in self.learner._flatten_layers(include_self=False):
            batch_normalization = isinstance(layer, keras.layers.BatchNormalization)
            if batch_normalization and layer.built and 0 < layer.momentum < 1:
                momenta[id(layer.moving_mean)] = layer.momentum
                momenta[id(layer.moving_variance)] = layer.momentum
        found = tuple(momenta.get(i) for i in key)
        self._momenta_cache = (key, found)
        return found


def warmed_up_average(old, new, momentum, updates):
    """A moving average that starts as the running mean of its first values.

    BatchNormalization's moving statistics move by `1 - momentum` of the
    distance to each batch's statistics: from their initial values (mean 0,
    variance 1) Keras's default momentum 0.99 needs several hundred updates
    to forget the start, and a meta-learner trains few (on Omniglot, 301
    second-order MAML meta-batches in 15 minutes of one core left the moving
    statistics so far off that inference-mode accuracy was at chance). Here
    update `n` (counting from 1) moves by `max(1 / n, 1 - momentum)`: the
    first `1 / (1 - momentum)` updates average the batch statistics seen so
    far, with equal weights (PyTorch's `BatchNorm(momentum=None)`), then the
    layer's own exponential average takes over.

    Args:
        old: the moving statistic before the update.
        new: its value after the layer's own update,
            `momentum * old + (1 - momentum) * batch`.
        momentum: the layer's momentum, in (0, 1).
        updates: the number of updates so far, this one included (a
            scalar tensor; 1 for the first).

    Returns:
        The warmed-up moving statistic.

    Example:

    >>> import torch
    >>> warmed_up_average(torch.tensor(1.0), torch.tensor(0.99 + 0.01 * 5.0),
    ...                   0.99, torch.tensor(1))
    tensor(5.)
    """
    step = torch.clamp(1 / (updates.to(old.dtype) * (1 - momentum)), min=1.0)
    return old + step * (new - old)


def _detached(tensor):
    return tensor.detach() if tensor.requires_grad else tensor
