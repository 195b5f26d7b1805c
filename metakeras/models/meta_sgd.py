"""Meta-SGD: MAML with learned per-parameter inner learning rates (Li et al., 2017)."""

import keras

from metakeras.models.maml import MAML


@keras.saving.register_keras_serializable(package="metakeras")
class MetaSGD(MAML):
    """MAML whose inner learning rates are learned, one per weight element.

    Meta-SGD meta-learns, beside the initialisation, a learning rate for every
    element of every adapted weight: the inner step is
    `w <- w - alpha * grad` with `alpha` a tensor of the weight's shape. The
    rates start at `inner_learning_rate`, are trainable weights of the model
    (`model.inner_rates`), receive meta-gradients through the inner loop and
    are updated by the compiled optimizer; they are saved with the model.
    A learned rate may become negative, as in the paper.

    Args:
        learner: the `keras.Model` to meta-learn.
        inner_steps: inner gradient steps per task. Defaults to `None` (`1`).
        inner_learning_rate: initial value of every learned rate.
            Defaults to `None` (`0.01`).
        **kwargs: the other `MAML` arguments (`inner`, `first_order`,
            `inner_batch_size`, `adapt_layers`, `transductive_eval`,
            `vectorize_tasks`, `name`, ...). With `inner`, the rates start at
            `inner.learning_rate`.

    Example:

    ```python
    model = metakeras.MetaSGD(learner, inner_learning_rate=0.01)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    model.fit(metakeras.tasks.SinusoidTasks(shots=5), epochs=5)
    rates = [keras.ops.convert_to_numpy(r) for r in model.inner_rates]
    ```
    """

    def __init__(self, learner, inner_steps=None, inner_learning_rate=None, **kwargs):
        if kwargs.get("per_step_learning_rates"):
            raise ValueError(
                "MetaSGD learns a rate per weight element already; "
                "`per_step_learning_rates=True` (per weight and step) is a "
                "MAML option: use MAML or MAMLPlusPlus for it."
            )
        super().__init__(
            learner,
            inner_steps=inner_steps,
            inner_learning_rate=inner_learning_rate,
            **kwargs,
        )
        self.inner_rates = []
        if self.learner.built and self.learner.trainable_variables:
            self._create_rates()

    def _create_rates(self):
        if self.inner_rates:
            return
        self.inner_rates = [
            self.add_weight(
                shape=tuple(variable.shape),
                initializer=keras.initializers.Constant(self.inner.learning_rate),
                name=f"inner_rate_{index}",
            )
            for index, variable in enumerate(self.learner.trainable_variables)
        ]

    def _build_learner(self, support_x):
        super()._build_learner(support_x)
        self._create_rates()

    def _inner_learning_rates(self):
        return [rate.value for rate in self.inner_rates]
