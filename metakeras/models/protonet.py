"""Prototypical Networks (Snell et al., 2017)."""

import keras
import torch

from metakeras._checks import (
    check_choice,
    check_flag,
    check_number,
    inner_steps_argument,
)
from metakeras.layers.batch_normalization import _discarding_moving_statistics
from metakeras.models._cloning import learner_with_weights
from metakeras.models.meta_model import MetaModel

DISTANCES = ("euclidean", "cosine")


def prototype_logits(embeddings, prototypes, distance="euclidean", scale=1.0):
    """Class scores of embeddings against class prototypes.

    Args:
        embeddings: `(n, d)` tensor, or `(tasks, n, d)`.
        prototypes: `(ways, d)` tensor, or `(tasks, ways, d)`.
        distance: `"euclidean"` (negative squared distance, as in the paper)
            or `"cosine"` (cosine similarity). Defaults to `"euclidean"`.
        scale: multiplier of the scores (a temperature). Defaults to `1.0`.

    Returns:
        `(n, ways)` logits (`(tasks, n, ways)` with a task axis).

    Example:

    >>> import torch
    >>> logits = prototype_logits(torch.zeros(3, 4), torch.ones(2, 4))
    >>> tuple(logits.shape)
    (3, 2)
    """
    if distance == "euclidean":
        diff = embeddings[..., :, None, :] - prototypes[..., None, :, :]
        return -scale * (diff**2).sum(-1)
    e = embeddings / (embeddings.norm(dim=-1, keepdim=True) + 1e-8)
    p = prototypes / (prototypes.norm(dim=-1, keepdim=True) + 1e-8)
    return scale * e @ p.transpose(-2, -1)


