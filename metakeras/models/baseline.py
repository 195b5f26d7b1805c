"""Baseline and Baseline++ (Chen et al., 2019): pretrain, then fit a new head."""

import math

import keras
import numpy as np
import torch

from metakeras._checks import check_choice, check_flag, check_int, check_number
from metakeras.layers.batch_normalization import _discarding_moving_statistics
from metakeras.models._pretraining import (
    HEADS,
    Pretrained,
    cosine_scale,
    head_logits,
)
from metakeras.models.protonet import _class_means, _EmbeddingClassifier

# Chen et al.'s fine-tuning: SGD with momentum 0.9, dampening 0.9 and weight
# decay 1e-3, batches of 4, 100 passes over the support set.
_MOMENTUM = 0.9
_DAMPENING = 0.9
_EPOCHS = 100
# Larger support sets (the estimators adapt to whole training sets) take
# larger batches, so that one pass is at most this many steps.
_MAX_STEPS_PER_PASS = 10


def fit_head(
    support,
    support_y,
    ways,
    head="linear",
    scale=2.0,
    steps=None,
    learning_rate=0.01,
    batch_size=4,
    weight_decay=1e-3,
    seed=0,
):
    """Fits a new classification head to embedded support sets.

    The second stage of Baseline and Baseline++: the embedding is frozen and
    a new head is trained on each task's support embeddings with the
    cross-entropy, by SGD with momentum 0.9 (dampening 0.9) and weight decay
    on mini-batches of a fresh permutation of the support set every pass, as
    in Chen et al.'s code (for support sets of up to 10 batches: a larger set
    takes larger batches, 10 per pass, which bounds the cost). Many tasks are fitted at once (their heads are
    independent). The linear head starts at zero; the cosine head starts at
    the class means of the support embeddings, so the result depends only on
    the seed of the mini-batch order.

    Args:
        support: `(n, d)` support embeddings, or `(tasks, n, d)`.
        support_y: `(n,)` (or `(tasks, n)`) integer labels `0..ways-1`.
        ways: the number of classes.
        head: `"linear"` or `"cosine"`. Defaults to `"linear"`.
        scale: the cosine head's scale. Defaults to `2.0` (Chen et al.'s
            scale for up to 200 classes).
        steps: gradient steps, or `None` for 100 passes over the support set
            (`100 * ceil(n / batch_size)` steps, at most 1,000). Defaults to
            `None`.
        learning_rate: the SGD step size. Defaults to `0.01`.
        batch_size: support examples per step, at least; more when one pass
            would take over 10 steps. Defaults to `4`.
        weight_decay: L2 penalty added to the gradient. Defaults to `1e-3`.
        seed: seed of the mini-batch order. Defaults to `0`.

    Returns:
        `(weights, bias)`: `(ways, d)` class weights and `(ways,)` biases
        (`(tasks, ways, d)` and `(tasks, ways)` with a task axis; the cosine
        head's biases are zero), for `head_logits`.

    Example:

    >>> import torch
    >>> support = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> weights, bias = fit_head(support, torch.tensor([0, 1]), ways=2)
    >>> head_logits(support, weights, bias).argmax(-1).tolist()
    [0, 1]
    """
    single = support.ndim == 2
    if single:
        support, support_y = support[None], support_y[None]
    tasks, examples, width = support.shape
    if head == "cosine":
        start = [_class_means(support, support_y, ways)]
    else:
        start = [
            support.new_zeros(tasks, ways, width),
            support.new_zeros(tasks, ways),
        ]

    def loss(params, index):
        logits = head_logits(_take(support, index), *params, head=head, scale=scale)
        return _summed_task_losses(logits, _take(support_y, index))

    params = _sgd(
        start,
        loss,
        _batches(tasks, examples, steps, batch_size, seed, support.device),
        learning_rate,
        weight_decay,
    )
    weights = params[0]
    bias = params[1] if head == "linear" else support.new_zeros(tasks, ways)
    return (weights[0], bias[0]) if single else (weights, bias)


def _take(values, index):
    """`values (T, n, ...)` at the positions `index (T, b)` of every task."""
    if values.ndim == 2:
        return torch.gather(values, 1, index)
    return torch.gather(values, 1, index[..., None].expand(-1, -1, values.shape[-1]))


