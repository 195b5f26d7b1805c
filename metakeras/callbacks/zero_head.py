"""The zeroing trick: a MAML model's head kept at zero between outer steps."""

import keras


@keras.saving.register_keras_serializable(package="metakeras")
class ZeroHead(keras.callbacks.Callback):
    """Resets the learner's output layer to zero after every training step.

    With the head at zero every class starts each task with the same logits,
    so the meta-learned initialisation cannot prefer a label, and one inner
    step of cross-entropy from zero (learning rate `lr`, `n` classes with
    the same number of shots) sets class `k`'s head weights to
    `lr / n * (c_k - c)`, with `c_k` the mean embedding of its support
    examples and `c` the mean over all of them, and leaves the bias at
    zero: the adapted head is a (dot-product) prototype classifier of the
    support set, and meta-training shapes the body for it. Kao et al.
    ("MAML is a noisy contrastive learner in classification", ICLR 2022)
    call this the zeroing trick; Ye & Chao (ICLR 2022) start from a zero
    head for the same reason. The inner loop adapts the head as usual.

    Because the head is always zero, a meta-trained model can be given a
    zero head of any width (e.g. 20 outputs after 5-way training) and
    adapted to tasks with that many classes.

    Args:
        layer: name of the learner's layer to keep at zero. Defaults to
            `None` (the learner's last layer with weights).

    Example:

    ```python
    model = metakeras.MAML(metakeras.models.conv4(outputs=5),
                           inner_learning_rate=0.4, transductive_eval=True)
    model.compile(optimizer="adam",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(tasks, epochs=10, callbacks=[metakeras.callbacks.ZeroHead()])
    ```
    """

    def __init__(self, layer=None):
        super().__init__()
        if layer is not None and not isinstance(layer, str):
            raise ValueError(
                f"`layer` must be None or a layer name. Received: {layer!r}"
            )
        self.layer = layer
        self._head = []

    def _variables(self):
        learner = getattr(self.model, "learner", None)
        if learner is None:
            raise ValueError(
                "ZeroHead works on metakeras models (MAML and its family); "
                f"received a {type(self.model).__name__} without a `learner`."
            )
        if self.layer is None:
            with_weights = [layer for layer in learner.layers if layer.weights]
            if not with_weights:
                raise ValueError(
                    f"ZeroHead: the learner {learner.name!r} has no layer with weights."
                )
            return with_weights[-1].trainable_variables
        names = [layer.name for layer in learner.layers]
        if self.layer not in names:
            raise ValueError(
                f"ZeroHead: `layer`={self.layer!r} is not a layer of the learner; "
                f"its layers are {names}."
            )
        return learner.get_layer(self.layer).trainable_variables

    def _zero(self):
        for variable in self._head:
            variable.assign(keras.ops.zeros(variable.shape, variable.dtype))

    def on_train_begin(self, logs=None):
        self._head = self._variables()
        self._zero()

    def on_train_batch_end(self, batch, logs=None):
        self._zero()

    def on_train_end(self, logs=None):
        # An optimizer that averages the weights (`use_ema=True`) writes the
        # averages, the head's included, after the last batch.
        self._zero()

    def get_config(self):
        return {"layer": self.layer}
