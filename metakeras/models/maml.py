"""MAML: Model-Agnostic Meta-Learning (Finn et al., 2017)."""

import keras
import torch

from metakeras.inner import InnerLoop
from metakeras.models._cloning import learner_with_weights
from metakeras.models.meta_model import MetaModel


@keras.saving.register_keras_serializable(package="metakeras")
class MAML(MetaModel):
    """Model-Agnostic Meta-Learning.

    MAML learns an initialisation of the learner's weights from which a few
    gradient steps on a new task's support set give a good model for that
    task. Each training step adapts the weights to every task of the
    meta-batch with the inner loop (`InnerLoop`), scores the adapted weights
    on the task's query set, and updates the initialisation with the compiled
    optimizer using the gradient of the mean query loss *through* the inner
    loop (second order), or treating the inner gradients as constants
    (`first_order=True`).

    BatchNormalization and Dropout: inner-loop steps run the learner in
    training mode, so BatchNormalization normalises with the statistics of
    the task's support set and Dropout is active. During meta-training the
    query forward pass also uses the query set's batch statistics (the
    transductive setting of the MAML paper), and the moving statistics are
    updated with their mean over the tasks of the meta-batch. At evaluation
    (`evaluate`, `adapt_and_predict`, and the model returned by `adapt`)
    queries are predicted in inference mode: moving statistics, no Dropout.

    Args:
        learner: the `keras.Model` whose initialisation is meta-learned.
        inner_steps: inner gradient steps per task. Defaults to `1`.
        inner_learning_rate: step size of the inner loop. Defaults to `0.01`.
        first_order: use first-order MAML. Defaults to `False`.
        vectorize_tasks: batch the tasks of a meta-batch with
            `torch.func.vmap`. Defaults to `False`.
        **kwargs: passed to `keras.Model`.

    Example:

    ```python
    import metakeras, keras
    learner = keras.Sequential([
        keras.Input((1,)),
        keras.layers.Dense(40, activation="relu"),
        keras.layers.Dense(40, activation="relu"),
        keras.layers.Dense(1),
    ])
    model = metakeras.MAML(learner, inner_steps=1, inner_learning_rate=0.01)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    model.fit(metakeras.tasks.SinusoidTasks(shots=10, seed=0), epochs=2)
    adapted = model.adapt(support_x, support_y, steps=10)
    adapted.predict(x_new)
    ```
    """

    def __init__(
        self,
        learner,
        inner_steps=1,
        inner_learning_rate=0.01,
        first_order=False,
        vectorize_tasks=False,
        **kwargs,
    ):
        super().__init__(learner, vectorize_tasks=vectorize_tasks, **kwargs)
        self.inner = InnerLoop(
            steps=inner_steps,
            learning_rate=inner_learning_rate,
            first_order=first_order,
        )

    @property
    def inner_steps(self):
        return self.inner.steps

    @property
    def inner_learning_rate(self):
        return self.inner.learning_rate

    @property
    def first_order(self):
        return self.inner.first_order

    def _task_forward(
        self, weights, state, support_x, support_y, query_x, training, steps
    ):
        fast = self.inner.run(
            self._support_loss(state, support_x, support_y), weights, steps
        )
        return self._forward(fast, state, query_x, training=training)

    def adapt(self, support_x, support_y, steps=None):
        """Fine-tunes a copy of the learner on one task's support set.

        Args:
            support_x: the task's labelled inputs, `(examples, *features)`.
            support_y: their targets, `(examples, *targets)`; integer class
                labels for classification.
            steps: inner steps. Defaults to `None` (the model's `inner_steps`).

        Returns:
            A new `keras.Model` (a copy of the learner) holding the adapted
            weights. The meta-learned weights are not changed.

        Example:

        ```python
        adapted = model.adapt(support_x, support_y, steps=5)
        y_pred = adapted.predict(query_x)
        ```
        """
        _check_steps(steps)
        support_x, support_y = self._check_single_task(support_x, support_y)
        if self._task_loss is None:
            raise RuntimeError(
                "The model must be compiled before `adapt`: call "
                "model.compile(optimizer, loss) first (it sets the task loss)."
            )
        weights = [v.value.detach() for v in self.learner.trainable_variables]
        state = [v.value.detach() for v in self.learner.non_trainable_variables]
        loss = self._support_loss(state, support_x, support_y)
        with torch.no_grad():
            fast = self.inner.run(loss, weights, steps)
        return learner_with_weights(self.learner, fast, state, support_x)

    def get_config(self):
        config = super().get_config()
        config.update(
            inner_steps=self.inner.steps,
            inner_learning_rate=self.inner.learning_rate,
            first_order=self.inner.first_order,
        )
        return config


def _check_steps(steps):
    if steps is not None and (
        isinstance(steps, bool) or not isinstance(steps, int) or steps < 0
    ):
        raise ValueError(
            f"`steps` must be None or a non-negative integer. Received: steps={steps!r}"
        )