def _summed_task_losses(logits, labels):
    """The sum over tasks of each task's mean cross-entropy."""
    losses = torch.nn.functional.cross_entropy(
        logits.transpose(1, 2), labels.long(), reduction="none"
    )
    return losses.mean(1).sum()


def _batches(tasks, examples, steps, batch_size, seed, device):
    """Index tensors `(tasks, b)`: mini-batches of a new permutation each pass.

    Every task takes the same positions, so a task is fitted alike alone
    (`adapt`) or among others (`adapt_and_predict`).
    """
    batch_size = max(batch_size, math.ceil(examples / _MAX_STEPS_PER_PASS))
    per_pass = math.ceil(examples / batch_size)
    steps = _EPOCHS * per_pass if steps is None else steps
    rng = np.random.default_rng(seed)
    for step in range(steps):
        if step % per_pass == 0:
            order = torch.as_tensor(rng.permutation(examples), device=device)
            order = order.expand(tasks, -1)
        start = (step % per_pass) * batch_size
        yield order[:, start : start + batch_size]


def _sgd(params, loss, batches, learning_rate, weight_decay):
    """SGD with momentum, dampening and weight decay, as `torch.optim.SGD`.

    Pure: returns new tensors, the given `params` are left as they are.
    """
    params = [p.detach() for p in params]
    velocity = [None] * len(params)
    with torch.enable_grad():
        for index in batches:
            live = [p.requires_grad_() for p in params]
            gradients = torch.autograd.grad(loss(live, index), live)
            with torch.no_grad():
                for i, (p, g) in enumerate(zip(live, gradients)):
                    g = g + weight_decay * p
                    v = velocity[i]
                    v = g if v is None else _MOMENTUM * v + (1 - _DAMPENING) * g
                    velocity[i] = v
                    params[i] = (p - learning_rate * v).detach()
    return params


