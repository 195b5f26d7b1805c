"""Matching Networks: attention over the labelled support examples."""

import keras
import torch

from metakeras._checks import check_choice
from metakeras.models.protonet import (
    DISTANCES,
    ProtoNet,
    _EmbeddingClassifier,
    prototype_logits,
)


def matching_logits(
    embeddings, support, support_y, ways, scale=10.0, distance="cosine"
):
    """Class scores of Matching Networks: attention over the support examples.

    Each query attends to every support example with the softmax of their
    scaled similarities, and a class's probability is the attention on its
    examples: `p(c | q) = sum_{i: y_i = c} softmax_i(scale * sim(q, s_i))`,
    with `sim` the cosine similarity (the paper's) or the negative squared
    Euclidean distance (a Gaussian kernel: soft nearest neighbours, between
    1-NN as `scale` grows and the class sizes as it shrinks). The returned
    logits are `log p(c | q)` up to a constant per query (a log-sum-exp over
    each class's examples), so a softmax of them gives `p` exactly and a
    cross-entropy from logits trains it.

    Args:
        embeddings: `(n, d)` query embeddings.
        support: `(k, d)` support embeddings.
        support_y: `(k,)` integer labels `0..ways-1`.
        ways: number of classes.
        scale: multiplier of the similarities (a temperature).
            Defaults to `10.0`.
        distance: `"cosine"` or `"euclidean"`. Defaults to `"cosine"`.

    Returns:
        `(n, ways)` logits.

    Example:

    >>> import torch
    >>> logits = matching_logits(
    ...     torch.eye(2), torch.eye(2), torch.tensor([0, 1]), ways=2
    ... )
    >>> logits.argmax(-1).tolist()
    [0, 1]
    """
    # Every support example scored as a prototype of its own.
    attention = prototype_logits(embeddings, support, distance, scale)
    # Comparison with arange (not one_hot) so that it works under vmap.
    members = support_y[:, None] == torch.arange(ways, device=support_y.device)
    masked = attention[:, :, None].masked_fill(~members[None], float("-inf"))
    return torch.logsumexp(masked, dim=1)


@keras.saving.register_keras_serializable(package="metakeras")
class MatchingNet(ProtoNet):
    """Matching Networks (Vinyals et al., NeurIPS 2016), without full context.

    A query is labelled by attention over the support set: the softmax of
    its cosine similarity (or negative squared distance) to each support
    example's embedding, summed per class (`matching_logits`). Like
    ProtoNet it has no inner loop, and meta-training shapes the embedding
    for this classifier; unlike ProtoNet every support example counts on
    its own, not through its class mean.
    The full-context embeddings of the paper (LSTMs reading the whole
    support set) are not included. Episodes, label checks, BatchNormalization
    (`transductive_eval`) and `adapt` work as in `ProtoNet`.

    Args:
        learner: a `keras.Model` mapping inputs to embeddings `(batch, d)`,
            e.g. `metakeras.models.conv4()` without a head.
        scale: multiplier of the cosine similarities, a temperature: the
            paper's attention uses 1, which keeps the probabilities soft
            (cosines lie in [-1, 1]); 10 trains faster. Defaults to `10.0`.
        distance: `"cosine"` (the paper's) or `"euclidean"` (the negative
            squared distance times `scale`, a Gaussian kernel over the
            support examples). Defaults to `"cosine"`.
        **kwargs: `transductive_eval`, `vectorize_tasks` and `keras.Model`
            arguments, as in `ProtoNet`.

    Example:

    ```python
    model = metakeras.MatchingNet(metakeras.models.conv4())
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(tasks, epochs=10)
    classifier = model.adapt(support_x, support_y)  # a MatchingClassifier
    ```
    """

    def __init__(self, learner, scale=10.0, distance="cosine", **kwargs):
        super().__init__(learner, distance=distance, scale=scale, **kwargs)

    def _task_logits(self, query, support, support_y, ways):
        return matching_logits(
            query, support, support_y, ways, self._scale, self.distance
        )

    def _classifier(self, embeddings, support_y, ways, embedding, transductive):
        classifier = MatchingClassifier(
            embedding,
            num_classes=ways,
            support_size=int(embeddings.shape[0]),
            embedding_dim=int(embeddings.shape[-1]),
            scale=self._scale,
            distance=self.distance,
            batch_statistics=transductive,
        )
        classifier.support.assign(embeddings)
        classifier.support_labels.assign(support_y.to(torch.int32))
        return classifier


@keras.saving.register_keras_serializable(package="metakeras")
class MatchingClassifier(_EmbeddingClassifier):
    """Labels inputs by attention over stored support embeddings.

    Returned by `MatchingNet.adapt`: `support` and `support_labels` hold the
    task's embedded support set, and `predict` returns `matching_logits`
    `(n, num_classes)` for its inputs.

    Args:
        embedding: the trained embedding network (`keras.Model`).
        num_classes: the number of classes in the task.
        support_size: the number of support examples.
        embedding_dim: the size of one embedding.
        scale: the attention's temperature. Defaults to `10.0`.
        distance: `"cosine"` or `"euclidean"`. Defaults to `"cosine"`.
        **kwargs: `batch_statistics` (as in `PrototypeClassifier`) and
            `keras.Model` arguments.

    Example:

    ```python
    attention = matching_net.adapt(support_x, support_y)
    attention.predict(query_x).argmax(-1)
    ```
    """

    _CONFIG = (*_EmbeddingClassifier._CONFIG, "support_size", "scale", "distance")

    def __init__(
        self,
        embedding,
        num_classes,
        support_size,
        embedding_dim,
        scale=10.0,
        distance="cosine",
        **kwargs,
    ):
        super().__init__(embedding, num_classes, embedding_dim, **kwargs)
        check_choice("distance", distance, DISTANCES, echo_name=False)
        self.support_size = int(support_size)
        self.scale = float(scale)
        self.distance = distance
        self.support = self._state("support", (self.support_size, self.embedding_dim))
        self.support_labels = self._state(
            "support_labels", (self.support_size,), dtype="int32"
        )
        self.built = embedding.built

    def call(self, inputs, training=False):
        return matching_logits(
            self._embed(inputs, training),
            self.support.value,
            self.support_labels.value,
            self.num_classes,
            self.scale,
            self.distance,
        )