@keras.saving.register_keras_serializable(package="metakeras")
class ProtoNet(MetaModel):
    """Prototypical Networks: classify by distance to class-mean embeddings.

    The learner is an embedding network. For each task, the prototype of a
    class is the mean embedding of its support examples, and a query is
    scored by the (negative squared Euclidean, or cosine) distance of its
    embedding to each prototype. Meta-training minimises the compiled loss on
    those scores, so compile with
    `keras.losses.SparseCategoricalCrossentropy(from_logits=True)`. There is
    no inner gradient loop: adaptation is computing prototypes, so it is fast
    and exact.

    Support labels of a meta-batch must be `0..N-1` with every class present
    in every task (the episode contract). BatchNormalization: support and
    query are embedded in training mode (batch statistics) during
    meta-training and in inference mode (moving statistics) at evaluation
    and in the model returned by `adapt`, unless `transductive_eval=True`:
    then `evaluate`, `adapt_and_predict` and `evaluate_episodes` embed each
    task's support set and query set with their own batch statistics, as in
    training. `adapt` uses one mode for both sets (mixing them, prototypes
    from batch statistics and queries from moving ones, scored 84.75%
    against 93% for either consistent mode on a 20-way 1-shot benchmark):
    with `transductive=True` (by default `transductive_eval`) the prototypes
    come from the support set's batch statistics and the classifier it
    returns embeds each batch it predicts with that batch's statistics
    (predict all queries of a task in one batch); otherwise both use the
    moving statistics, and queries can come one at a time.

    Args:
        learner: a `keras.Model` mapping inputs to embeddings `(batch, d)`,
            e.g. `metakeras.models.conv4()` without a head.
        distance: `"euclidean"` or `"cosine"`. Defaults to `"euclidean"`.
        scale: multiplier of the scores; `None` means `1.0` for Euclidean
            and `10.0` for cosine (cosine similarities lie in [-1, 1] and
            need a temperature). Defaults to `None`.
        transductive_eval: embed support and query sets with their batch
            statistics at evaluation. Defaults to `False`.
        vectorize_tasks: batch the tasks with `torch.func.vmap` (`True`),
            run them one by one (`False`), or choose by device and learner
            (`"auto"`, see `MetaModel`). Defaults to `"auto"`.
        **kwargs: passed to `keras.Model`.

    Example:

    ```python
    model = metakeras.ProtoNet(metakeras.models.conv4(input_shape=(1, 28, 28)))
    model.compile(optimizer="adam",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(task_sampler, epochs=10)
    classifier = model.adapt(support_x, support_y)  # a keras.Model
    classifier.predict(query_x).argmax(-1)
    ```
    """

    def __init__(
        self,
        learner,
        distance="euclidean",
        scale=None,
        transductive_eval=False,
        vectorize_tasks="auto",
        **kwargs,
    ):
        super().__init__(learner, vectorize_tasks=vectorize_tasks, **kwargs)
        check_flag("transductive_eval", transductive_eval, echo_name=False)
        check_choice("distance", distance, DISTANCES, echo_name=False)
        check_number("scale", scale, none=True, echo_name=False, types=(int, float))
        self.distance = distance
        self.scale = scale
        self.transductive_eval = transductive_eval
        self._checked_labels = (None, None)

    @property
    def _scale(self):
        if self.scale is not None:
            return float(self.scale)
        return 1.0 if self.distance == "euclidean" else 10.0

    def _num_classes(self):
        # The learner outputs embeddings; labels are checked against `ways`.
        return None

    def _episode_context(self, support_x, support_y, steps):
        if steps is not None:
            raise ValueError(
                f"{type(self).__name__} has no inner steps; `inner_steps` must be "
                f"None. Received: inner_steps={steps!r}"
            )
        if support_y is self._checked_labels[0] or self._graph_episode is not None:
            # Checked before the step (a CUDA graph step cannot read labels).
            return {"ways": self._checked_labels[1]}
        return {"ways": self._check_labels(support_y)}

    def _episode_checks(self, support_x, support_y, query_y):
        ways = _episode_ways(support_y, type(self).__name__, query_y)
        self._checked_labels = (support_y, ways)

    def _graph_signature(self):
        return (*super()._graph_signature(), self.distance, self._checked_labels[1])

    def _check_labels(self, support_y):
        """The number of classes of a meta-batch; every task must hold them all."""
        return _episode_ways(support_y, type(self).__name__)

    def _task_forward(
        self, weights, state, support_x, support_y, query_x, training, context
    ):
        training = training or self.transductive_eval
        with _discarding_moving_statistics():
            support, _ = self._forward(weights, state, support_x, training=training)
        query, new_state = self._forward(weights, state, query_x, training=training)
        return self._task_logits(query, support, support_y, context["ways"]), new_state

    def _task_logits(self, query, support, support_y, ways):
        """One task's query logits from its embeddings (the classifier's rule)."""
        prototypes = _class_means(support, support_y, ways)
        return prototype_logits(query, prototypes, self.distance, self._scale)

    def adapt(
        self, support_x, support_y, inner_steps=None, transductive=None, **kwargs
    ):
        """Embeds one task's support set and returns the task's classifier.

        Args:
            support_x: the task's labelled inputs, `(examples, *features)`.
            support_y: integer labels `0..N-1`, `(examples,)`.
            inner_steps: must be `None` (ProtoNet takes no gradient steps).
            transductive: `True` embeds the support set, and every batch the
                returned classifier predicts, with its own batch statistics;
                `False` uses the moving statistics for both. Defaults to
                `None` (the model's `transductive_eval`).
            **kwargs: `steps`, the deprecated name of `inner_steps`.

        Returns:
            The task's classifier, a `keras.Model` whose `predict` returns
            `(n, N)` logits (`argmax(-1)` gives the class): a
            `PrototypeClassifier` here, the subclasses' own classifiers for
            the other metric models (`MatchingClassifier`, ...).
        """
        steps = inner_steps_argument(
            kwargs, inner_steps, f"{type(self).__name__}.adapt"
        )
        support = self._embedded_support(support_x, support_y, steps, transductive)
        with torch.no_grad():
            return self._classifier(*support)

    def _classifier(self, embeddings, support_y, ways, embedding, transductive):
        """The task's classifier from its embedded support set (for `adapt`)."""
        classifier = PrototypeClassifier(
            embedding,
            num_classes=ways,
            embedding_dim=int(embeddings.shape[-1]),
            distance=self.distance,
            scale=self._scale,
            batch_statistics=transductive,
        )
        classifier.prototypes.assign(_class_means(embeddings, support_y, ways))
        return classifier

    def _embedded_support(self, support_x, support_y, steps, transductive):
        """One task's support set, checked and embedded, for `adapt`.

        Returns:
            `(embeddings, support_y, ways, embedding model, transductive)`.
        """
        support_x, support_y, transductive = _checked_support_set(
            self, support_x, support_y, transductive
        )
        context = self._episode_context(support_x[None], support_y[None], steps)
        weights = [v.value.detach() for v in self.learner.trainable_variables]
        state = [v.value.detach() for v in self.learner.non_trainable_variables]
        with torch.no_grad():
            embeddings, _ = self._forward(
                weights, state, support_x, training=transductive
            )
        embedding = learner_with_weights(self.learner, weights, state, support_x)
        return embeddings, support_y, context["ways"], embedding, transductive

    def get_config(self):
        config = super().get_config()
        config.update(distance=self.distance, scale=self.scale)
        if self.transductive_eval:
            config["transductive_eval"] = True
        return config