@keras.saving.register_keras_serializable(package="metakeras")
class Baseline(Pretrained):
    """Baseline (Chen et al., ICLR 2019): pretraining plus a new linear head.

    "A Closer Look at Few-shot Classification" (Chen, Liu, Kira, Wang and
    Huang, ICLR 2019) showed that training the embedding as an ordinary
    classifier of all base classes, then fitting a new classifier on each
    task's support embeddings, is as good as most meta-learning methods on
    standard benchmarks; every few-shot result is judged against it.

    Training (`fit`) is that ordinary classification, with a linear head over
    every base class (`Pretrained`): on arrays `fit(x, y, batch_size=...)`
    of the base classes, or on a `TaskSampler`, whose batches carry the base
    class of every episode label (`classes`). Compile with
    `keras.losses.SparseCategoricalCrossentropy(from_logits=True)`. For each
    new task (`adapt`, `adapt_and_predict`, `evaluate`,
    `evaluate_episodes`) the embedding is frozen and a new linear head is
    trained on the support embeddings (`fit_head`: SGD, 100 passes of
    mini-batches of 4, as in the paper, larger batches for support sets of
    over 40 examples); with `finetune=True` the embedding
    is trained along with it, per task. BatchNormalization: the support and
    query sets are embedded with the moving statistics, or with each set's
    own batch statistics under `transductive_eval=True`.

    Args:
        learner: a `keras.Model` mapping inputs to embeddings `(batch, d)`,
            e.g. `metakeras.models.conv4()` without a head.
        num_classes: the number of base classes (the pretraining head's
            width), or `None` to take it from the data in `fit`. Defaults
            to `None`.
        adapt_steps: gradient steps fitting each task's head, or `None` for
            100 passes over the support set in mini-batches of
            `adapt_batch_size`. Defaults to `None`.
        adapt_learning_rate: the SGD step size of that fit. Defaults to
            `0.01` (the paper's).
        adapt_batch_size: support examples per step (more for support sets
            of over 10 batches, as `fit_head` says). Defaults to `4`.
        finetune: also train the embedding on each task's support set
            (slower: every step runs the learner). Defaults to `False`.
        **kwargs: `transductive_eval` (embed each support and query set with
            its own batch statistics at evaluation; default `False`),
            `center_loss` (the weight of Wen et al.'s center loss added to
            the pretraining loss, drawing each base class's embeddings to a
            centre; default `0.0`, none) and `center_rate` (how far the
            centres move per batch; default `0.5`), `vectorize_tasks` (used
            by the pretraining step only) and `keras.Model` arguments.

    Example:

    ```python
    model = metakeras.models.Baseline(metakeras.models.conv4())
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x_base, y_base, batch_size=64, epochs=10)  # all base classes
    classifier = model.adapt(support_x, support_y)  # a HeadClassifier
    classifier.predict(query_x).argmax(-1)
    ```
    """

    _HEAD = "linear"

    def __init__(
        self,
        learner,
        num_classes=None,
        adapt_steps=None,
        adapt_learning_rate=0.01,
        adapt_batch_size=4,
        finetune=False,
        **kwargs,
    ):
        kwargs = self._fixed_head(self._HEAD, kwargs)
        super().__init__(learner, num_classes=num_classes, **kwargs)
        check_int("adapt_steps", adapt_steps, minimum=1, none=True)
        check_number("adapt_learning_rate", adapt_learning_rate, types=(int, float))
        check_int("adapt_batch_size", adapt_batch_size, minimum=1)
        check_flag("finetune", finetune)
        self.adapt_steps = adapt_steps
        self.adapt_learning_rate = float(adapt_learning_rate)
        self.adapt_batch_size = int(adapt_batch_size)
        self.finetune = finetune

    def _task_scale(self, ways):
        """The scale of a task's cosine head (unused by the linear head)."""
        return float(self.scale or cosine_scale(ways))

    def _fit_settings(self, steps, ways):
        if steps is not None:
            check_int("steps", steps, minimum=1, none=True)
        return dict(
            head=self.head,
            scale=self._task_scale(ways),
            steps=self.adapt_steps if steps is None else steps,
            learning_rate=self.adapt_learning_rate,
            batch_size=self.adapt_batch_size,
        )

    def _few_shot_logits(self, support, support_y, query, ways, steps, inputs):
        settings = self._fit_settings(steps, ways)
        if not self.finetune:
            weights, bias = fit_head(support, support_y, ways, **settings)
            return self._logits(query, weights, bias, ways)
        logits = []
        for task in range(support.shape[0]):
            tuned, weights, bias = self._finetuned(
                inputs, task, support_y[task], ways, settings
            )
            query_task = self._embedded(tuned, inputs, inputs.query_x[task])
            logits.append(self._logits(query_task, weights, bias, ways))
        return torch.stack(logits)

    def _logits(self, embeddings, weights, bias, ways):
        scale = self._task_scale(ways)
        return head_logits(embeddings, weights, bias, head=self.head, scale=scale)

    def _embedded(self, weights, inputs, x):
        with torch.no_grad(), _discarding_moving_statistics():
            return self._forward(weights, inputs.state, x, inputs.transductive)[0]

    def _finetuned(self, inputs, task, support_y, ways, settings):
        """One task's embedding weights and head, trained together."""
        support_x = inputs.support_x[task]
        support = self._embedded(inputs.weights, inputs, support_x)
        head = fit_head(support, support_y, ways, **{**settings, "steps": 0})
        count = len(inputs.weights)
        scale = settings["scale"]

        def loss(params, index):
            with _discarding_moving_statistics():
                embeddings, _ = self._forward(
                    params[:count], inputs.state, support_x[index[0]], True
                )
            logits = head_logits(
                embeddings[None], *params[count:], head=self.head, scale=scale
            )
            return _summed_task_losses(logits, support_y[index])

        params = [*inputs.weights, head[0][None], head[1][None]]
        if self.head == "cosine":
            params.pop()
        params = _sgd(
            params,
            loss,
            _batches(
                1,
                support_x.shape[0],
                settings["steps"],
                settings["batch_size"],
                0,
                support_x.device,
            ),
            settings["learning_rate"],
            1e-3,
        )
        bias = params[count + 1][0] if self.head == "linear" else head[1]
        return params[:count], params[count][0], bias

    def _classifier(self, support, support_y, ways, steps, inputs):
        settings = self._fit_settings(steps, ways)
        if self.finetune:
            weights, kernel, bias = self._finetuned(
                inputs, 0, support_y, ways, settings
            )
            embedding = self._embedding(inputs, weights)
        else:
            kernel, bias = fit_head(support, support_y, ways, **settings)
            embedding = self._embedding(inputs)
        classifier = HeadClassifier(
            embedding,
            num_classes=ways,
            embedding_dim=int(support.shape[-1]),
            head=self.head,
            scale=self._task_scale(ways),
            batch_statistics=inputs.transductive,
        )
        classifier.kernel.assign(kernel)
        classifier.bias.assign(bias)
        return classifier

    def get_config(self):
        config = super().get_config()
        config.update(
            adapt_steps=self.adapt_steps,
            adapt_learning_rate=self.adapt_learning_rate,
            adapt_batch_size=self.adapt_batch_size,
            finetune=self.finetune,
        )
        return config


