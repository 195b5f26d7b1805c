"""Relation Networks: a learned module scores each query against each class."""

import keras
import torch

from metakeras.layers.pair_comparison import PairComparison
from metakeras.models.protonet import ProtoNet, _class_means, _EmbeddingClassifier


def relation_module(units=256, compare=True):
    """The default relation module: an MLP scoring one (query, class) pair.

    The module reads a query's flat embedding beside a class's. To score
    their similarity it must compare them feature by feature; the paper's
    module does that with two convolutions over the concatenated feature
    maps before its 8 hidden units. On flat conv4 embeddings (64 features)
    this module first adds the element-wise comparisons `|q - p|` and
    `q * p` to the pair (`metakeras.layers.PairComparison`), then scores it
    with one hidden layer. On Omniglot 20-way 1-shot after 4 minutes of one
    core (`benchmarks/omniglot.py` settings, 200 episodes) the pair alone
    scored 66.6% with 8 hidden units and 84.8% with 256; with the
    comparisons 90.0% (ProtoNet: 93.3% after 15 minutes).

    Args:
        units: width of its hidden layer. Defaults to `256`.
        compare: add the element-wise comparisons to the pair (otherwise the
            hidden layer reads the concatenated pair as it is, as in the
            paper). Defaults to `True`.

    Returns:
        A `keras.Sequential` mapping `(pairs, 2 * d)` to `(pairs, 1)` scores
        (built on first use, when `d` is known).

    Example:

    >>> relation_module(units=16).get_layer("relation_hidden").units
    16
    """
    layers = [PairComparison(name="relation_compare")] if compare else []
    return keras.Sequential(
        [
            *layers,
            keras.layers.Dense(units, activation="relu", name="relation_hidden"),
            keras.layers.Dense(1, name="relation_score"),
        ],
        name="relation",
    )


def relation_logits(embeddings, prototypes, relation):
    """Scores every (query, class) pair with the relation module.

    Each query embedding is concatenated with each class's representative
    (the mean of its support embeddings) and the relation module maps the
    pair to one score; the scores are the class logits.

    Args:
        embeddings: `(m, d)` query embeddings.
        prototypes: `(ways, d)` class representatives.
        relation: a Keras model mapping `(pairs, 2 * d)` to `(pairs, 1)`.

    Returns:
        `(m, ways)` logits.

    Example:

    >>> import torch
    >>> relation = relation_module()
    >>> relation_logits(torch.ones(3, 4), torch.zeros(2, 4), relation).shape
    torch.Size([3, 2])
    """
    m, ways = embeddings.shape[0], prototypes.shape[0]
    pairs = torch.cat(
        [
            embeddings[:, None, :].expand(m, ways, -1),
            prototypes[None, :, :].expand(m, ways, -1),
        ],
        dim=-1,
    )
    return relation(pairs.reshape(m * ways, -1)).reshape(m, ways)


@keras.saving.register_keras_serializable(package="metakeras")
class RelationNet(ProtoNet):
    """Relation Networks (Sung et al., CVPR 2018): a learned similarity.

    Where ProtoNet fixes the metric (a distance to class means), a Relation
    Network learns it: a relation module scores each pair of a query's
    embedding and a class's mean support embedding, and the scores are the
    class logits. The embedding and the relation module are meta-trained
    together. The paper's modules work on convolutional feature maps and
    regress the scores to one-hot targets with a mean squared error; here
    the module reads flat embeddings (any learner's output) and the scores
    are trained with the compiled loss (a cross-entropy from logits).
    Episodes, label checks, BatchNormalization (`transductive_eval`) and
    `adapt` work as in `ProtoNet`.

    Args:
        learner: a `keras.Model` mapping inputs to embeddings `(batch, d)`,
            e.g. `metakeras.models.conv4()` without a head.
        relation: a Keras model mapping `(pairs, 2 * d)` to `(pairs, 1)`.
            Defaults to `None` (`relation_module()`: the pair with its
            element-wise comparisons, Dense 256 with ReLU, then Dense 1).
        **kwargs: `transductive_eval`, `vectorize_tasks` and `keras.Model`
            arguments, as in `ProtoNet`.

    Example:

    ```python
    model = metakeras.RelationNet(metakeras.models.conv4())
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(tasks, epochs=10)
    classifier = model.adapt(support_x, support_y)  # a RelationClassifier
    ```
    """

    def __init__(self, learner, relation=None, **kwargs):
        kwargs.pop("distance", None)
        kwargs.pop("scale", None)
        super().__init__(learner, **kwargs)
        if relation is None:
            relation = relation_module()
        if not isinstance(relation, keras.Model):
            raise ValueError(
                f"`relation` must be a keras.Model. Received: {type(relation).__name__}"
            )
        self.relation = relation
        if self._learner_output_shape is not None:
            self._build_relation()

    def _build_learner(self, support_x):
        super()._build_learner(support_x)
        self._build_relation()

    def _build_relation(self):
        if not self.relation.built:
            width = int(self._learner_output_shape[-1])
            self.relation.build((None, 2 * width))

    def _task_logits(self, query, support, support_y, ways):
        prototypes = _class_means(support, support_y, ways)
        return relation_logits(query, prototypes, self.relation)

    def _classifier(self, embeddings, support_y, ways, embedding, transductive):
        relation = keras.models.clone_model(self.relation)
        relation.build((None, 2 * int(embeddings.shape[-1])))
        relation.set_weights(self.relation.get_weights())
        classifier = RelationClassifier(
            embedding,
            relation,
            num_classes=ways,
            embedding_dim=int(embeddings.shape[-1]),
            batch_statistics=transductive,
        )
        classifier.prototypes.assign(_class_means(embeddings, support_y, ways))
        return classifier

    def get_config(self):
        config = super().get_config()
        for key in ("distance", "scale"):
            config.pop(key)
        return _with_relation(config, self.relation)

    @classmethod
    def from_config(cls, config):
        return super().from_config(_relation_from(config))


@keras.saving.register_keras_serializable(package="metakeras")
class RelationClassifier(_EmbeddingClassifier):
    """Scores inputs against stored class representatives with a relation module.

    Returned by `RelationNet.adapt`: `prototypes` holds the task's class
    means, and `predict` returns the relation module's score of every
    (input, class) pair as logits `(n, num_classes)`.

    Args:
        embedding: the trained embedding network (`keras.Model`).
        relation: a copy of the trained relation module (`keras.Model`).
        num_classes: the number of prototypes.
        embedding_dim: the size of one embedding.
        **kwargs: `batch_statistics` (as in `PrototypeClassifier`) and
            `keras.Model` arguments.

    Example:

    ```python
    scorer = relation_net.adapt(support_x, support_y)
    predicted = scorer.predict(query_x).argmax(-1)
    ```
    """

    def __init__(self, embedding, relation, num_classes, embedding_dim, **kwargs):
        super().__init__(embedding, num_classes, embedding_dim, **kwargs)
        self.relation = relation
        self.prototypes = self._state(
            "prototypes", (self.num_classes, self.embedding_dim)
        )
        self.built = embedding.built and relation.built

    def call(self, inputs, training=False):
        return relation_logits(
            self._embed(inputs, training), self.prototypes.value, self.relation
        )

    def get_config(self):
        return _with_relation(super().get_config(), self.relation)

    @classmethod
    def from_config(cls, config):
        return super().from_config(_relation_from(config))


def _with_relation(config, relation):
    return {**config, "relation": keras.saving.serialize_keras_object(relation)}


def _relation_from(config):
    relation = keras.saving.deserialize_keras_object(config["relation"])
    return {**config, "relation": relation}
