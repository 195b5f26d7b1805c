"""Reptile: a first-order meta-learner (Nichol, Achiam and Schulman, 2018)."""

import keras
import torch

from metakeras import _keras_compat
from metakeras.inner import InnerLoop
from metakeras.models._adaptation import map_tasks, merge_tasks
from metakeras.models._trainer import episodic_train_step
from metakeras.models.maml import MAML


@keras.saving.register_keras_serializable(package="metakeras")
class Reptile(MAML):
    """Reptile: move the initialisation towards each task's adapted weights.

    For every task of the meta-batch, Reptile runs `inner_steps` of SGD on
    the support set from the current weights `w`, reaching `w_t`, and then
    applies the compiled optimizer to the pseudo-gradient
    `w - mean_t(w_t)`. With `keras.optimizers.SGD(learning_rate=eps)` this
    is the paper's update `w <- w + eps * (mean_t(w_t) - w)`; Adam also
    works well. No second derivatives and no query loss are needed; the
    query set only feeds the logged loss and metrics (after adaptation), so
    the numbers Keras shows mean the same as for MAML. As in the paper, train
    with more support examples (`shots`) and more inner steps than you test
    with.

    Adaptation (`adapt`, `evaluate`, `adapt_and_predict`) is the same inner
    loop as training, shared with MAML.

    Args:
        learner: the `keras.Model` to meta-learn.
        inner_steps: SGD steps per task. Defaults to `None` (`5`).
        inner_learning_rate: inner SGD step size. Defaults to `None`
            (`0.01`).
        inner_batch_size: support examples per inner step (`None`: all).
            Defaults to `None`.
        **kwargs: the other `MAML` arguments (`inner`, `inner_shuffle`,
            `inner_clipnorm`, `inner_global_clipnorm`, `adapt_layers`,
            `transductive_eval`, `vectorize_tasks`, `name`). `first_order`
            is ignored, and an `inner` with `first_order=False` is used as
            first order: Reptile never differentiates through its inner
            loop.

    Example:

    ```python
    model = metakeras.Reptile(learner, inner_steps=5, inner_learning_rate=0.02)
    model.compile(optimizer=keras.optimizers.SGD(1.0), loss="mse")
    model.fit(metakeras.tasks.SinusoidTasks(shots=10), epochs=5)
    ```
    """

    # Reptile never differentiates through its inner loop: always first order.
    _inner_defaults = {"steps": 5, "first_order": True}

    def __init__(
        self,
        learner,
        inner_steps=None,
        inner_learning_rate=None,
        inner_batch_size=None,
        **kwargs,
    ):
        kwargs.pop("first_order", None)
        inner = kwargs.pop("inner", None)
        if isinstance(inner, InnerLoop) and not inner.first_order:
            inner = InnerLoop.from_config({**inner.get_config(), "first_order": True})
        if kwargs.get("per_step_bn_statistics"):
            raise ValueError(
                "Reptile does not support `per_step_bn_statistics=True`: its "
                "outer update moves towards the adapted weights and never "
                "normalises queries with per-step statistics."
            )
        maml_plus_plus = [
            f"{name}={kwargs[name]!r}"
            for name in (
                "per_step_learning_rates",
                "multi_step_loss_epochs",
                "first_order_epochs",
            )
            if kwargs.get(name) not in (None, False)
        ]
        if maml_plus_plus:
            raise ValueError(
                f"Reptile does not support {', '.join(maml_plus_plus)}: its "
                "outer update is no gradient through a query loss, so "
                "learned step rates, a multi-step loss and a derivative order "
                "do not apply. Use MAML or MAMLPlusPlus for them."
            )
        super().__init__(
            learner,
            inner_steps=inner_steps,
            inner_learning_rate=inner_learning_rate,
            inner_batch_size=inner_batch_size,
            inner=inner,
            **kwargs,
        )

    @episodic_train_step
    def train_step(self, support_x, support_y, query_x, query_y):
        variables = self.learner.trainable_variables
        weights = [v.value.detach() for v in variables]
        state = [v.value.detach() for v in self.learner.non_trainable_variables]
        context = self._episode_context(support_x, support_y, None)

        def task(sx, sy, qx):
            fast = self._adapt_weights(weights, state, sx, sy, context)
            predictions, new_state = self._forward(fast, state, qx, training=True)
            return (fast, predictions), new_state

        with torch.no_grad():
            (fast, predictions), new_state = map_tasks(
                task, (support_x, support_y, query_x), self._vectorized()
            )
            y, y_pred = merge_tasks(query_y), merge_tasks(predictions)
            loss = self._query_loss(y, y_pred, self._loss_is_plain())
            _keras_compat.loss_tracker(self).update_state(
                loss, sample_weight=y.shape[0]
            )
            pseudo_gradients = [w - f.mean(dim=0) for w, f in zip(weights, fast)]
            pseudo_gradients = self._with_loss_check(pseudo_gradients)
            self._apply_meta_update(pseudo_gradients, variables, new_state)
        return self.compute_metrics(None, y, y_pred)

    def get_config(self):
        config = super().get_config()
        config.pop("first_order")
        return config
