"""Non-finite meta-updates: the check of every step, and the diagnosis.

`compile(on_nonfinite=...)` decides what a training step does when its
meta-gradient or the learner's new state holds NaN or infinite values. The
check costs one host synchronisation per step (after the distributed
reduction, so every process decides alike); the inner loop is not checked
step by step. Only when an update is non-finite is the meta-batch run again,
task by task and inner step by inner step, to say where it went wrong: in
the inner loop (which task, which step, the support loss, its gradient or
the fast weights) or in the outer loss.
"""

import keras
import torch

from metakeras import _keras_compat, distributed

NONFINITE_MODES = ("raise", "skip", "ignore")


class NonFiniteChecks:
    """Mixin of `MetaModel`: checks each meta-update, skips or explains it.

    The model records what the diagnosis needs when it receives a
    meta-batch (`_remember_step`); its training step passes the gradients
    through `_with_loss_check` and asks `_update_is_finite` before applying
    them.
    """

    def _remember_step(self, episode):
        """Keeps what re-running this step needs, should it go non-finite.

        Args:
            episode: the checked `(support_x, support_y, query_x, query_y)`.
        """
        self._step_episode = episode
        if self.on_nonfinite == "ignore":
            return
        self._step_rng = get_rng_state(episode[0].device)
        if self.compiled:
            self._step_loss_state = [
                v.value.detach().clone()
                for v in _keras_compat.loss_tracker(self).variables
            ]

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
        if not values or bool(all_finite(values)):
            return True
        self._forget_step_loss()
        if self.on_nonfinite == "skip":
            self._step_skipped = True
            # Metric states are summed over processes, which all skip alike.
            if distributed.rank() == 0:
                self._skipped_tracker.update_state(1.0)
            return False
        raise FloatingPointError(self._nonfinite_message(gradients, variables))

    def _forget_step_loss(self):
        """Takes this step's loss back out of the epoch's mean.

        As its metrics are (`compute_metrics`), so the next step starts from
        a finite total.
        """
        if self._step_loss_state is None:
            return
        for variable, value in zip(
            _keras_compat.loss_tracker(self).variables, self._step_loss_state
        ):
            variable.assign(value)

    def _nonfinite_message(self, gradients, variables):
        """The `FloatingPointError` message for a non-finite meta-update."""
        cause = self._locate_nonfinite()
        if cause is None:
            bad = [
                v.path
                for v, g in zip(variables, gradients)
                if not bool(torch.isfinite(g).all())
            ]
            cause = _outer_cause(bad)
        step = int(keras.ops.convert_to_numpy(self.optimizer.iterations)) + 1
        return (
            f"Non-finite values in meta-training step {step}: {cause}. The "
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
        support_x, support_y = self._step_episode[:2]
        rng = get_rng_state(support_x.device)
        if self._step_rng is not None:
            # Draw the same inner mini-batches as the failed step did.
            set_rng_state(self._step_rng)
        try:
            context = dict(self._episode_context(support_x, support_y, None))
            for task in range(support_x.shape[0]):
                cause = self._locate_in_task(task, weights, state, context)
                if cause is not None:
                    return cause
        finally:
            set_rng_state(rng)
        return None

    def _locate_in_task(self, task, weights, state, context):
        """What went non-finite in task `task` of the last meta-batch, or `None`."""
        support_x, support_y, query_x, query_y = (
            value[task] for value in self._step_episode
        )
        found, last = [], []
        context["monitor"] = _inner_monitor(task, found, last)
        predictions, _ = self._task_forward(
            weights, state, support_x, support_y, query_x, True, context
        )
        if found:
            return found[0]
        loss, _ = self._training_loss(query_y, predictions, True)
        if bool(torch.isfinite(loss).all()):
            return None
        if last:
            # Finite but huge fast weights: did the inner loop diverge?
            step, fast = last[-1]
            after = self._support_loss(state, support_x, support_y)(fast)
            if not bool(torch.isfinite(after).all()):
                return (
                    f"the inner loop of task {task} of the meta-batch "
                    f"diverged: its support loss after inner step {step + 1} "
                    f"is {float(after)} (query loss {float(loss)})"
                )
        return (
            f"the query loss (outer loop) of task {task} of the "
            f"meta-batch is {float(loss)} after adaptation; the "
            "inner loop stayed finite"
        )


def check_on_nonfinite(on_nonfinite):
    """Raises unless `on_nonfinite` is one of `NONFINITE_MODES`."""
    if on_nonfinite not in NONFINITE_MODES:
        raise ValueError(
            f"`on_nonfinite` must be one of {NONFINITE_MODES}. Received: "
            f"on_nonfinite={on_nonfinite!r}"
        )


def all_finite(tensors):
    """A 0-d bool tensor: whether every element of `tensors` is finite.

    `0 * x` is 0 for finite `x` and NaN otherwise, and NaN survives a sum,
    so two multi-tensor operations check every tensor at once (instead of
    three operators per tensor), and large finite values cannot overflow.
    """
    zeros = torch._foreach_mul(tensors, 0.0)
    return torch.stack(torch._foreach_norm(zeros, 1)).sum() == 0


def get_rng_state(device):
    """The state of the random generator that draws on `device`."""
    if device.type == "cuda":
        return device, torch.cuda.get_rng_state(device)
    return device, torch.get_rng_state()


def set_rng_state(saved):
    """Restores a state returned by `get_rng_state`."""
    device, state = saved
    if device.type == "cuda":
        torch.cuda.set_rng_state(state, device)
    else:
        torch.set_rng_state(state)


def _outer_cause(bad):
    """The cause when every loss is finite; `bad`: non-finite gradients' paths."""
    if not bad:
        return (
            "the learner's new state (e.g. BatchNormalization moving "
            "statistics) is non-finite"
        )
    return (
        f"the meta-gradient of {_preview_names(bad)} is non-finite "
        "(outer loop), although the support and query losses of every "
        "task are finite: it arises when differentiating the query "
        "loss through the inner loop"
        + (", or on another process" if distributed.is_distributed() else "")
    )


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
