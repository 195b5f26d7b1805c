"""SimpleShot (Wang et al., 2019): nearest centroid on centred, normalised features."""

import keras
import torch

from metakeras._checks import check_number
from metakeras.models._pretraining import Pretrained
from metakeras.models.protonet import (
    _class_means,
    _EmbeddingClassifier,
    prototype_logits,
)


def cl2n(embeddings, base_mean):
    """Centres embeddings on the base-class mean, then L2-normalises them.

    SimpleShot's "CL2N" feature transform: `(x - mean) / ||x - mean||`.

    Args:
        embeddings: `(..., d)` tensor.
        base_mean: `(d,)` mean embedding of the base classes' examples.

    Returns:
        A tensor of the shape of `embeddings`, each row of unit length.

    Example:

    >>> import torch
    >>> cl2n(torch.tensor([[3.0, 5.0]]), torch.tensor([1.0, 1.0])).tolist()
    [[0.4472135901451111, 0.8944271802902222]]
    """
    centred = embeddings - base_mean
    return centred / (centred.norm(dim=-1, keepdim=True) + 1e-8)


def simpleshot_logits(embeddings, support, support_y, ways, base_mean):
    """SimpleShot's class scores: nearest centroid after CL2N.

    Every embedding is centred on the base mean and L2-normalised (`cl2n`);
    a class's centroid is the mean of its transformed support embeddings,
    and a query scores the negative squared Euclidean distance to each
    centroid (the nearest centroid has the largest logit).

    Args:
        embeddings: `(m, d)` query embeddings, or `(tasks, m, d)`.
        support: `(n, d)` support embeddings, or `(tasks, n, d)`.
        support_y: `(n,)` (or `(tasks, n)`) integer labels `0..ways-1`.
        ways: the number of classes.
        base_mean: `(d,)` mean embedding of the base classes.

    Returns:
        `(m, ways)` logits (`(tasks, m, ways)` with a task axis).

    Example:

    >>> import torch
    >>> logits = simpleshot_logits(torch.eye(2), torch.eye(2),
    ...                            torch.tensor([0, 1]), 2, torch.zeros(2))
    >>> logits.argmax(-1).tolist()
    [0, 1]
    """
    centroids = _class_means(cl2n(support, base_mean), support_y, ways)
    return prototype_logits(cl2n(embeddings, base_mean), centroids)