@keras.saving.register_keras_serializable(package="metakeras")
class BaselinePlusPlus(Baseline):
    """Baseline++ (Chen et al., ICLR 2019): Baseline with cosine-similarity heads.

    As `Baseline`, but both the pretraining head and each task's new head
    score an embedding by its cosine similarity to one weight vector per
    class, times a scale (`head_logits(..., head="cosine")`). Comparing by
    direction only reduces the intra-class variation of the features, which
    the paper found to matter most with shallow backbones such as conv4.

    Args:
        learner: a `keras.Model` mapping inputs to embeddings `(batch, d)`.
        scale: the cosine similarities' multiplier, or `None` for a
            choice per head by its number of classes (`cosine_scale`: 2 up
            to 200 classes, as for a task's head, 10 up to 1,000 and 30
            above, for the pretraining head over many base classes).
            Defaults to `None`.
        learn_scale: train the pretraining head's scale with the embedding
            (each task's head keeps `scale`). Defaults to `False`.
        **kwargs: `num_classes`, `adapt_steps`, `adapt_learning_rate`,
            `adapt_batch_size`, `finetune`, `transductive_eval`,
            `center_loss`, `center_rate` (here on the unit-length
            embeddings the cosine head compares), `vectorize_tasks` and
            `keras.Model` arguments, as in `Baseline`.

    Example:

    ```python
    model = metakeras.models.BaselinePlusPlus(metakeras.models.conv4())
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(task_sampler, epochs=10)  # a TaskSampler's batches name base classes
    metakeras.evaluation.evaluate_episodes(model, test_sampler)
    ```
    """

    _HEAD = "cosine"

    def __init__(self, learner, scale=None, learn_scale=False, **kwargs):
        super().__init__(learner, scale=scale, learn_scale=learn_scale, **kwargs)

    def get_config(self):
        config = super().get_config()
        config.update(scale=self.scale, learn_scale=self.learn_scale)
        return config


@keras.saving.register_keras_serializable(package="metakeras")
class HeadClassifier(_EmbeddingClassifier):
    """An embedding with the head `Baseline.adapt` fitted on one task.

    `predict` returns `head_logits(embedding(x), kernel, bias, head, scale)`:
    a linear head (`Baseline`) or a cosine-similarity head
    (`BaselinePlusPlus`).

    Args:
        embedding: the embedding `keras.Model`.
        num_classes: the number of classes of the task.
        embedding_dim: the size of one embedding.
        head: `"linear"` or `"cosine"`. Defaults to `"linear"`.
        scale: the cosine head's scale. Defaults to `1.0`.
        **kwargs: `batch_statistics` (as in `PrototypeClassifier`) and
            `keras.Model` arguments.

    Example:

    ```python
    classifier = baseline.adapt(support_x, support_y)  # a HeadClassifier
    classifier.predict(query_x).argmax(-1)
    ```
    """

    _CONFIG = (*_EmbeddingClassifier._CONFIG, "head", "scale")

    def __init__(
        self, embedding, num_classes, embedding_dim, head="linear", scale=1.0, **kwargs
    ):
        super().__init__(embedding, num_classes, embedding_dim, **kwargs)
        check_choice("head", head, HEADS, echo_name=False)
        self.head = head
        self.scale = float(scale)
        self.kernel = self._state("kernel", (self.num_classes, self.embedding_dim))
        self.bias = self._state("bias", (self.num_classes,))
        self.built = embedding.built

    def call(self, inputs, training=False):
        bias = self.bias.value if self.head == "linear" else None
        return head_logits(
            self._embed(inputs, training),
            self.kernel.value,
            bias,
            head=self.head,
            scale=self.scale,
        )
