"""R2D2: a differentiable closed-form ridge-regression head on any embedding."""

import math

import keras
import torch

from metakeras._checks import check_number
from metakeras.models.protonet import ProtoNet, _EmbeddingClassifier


def ridge_logits(embeddings, support, support_y, ways, regularizer, scale, bias):
    """Class scores of a ridge regression fitted to one task's support set.

    The head `W` regresses the support set's one-hot labels `Y` on its
    embeddings `X` with an L2 penalty `regularizer`, in closed form through
    the Woodbury identity, which solves an `n x n` system in the number of
    support examples `n` instead of `d x d` in the embedding size:
    `W = X^T (X X^T + regularizer * I)^-1 Y`. Queries score `scale * Q W +
    bias`. Every step is differentiable, so meta-training shapes the
    embedding for this head (Bertinetto et al., "Meta-learning with
    differentiable closed-form solvers", ICLR 2019).

    Args:
        embeddings: `(m, d)` query embeddings.
        support: `(n, d)` support embeddings.
        support_y: `(n,)` integer labels `0..ways-1`.
        ways: number of classes.
        regularizer: the ridge penalty (a positive scalar tensor).
        scale: multiplier of the scores.
        bias: added to every score.

    Returns:
        `(m, ways)` logits.

    Example:

    >>> import torch
    >>> logits = ridge_logits(torch.eye(2), torch.eye(2), torch.tensor([0, 1]),
    ...                       ways=2, regularizer=torch.tensor(0.1),
    ...                       scale=1.0, bias=0.0)
    >>> logits.argmax(-1).tolist()
    [0, 1]
    """
    weights = ridge_weights(support, support_y, ways, regularizer)
    return scale * embeddings @ weights + bias


def ridge_weights(support, support_y, ways, regularizer):
    """The ridge head `X^T (X X^T + regularizer * I)^-1 Y`, `(d, ways)`.

    Args:
        support: `(n, d)` support embeddings.
        support_y: `(n,)` integer labels `0..ways-1`.
        ways: number of classes.
        regularizer: the ridge penalty (a positive scalar tensor).

    Returns:
        `(d, ways)` weights.
    """
    # Comparison with arange (not one_hot) so that it works under vmap.
    targets = (support_y[:, None] == torch.arange(ways, device=support_y.device)).to(
        support.dtype
    )
    gram = support @ support.T
    eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    return support.T @ torch.linalg.solve(gram + regularizer * eye, targets)


@keras.saving.register_keras_serializable(package="metakeras")
class R2D2(ProtoNet):
    """R2D2: ridge regression on the support embeddings as the task's head.

    Like ProtoNet there is no inner gradient loop: each task's head is the
    closed-form ridge regression of its support labels on their embeddings
    (`ridge_logits`, solved with the Woodbury identity in the support size),
    and meta-training backpropagates through that solution into the
    embedding. Three scalars are meta-learned with it, as in the paper: the
    ridge penalty (kept positive through its logarithm) and the scale and
    bias of the scores. Episodes, label checks, BatchNormalization
    (`transductive_eval`) and `adapt` work as in `ProtoNet`.

    Reference: Bertinetto, Henriques, Torr and Vedaldi, "Meta-learning with
    differentiable closed-form solvers", ICLR 2019.

    Args:
        learner: a `keras.Model` mapping inputs to embeddings `(batch, d)`,
            e.g. `metakeras.models.conv4()` without a head.
        regularizer: the ridge penalty's starting value. Defaults to `1.0`.
        scale: the scores' starting multiplier: ridge scores of one-hot
            targets lie near [0, 1], so a softmax over them needs a larger
            scale. Defaults to `10.0`.
        **kwargs: `transductive_eval`, `vectorize_tasks` and `keras.Model`
            arguments, as in `ProtoNet`.

    Example:

    ```python
    r2d2 = metakeras.R2D2(metakeras.models.conv4(), regularizer=0.5)
    r2d2.compile(optimizer=keras.optimizers.Adam(1e-3),
                 loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    r2d2.fit(metakeras.tasks.TaskSampler(x, y, ways=5, shots=1), epochs=10)
    head = r2d2.adapt(support_x, support_y)  # a RidgeClassifier
    ```
    """

    def __init__(self, learner, regularizer=1.0, scale=10.0, **kwargs):
        kwargs.pop("distance", None)
        super().__init__(learner, scale=scale, **kwargs)
        for name, value in (("regularizer", regularizer), ("scale", scale)):
            check_number(name, value, finite=False, types=(int, float))
        self.regularizer = float(regularizer)
        self.log_regularizer = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(math.log(regularizer)),
            name="log_regularizer",
        )
        self.score_scale = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(float(scale)),
            name="score_scale",
        )
        self.score_bias = self.add_weight(
            shape=(), initializer="zeros", name="score_bias"
        )

    def _head_parameters(self):
        return (
            torch.exp(self.log_regularizer.value),
            self.score_scale.value,
            self.score_bias.value,
        )

    def _task_logits(self, query, support, support_y, ways):
        return ridge_logits(query, support, support_y, ways, *self._head_parameters())

    def _classifier(self, embeddings, support_y, ways, embedding, transductive):
        regularizer, scale, bias = self._head_parameters()
        classifier = RidgeClassifier(
            embedding,
            num_classes=ways,
            embedding_dim=int(embeddings.shape[-1]),
            batch_statistics=transductive,
        )
        classifier.kernel.assign(
            scale * ridge_weights(embeddings, support_y, ways, regularizer)
        )
        classifier.bias.assign(bias.detach().expand(ways))
        return classifier

    def get_config(self):
        config = super().get_config()
        config.pop("distance")
        config["regularizer"] = self.regularizer
        return config


@keras.saving.register_keras_serializable(package="metakeras")
class RidgeClassifier(_EmbeddingClassifier):
    """A linear head fitted by `R2D2.adapt` on top of the embedding.

    The ridge solution for the task's support set, scaled, is stored as
    `kernel` and the meta-learned bias as `bias`; `predict` returns
    `embedding(x) @ kernel + bias`, the logits.

    Args:
        embedding: the network that maps inputs to features (`keras.Model`).
        num_classes: how many classes the head scores.
        embedding_dim: the width of the features.
        **kwargs: `batch_statistics` (as in `PrototypeClassifier`) and
            `keras.Model` arguments.

    Example:

    ```python
    head = model.adapt(support_x, support_y)  # an R2D2 model's classifier
    head.predict(query_x).argmax(-1)
    ```
    """

    def __init__(self, embedding, num_classes, embedding_dim, **kwargs):
        super().__init__(embedding, num_classes, embedding_dim, **kwargs)
        self.kernel = self._state("kernel", (self.embedding_dim, self.num_classes))
        self.bias = self._state("bias", (self.num_classes,))
        self.built = self.embedding.built

    def call(self, inputs, training=False):
        return self._embed(inputs, training) @ self.kernel.value + self.bias.value
