"""The inner loop: how a learner adapts its weights to one task's support set."""

import keras
import torch


@keras.saving.register_keras_serializable(package="metakeras")
class InnerLoop:
    """Gradient-descent adaptation on a task's support set.

    The inner loop is a pure function of `(weights, support data)` that returns
    new "fast" weights, so it composes with `torch.func.vmap` (batching over
    the tasks of a meta-batch) and with second-order differentiation (the
    outer update differentiates through it). Training, `adapt` and evaluation
    all run the same `InnerLoop`, so they cannot disagree.

    Each step is full-batch gradient descent on the support loss:
    `w <- w - learning_rate * grad(support_loss)(w)`.

    Args:
        steps: number of gradient steps. `0` means no adaptation.
            Defaults to `1`.
        learning_rate: step size of each inner step. Defaults to `0.01`.
        first_order: if `True`, the outer gradient treats the inner gradients
            as constants (first-order MAML): cheaper, and no second
            derivatives. Defaults to `False` (full second-order MAML).

    Example:

    >>> inner = InnerLoop(steps=5, learning_rate=0.01)
    >>> inner.get_config()["steps"]
    5
    """

    def __init__(self, steps=1, learning_rate=0.01, first_order=False):
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(
                f"`steps` must be a non-negative integer. Received: steps={steps!r}"
            )
        if isinstance(learning_rate, bool) or not isinstance(
            learning_rate, (int, float)
        ):
            raise ValueError(
                "`learning_rate` must be a number. Received: "
                f"learning_rate={learning_rate!r}"
            )
        if not learning_rate > 0 or learning_rate == float("inf"):
            raise ValueError(
                "`learning_rate` must be a positive finite number. Received: "
                f"learning_rate={learning_rate!r}"
            )
        if not isinstance(first_order, bool):
            raise ValueError(
                f"`first_order` must be True or False. Received: {first_order!r}"
            )
        self.steps = steps
        self.learning_rate = float(learning_rate)
        self.first_order = first_order

    def run(self, loss_fn, weights, steps=None):
        """Adapts `weights` by gradient descent on `loss_fn`.

        Args:
            loss_fn: a function `loss_fn(weights) -> scalar tensor`, the
                support loss of one task. It must be pure (no side effects),
                so it can run under `torch.func` transforms.
            weights: list of tensors, the starting (meta-learned) weights.
            steps: overrides `self.steps` for this call. Defaults to `None`.

        Returns:
            The list of adapted weights. When differentiating through the
            result, second-order terms are included unless `first_order`.
        """
        steps = self.steps if steps is None else steps
        fast = list(weights)
        for _ in range(steps):
            at = [w.detach() for w in fast] if self.first_order else fast
            grads = torch.func.grad(loss_fn)(at)
            fast = [w - self.learning_rate * g for w, g in zip(fast, grads)]
        return fast

    def get_config(self):
        return {
            "steps": self.steps,
            "learning_rate": self.learning_rate,
            "first_order": self.first_order,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"InnerLoop({args})"