class _EmbeddingClassifier(keras.Model):
    """A classifier on top of an embedding, in one BatchNormalization mode.

    Subclasses add their state with `_state`, name their constructor
    arguments beyond these in `_CONFIG`, and score `_embed(inputs)`.

    Args:
        embedding: the embedding `keras.Model`.
        num_classes: number of classes.
        embedding_dim: size of an embedding.
        batch_statistics: see `PrototypeClassifier`.
        **kwargs: passed to `keras.Model`.
    """

    _CONFIG = ("num_classes", "embedding_dim", "batch_statistics")

    def __init__(
        self, embedding, num_classes, embedding_dim, batch_statistics=False, **kwargs
    ):
        super().__init__(**kwargs)
        check_flag("batch_statistics", batch_statistics, echo_name=False)
        self.embedding = embedding
        self.num_classes = int(num_classes)
        self.embedding_dim = int(embedding_dim)
        self.batch_statistics = batch_statistics

    def _state(self, name, shape, dtype=None):
        """A zero-initialised non-trainable weight (set by `adapt`)."""
        return self.add_weight(
            shape=shape, initializer="zeros", dtype=dtype, trainable=False, name=name
        )

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "embedding": keras.saving.serialize_keras_object(self.embedding),
            **{key: getattr(self, key) for key in self._CONFIG},
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        embedding = keras.saving.deserialize_keras_object(config.pop("embedding"))
        return cls(embedding=embedding, **config)

    def _embed(self, inputs, training):
        if self.batch_statistics and not isinstance(inputs, keras.KerasTensor):
            # Stateless, so the moving statistics are read, never updated.
            embeddings, _ = self.embedding.stateless_call(
                [v.value for v in self.embedding.trainable_variables],
                [v.value for v in self.embedding.non_trainable_variables],
                inputs,
                training=True,
            )
            return embeddings
        return self.embedding(inputs, training=training)

    def predict(self, x, batch_size=None, verbose="auto", steps=None, **kwargs):
        """As `keras.Model.predict`; one batch by default with `batch_statistics`.

        Args:
            x: inputs `(examples, *features)`.
            batch_size: as in Keras. Defaults to `None` (all of `x` at once
                with `batch_statistics`, else Keras's 32).
            verbose: as in Keras. Defaults to `"auto"`.
            steps: as in Keras. Defaults to `None`.
            **kwargs: other `keras.Model.predict` arguments.

        Returns:
            NumPy array of logits `(examples, num_classes)`.
        """
        if self.batch_statistics and batch_size is None and hasattr(x, "__len__"):
            batch_size = max(1, len(x))
        return super().predict(
            x, batch_size=batch_size, verbose=verbose, steps=steps, **kwargs
        )


