"""ANIL: Almost No Inner Loop (Raghu et al., 2020)."""

import keras

from metakeras.models.maml import MAML


@keras.saving.register_keras_serializable(package="metakeras")
class ANIL(MAML):
    """MAML that adapts only the head of the learner in the inner loop.

    ANIL keeps the body (feature extractor) fixed while adapting to a task
    and adapts only the named layers, by default the last layer that has
    weights. The outer update still trains every layer. This is much cheaper
    than MAML and, as Raghu et al. showed, about as accurate: MAML's inner
    loop mostly re-uses features.

    Args:
        learner: the `keras.Model` to meta-learn.
        adapt_layers: names of the layers adapted in the inner loop.
            Defaults to `None` (the learner's last layer with weights).
        **kwargs: the other `MAML` arguments.

    Example:

    ```python
    model = metakeras.ANIL(metakeras.models.conv4(outputs=5), inner_learning_rate=0.4)
    model.compile(optimizer="adam",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    ```
    """

    def __init__(self, learner, adapt_layers=None, **kwargs):
        super().__init__(learner, adapt_layers=adapt_layers, **kwargs)

    def _adapt_mask(self):
        if self.adapt_layers is None:
            with_weights = [
                layer for layer in self.learner.layers if layer.trainable_weights
            ]
            if not with_weights:
                raise ValueError(
                    f"ANIL: the learner {self.learner.name!r} has no layer with "
                    "trainable weights to adapt."
                )
            self.adapt_layers = [with_weights[-1].name]
        return super()._adapt_mask()