@keras.saving.register_keras_serializable(package="metakeras")
class SimpleShot(Pretrained):
    """SimpleShot (Wang et al., 2019): nearest centroid on CL2N features.

    "SimpleShot: Revisiting Nearest-Neighbor Classification for Few-Shot
    Learning" (Wang, Chao, Weinberger and van der Maaten, 2019) showed that
    an embedding pretrained as a classifier of all base classes, with its
    features centred on the base classes' mean and L2-normalised (CL2N),
    classifies new tasks by their nearest class centroid as well as most
    meta-learning methods do, with no training per task at all.

    Training (`fit`) is ordinary classification with a linear head over every
    base class (`Pretrained`: arrays `fit(x, y, batch_size=...)` or a
    `TaskSampler`, whose batches name each episode label's base class);
    compile with `keras.losses.SparseCategoricalCrossentropy(from_logits=True)`.
    Along the way the model keeps `base_mean`, the mean embedding of the
    training batches (a moving average, as BatchNormalization keeps its
    statistics: the running mean of the first batches, then weighted by
    `1 - momentum`), a non-trainable weight saved with the model. A task's
    queries are scored by `simpleshot_logits` against its support set.
    BatchNormalization: the sets are embedded with the moving statistics, or
    each with its own batch statistics under `transductive_eval=True`.

    Args:
        learner: a `keras.Model` mapping inputs to embeddings `(batch, d)`,
            e.g. `metakeras.models.conv4()` without a head.
        num_classes: the number of base classes (the pretraining head's
            width), or `None` to take it from the data in `fit`. Defaults to
            `None`.
        momentum: the moving average's weight of the previous `base_mean`.
            Defaults to `0.99`.
        **kwargs: `transductive_eval` (as in `Baseline`), `center_loss` and
            `center_rate` (a center loss in pretraining, as in `Baseline`),
            `vectorize_tasks` and `keras.Model` arguments.

    Example:

    ```python
    model = metakeras.models.SimpleShot(metakeras.models.conv4())
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x_base, y_base, batch_size=64, epochs=10)
    classifier = model.adapt(support_x, support_y)  # a SimpleShotClassifier
    classifier.predict(query_x).argmax(-1)
    ```
    """

    def __init__(self, learner, num_classes=None, momentum=0.99, **kwargs):
        kwargs = self._fixed_head("linear", kwargs)
        super().__init__(learner, num_classes=num_classes, **kwargs)
        check_number("momentum", momentum, positive=False, types=(int, float))
        if not 0 <= momentum < 1:
            raise ValueError(f"`momentum` must lie in [0, 1). Received: {momentum!r}")
        self.momentum = float(momentum)

    def _build_own_weights(self):
        # The base mean first: it needs only the embedding's width, so it
        # exists before the head when `fit` finds the number of classes, and
        # a loaded model must create its weights in that order too.
        if getattr(self, "base_mean", None) is None:
            self.base_mean = self.add_weight(
                shape=(self._width,),
                initializer="zeros",
                trainable=False,
                name="base_mean",
            )
            self.base_mean_batches = self.add_weight(
                shape=(), initializer="zeros", trainable=False, name="base_mean_batches"
            )
        super()._build_own_weights()

    def _state_variables(self):
        # The base mean travels with the learner's state through a training
        # step, as BatchNormalization's moving statistics do.
        return [*super()._state_variables(), self.base_mean, self.base_mean_batches]

    def _updated_state(self, embeddings, state):
        mean, batches = state
        batches = batches + 1
        weight = torch.clamp(1 / batches, min=1 - self.momentum)
        return [mean + weight * (embeddings.detach().mean(0) - mean), batches]

    def _few_shot_logits(self, support, support_y, query, ways, steps, inputs):
        _no_steps(steps)
        return simpleshot_logits(query, support, support_y, ways, self.base_mean.value)

    def _classifier(self, support, support_y, ways, steps, inputs):
        _no_steps(steps)
        classifier = SimpleShotClassifier(
            self._embedding(inputs),
            num_classes=ways,
            embedding_dim=int(support.shape[-1]),
            batch_statistics=inputs.transductive,
        )
        mean = self.base_mean.value
        classifier.base_mean.assign(mean)
        classifier.centroids.assign(_class_means(cl2n(support, mean), support_y, ways))
        return classifier

    def get_config(self):
        config = super().get_config()
        config["momentum"] = self.momentum
        return config


def _no_steps(steps):
    if steps is not None:
        raise ValueError(
            f"SimpleShot takes no gradient steps per task; `steps` must be None. "
            f"Received: {steps!r}"
        )


@keras.saving.register_keras_serializable(package="metakeras")
class SimpleShotClassifier(_EmbeddingClassifier):
    """Nearest centroid on CL2N features, returned by `SimpleShot.adapt`.

    `base_mean` holds the base classes' mean embedding and `centroids` the
    task's class means of transformed support embeddings; `predict` returns
    the negative squared distances of `cl2n(embedding(x), base_mean)` to
    the centroids, `(n, num_classes)` logits.

    Args:
        embedding: the pretrained embedding (`keras.Model`).
        num_classes: the number of classes of the task.
        embedding_dim: the size of one embedding.
        **kwargs: `batch_statistics` (as in `PrototypeClassifier`) and
            `keras.Model` arguments.

    Example:

    ```python
    classifier = simpleshot.adapt(support_x, support_y)
    classifier.predict(query_x).argmax(-1)
    ```
    """

    def __init__(self, embedding, num_classes, embedding_dim, **kwargs):
        super().__init__(embedding, num_classes, embedding_dim, **kwargs)
        self.base_mean = self._state("base_mean", (self.embedding_dim,))
        self.centroids = self._state(
            "centroids", (self.num_classes, self.embedding_dim)
        )
        self.built = embedding.built

    def call(self, inputs, training=False):
        embeddings = cl2n(self._embed(inputs, training), self.base_mean.value)
        return prototype_logits(embeddings, self.centroids.value)