@keras.saving.register_keras_serializable(package="metakeras")
class PrototypeClassifier(_EmbeddingClassifier):
    """A classifier that scores inputs against stored class prototypes.

    Returned by `ProtoNet.adapt`. `predict` returns logits `(n, num_classes)`.

    Args:
        embedding: the embedding `keras.Model`.
        num_classes: number of prototypes.
        embedding_dim: size of an embedding.
        distance: `"euclidean"` or `"cosine"`. Defaults to `"euclidean"`.
        scale: multiplier of the scores. Defaults to `1.0`.
        batch_statistics: embed every batch with its own batch statistics
            (BatchNormalization in training mode, Dropout active, moving
            statistics left as they are), as the prototypes of a transductive
            `adapt` were; `predict` then takes the whole input as one batch
            unless given a `batch_size`. Defaults to `False`.
        **kwargs: passed to `keras.Model`.

    Example:

    ```python
    classifier = protonet.adapt(support_x, support_y)  # a PrototypeClassifier
    labels = classifier.predict(query_x).argmax(-1)
    ```
    """

    _CONFIG = (*_EmbeddingClassifier._CONFIG, "distance", "scale")

    def __init__(
        self,
        embedding,
        num_classes,
        embedding_dim,
        distance="euclidean",
        scale=1.0,
        batch_statistics=False,
        **kwargs,
    ):
        super().__init__(
            embedding, num_classes, embedding_dim, batch_statistics, **kwargs
        )
        check_choice("distance", distance, DISTANCES, echo_name=False)
        self.distance = distance
        self.scale = float(scale)
        self.prototypes = self._state(
            "prototypes", (self.num_classes, self.embedding_dim)
        )
        self.built = embedding.built

    def call(self, inputs, training=False):
        embeddings = self._embed(inputs, training)
        return prototype_logits(
            embeddings, self.prototypes.value, self.distance, self.scale
        )


def _checked_support_set(model, support_x, support_y, transductive):
    """One task's support set checked for an embedding model's `adapt`.

    Args:
        model: the `MetaModel` (ProtoNet, Baseline, ...) that adapts.
        support_x: the task's inputs `(examples, *features)`.
        support_y: their integer labels `(examples,)`.
        transductive: the `transductive` argument of `adapt`, `None` for
            the model's `transductive_eval`.

    Returns:
        `(support_x, support_y, transductive)`, the sets as tensors.

    Raises:
        ValueError: for a malformed set, labels that are not 1-D or a
            `transductive` that is not a bool.
    """
    if transductive is None:
        transductive = model.transductive_eval
    check_flag("transductive", transductive, echo_name=False)
    support_x, support_y = model._check_single_task(support_x, support_y)
    if support_y.ndim != 1:
        raise ValueError(
            "`support_y` must be a 1-D array of integer labels; received "
            f"shape {tuple(support_y.shape)}."
        )
    return support_x, support_y, transductive


def _episode_ways(support_y, owner, query_y=None):
    """The number of classes of episodes' labels, checked.

    Every task's support set must hold every label `0..ways-1`, at least
    two, and the query labels must lie in that range.

    Args:
        support_y: integer labels `(tasks, examples)`.
        owner: the model's name, for the messages.
        query_y: the query labels `(tasks, examples)`, or `None` (not
            checked). Defaults to `None`.

    Returns:
        `ways`, an int.

    Raises:
        ValueError: for floating labels, one class, a task missing a class,
            or query labels out of range.
    """
    for name, labels in (("support_y", support_y), ("query_y", query_y)):
        if labels is not None and labels.is_floating_point():
            raise ValueError(
                f"{owner} needs integer class labels in `{name}`; received "
                f"dtype {labels.dtype}."
            )
    ways = int(support_y.max()) + 1
    if ways < 2:
        raise ValueError(
            f"{owner} needs at least 2 classes per episode; `support_y` holds "
            "only label 0 (1-way episodes: every query would be trivially right "
            "and the loss 0, so nothing is learned)."
        )
    counts = torch.stack([(support_y == c).sum(dim=-1) for c in range(ways)], dim=-1)
    if bool((counts == 0).any()):
        raise ValueError(
            f"Every task's `support_y` must hold every label 0..{ways - 1}; "
            "some task is missing a class (labels must be remapped per episode)."
        )
    if query_y is not None:
        low, high = int(query_y.min()), int(query_y.max())
        if low < 0 or high >= ways:
            raise ValueError(
                f"`query_y` holds labels in [{low}, {high}], but the support sets "
                f"hold {ways} classes: query labels must lie in [0, {ways - 1}] "
                "(the support set's classes, remapped per episode)."
            )
    return ways


def _class_means(embeddings, labels, ways):
    """Mean embedding per class, `(..., ways, d)`; leading task axes allowed."""
    # Comparison with arange (not one_hot) so that it works under vmap.
    onehot = (labels[..., None] == torch.arange(ways, device=labels.device)).to(
        embeddings.dtype
    )
    return (onehot.transpose(-2, -1) @ embeddings) / onehot.sum(-2)[..., None]
