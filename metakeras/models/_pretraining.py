"""Pretraining an embedding on all base classes: the baselines' first stage.

Baseline, Baseline++ (Chen et al., 2019) and SimpleShot (Wang et al., 2019)
train their embedding as an ordinary classifier of every base class, not
episode by episode; they differ only in the head of that classifier and in
how a new task is then classified from its support embeddings. This module
holds what they share: `fit` on labelled arrays or on episodes (whose
`classes` key maps episode labels back to base classes), the supervised
training step with its pretraining head, and the embedding of each task's
support and query sets at evaluation.
"""

import keras
import numpy as np
import torch

from metakeras._checks import (
    check_choice,
    check_flag,
    check_int,
    check_number,
    inner_steps_argument,
)
from metakeras.layers.batch_normalization import _discarding_moving_statistics
from metakeras.models._adaptation import merge_tasks
from metakeras.models._checks import to_tensor
from metakeras.models._cloning import learner_with_weights
from metakeras.models.meta_model import MetaModel
from metakeras.models.protonet import (
    _checked_support_set,
    _episode_ways,
    prototype_logits,
)
from metakeras.tasks.episode import EPISODE_KEYS, unpack_episode
from metakeras.tasks.task_sampler import as_model_inputs

HEADS = ("linear", "cosine")
# `TaskSampler(rotations=...)`: every rotated copy of a class is a class.
_ROTATIONS = 4
# Images per inference-mode forward pass on the CPU: conv4 embedded 20 tasks
# of 300 Omniglot images 3x faster 256 at a time than all 6,000 at once (one
# thread; the activations of a large batch overflow the caches).
_CPU_INFERENCE_BATCH = 256


def head_logits(embeddings, weights, bias=None, head="linear", scale=1.0):
    """Class scores of a linear or a cosine-similarity head.

    The linear head scores `embeddings @ weights^T + bias` (Baseline); the
    cosine head scores `scale * cos(embedding, weights[c])` for every class
    `c` (Baseline++, whose class weights are compared with the embedding by
    direction only, which reduces the intra-class variation of the features).

    Args:
        embeddings: `(n, d)`, or `(tasks, n, d)`.
        weights: one weight vector per class, `(classes, d)`, or
            `(tasks, classes, d)`.
        bias: `(classes,)` or `(tasks, classes)`, or `None` (no bias; the
            cosine head has none). Defaults to `None`.
        head: `"linear"` or `"cosine"`. Defaults to `"linear"`.
        scale: multiplier of the cosine similarities, which lie in [-1, 1]
            (a temperature). Defaults to `1.0`.

    Returns:
        `(n, classes)` logits (`(tasks, n, classes)` with a task axis).

    Example:

    >>> import torch
    >>> head_logits(torch.ones(2, 3), torch.eye(3), head="cosine", scale=3.0)[0]
    tensor([1.7321, 1.7321, 1.7321])
    """
    if head == "cosine":
        return prototype_logits(embeddings, weights, "cosine", scale)
    logits = embeddings @ weights.transpose(-2, -1)
    return logits if bias is None else logits + bias[..., None, :]


def center_distances(embeddings, centers, labels):
    """Half the squared distance of each embedding to its class's centre.

    The per-example terms of Wen et al.'s center loss ("A Discriminative
    Feature Learning Approach for Deep Face Recognition", ECCV 2016):
    `0.5 * ||x_i - c_{y_i}||^2`. The centres are held constant (they move by
    `moved_centers`, not by gradients).

    Args:
        embeddings: `(n, d)` embeddings.
        centers: `(classes, d)` one centre per class.
        labels: `(n,)` integer classes of the embeddings.

    Returns:
        A `(n,)` tensor.

    Example:

    >>> import torch
    >>> center_distances(torch.tensor([[3.0, 4.0]]), torch.zeros(2, 2),
    ...                  torch.tensor([1])).tolist()
    [12.5]
    """
    own = centers.detach()[labels.long()]
    return 0.5 * (embeddings - own).square().sum(-1)


def moved_centers(centers, embeddings, labels, rate):
    """Wen et al.'s centre update after one batch.

    Each class `j` of the batch moves its centre by
    `rate * sum_i (x_i - c_j) / (1 + n_j)` over its `n_j` examples `x_i`
    (the centre counts as one more example, so a class seen once moves half
    way at `rate=1`); classes absent from the batch keep theirs.

    Args:
        centers: `(classes, d)` centres.
        embeddings: `(n, d)` embeddings of the batch.
        labels: `(n,)` integer classes.
        rate: the step, Wen et al.'s alpha in (0, 1].

    Returns:
        The new `(classes, d)` centres.

    Example:

    >>> import torch
    >>> moved_centers(torch.zeros(2, 1), torch.tensor([[4.0], [2.0]]),
    ...               torch.tensor([0, 0]), rate=0.5).tolist()
    [[1.0], [0.0]]
    """
    labels = labels.long()
    embeddings = embeddings.detach()
    pulls = torch.zeros_like(centers).index_add(0, labels, embeddings - centers[labels])
    counts = torch.zeros_like(centers[:, 0]).index_add(
        0, labels, torch.ones_like(labels, dtype=centers.dtype)
    )
    return centers + rate * pulls / (1 + counts)[:, None]


def cosine_scale(classes):
    """The default scale of a cosine head of `classes` classes.

    Chen et al.'s code takes 2 for a head of up to 200 classes and 10 above.
    A softmax over cosine scores needs a scale that grows with the log of the
    number of classes (Wang et al., "NormFace", 2017): for the right class to
    reach a probability of 0.9 against `C - 1` others spread evenly, at least
    `log(9 (C - 1))`, which 10 no longer meets beyond about 2,400 classes. So
    above 1,000 classes the scale is 30 (CosFace's, Wang et al. 2018): on
    Omniglot's 3,856 rotated background classes, pretraining at 30 instead of
    10 raised Baseline++'s 20-way 1-shot accuracy after 10 minutes from 82.8%
    to 86.0% (`benchmarks/README.md`).

    Args:
        classes: the number of classes the head scores.

    Returns:
        `2.0` up to 200 classes, `10.0` up to 1,000, `30.0` above.

    Example:

    >>> [cosine_scale(n) for n in (20, 500, 3856)]
    [2.0, 10.0, 30.0]
    """
    if classes <= 200:
        return 2.0
    return 10.0 if classes <= 1000 else 30.0


class Pretrained(MetaModel):
    """Base of the models that pretrain their embedding on all base classes.

    `fit` trains `learner` (an embedding) with a head over every base class
    and the compiled loss, as ordinary supervised learning: on labelled
    arrays `fit(x, y, batch_size=...)`, or on a task source whose batches
    carry `classes` (`TaskSampler`), each episode's support and query
    examples then forming one batch labelled with their base classes.
    Evaluation (`evaluate`, `adapt_and_predict`, `evaluate_episodes`) and
    `adapt` embed each task's support and query sets and classify the
    queries by the subclass's rule (`_few_shot_logits`, `_classifier`).

    Args:
        learner: a `keras.Model` mapping inputs to embeddings `(batch, d)`.
        num_classes: the number of base classes, or `None` to take it from
            the data in `fit`. Defaults to `None`.
        head: the pretraining head, `"linear"` or `"cosine"`.
            Defaults to `"linear"`.
        scale: the cosine head's scale, or `None` for `cosine_scale`.
            Defaults to `None`.
        learn_scale: train the cosine head's scale. Defaults to `False`.
        transductive_eval: embed each support and query set with its own
            batch statistics at evaluation. Defaults to `False`.
        center_loss: weight of Wen et al.'s center loss ("A Discriminative
            Feature Learning Approach for Deep Face Recognition", ECCV 2016)
            added to the pretraining loss: the batch mean of
            `center_distances`, half the squared distance of each embedding
            (of its unit-length direction under the cosine head) to a centre
            of its class, which draws each class's embeddings together, as
            a nearest centroid needs new classes to be. The centres are
            non-trainable weights saved with the model. `0` for none.
            Defaults to `0.0`.
        center_rate: how far each centre moves towards its class's
            embeddings per batch (`moved_centers`; Wen et al.'s alpha), in
            (0, 1]. Defaults to `0.5`.
        **kwargs: `vectorize_tasks` and `keras.Model` arguments.
    """

    def __init__(
        self,
        learner,
        num_classes=None,
        head="linear",
        scale=None,
        learn_scale=False,
        transductive_eval=False,
        center_loss=0.0,
        center_rate=0.5,
        **kwargs,
    ):
        super().__init__(learner, **kwargs)
        check_number("center_loss", center_loss, positive=False, types=(int, float))
        if center_loss < 0:
            raise ValueError(
                f"`center_loss` must be a weight >= 0 (0 for no center loss). "
                f"Received: {center_loss!r}"
            )
        check_number("center_rate", center_rate, types=(int, float))
        if center_rate > 1:
            raise ValueError(
                f"`center_rate` must lie in (0, 1]. Received: {center_rate!r}"
            )
        if num_classes is not None:
            check_int("num_classes", num_classes, minimum=2)
        check_choice("head", head, HEADS, echo_name=False)
        check_number("scale", scale, none=True, types=(int, float))
        check_flag("learn_scale", learn_scale)
        check_flag("transductive_eval", transductive_eval, echo_name=False)
        self.num_classes = None if num_classes is None else int(num_classes)
        self.head = head
        self.scale = scale
        self.learn_scale = learn_scale
        self.transductive_eval = transductive_eval
        self.center_loss = float(center_loss)
        self.center_rate = float(center_rate)
        self.head_weights = None
        self.centers = None
        self._pretraining = False
        if self._learner_output_shape is not None:
            self._build_own_weights()

    # ------------------------------------------------------------ weights

    @property
    def _width(self):
        return int(self._learner_output_shape[-1])

    def _build_learner(self, support_x):
        super()._build_learner(support_x)
        self._build_own_weights()

    def _build_own_weights(self):
        """The pretraining head, once the embedding width and classes are known."""
        if self.head_weights is not None or self.num_classes is None:
            return
        shape = (self.num_classes, self._width)
        self.head_weights = self.add_weight(
            shape=shape, initializer="glorot_uniform", name="head_weights"
        )
        if self.head == "linear":
            self.head_bias = self.add_weight(
                shape=shape[:1], initializer="zeros", name="head_bias"
            )
        else:
            self.head_scale = self.add_weight(
                shape=(),
                initializer=keras.initializers.Constant(self._head_scale()),
                trainable=self.learn_scale,
                name="head_scale",
            )
        if self.center_loss:
            self.centers = self.add_weight(
                shape=shape, initializer="zeros", trainable=False, name="centers"
            )

    def _state_variables(self):
        # The centres travel with the learner's state through a training
        # step, as BatchNormalization's moving statistics do.
        state = super()._state_variables()
        return state if self.centers is None else [*state, self.centers]

    @classmethod
    def _fixed_head(cls, head, kwargs):
        """`kwargs` with the subclass's `head`; refuses another one."""
        given = kwargs.get("head", head)
        if given != head:
            raise ValueError(
                f"{cls.__name__}'s pretraining head is {head!r} (received "
                f"head={given!r}); BaselinePlusPlus has the cosine head, "
                "Baseline and SimpleShot the linear one."
            )
        return {**kwargs, "head": head}

    def _head_scale(self):
        return float(self.scale or cosine_scale(self.num_classes))

    def _num_classes(self):
        # The learner outputs embeddings; episode labels are checked by ways.
        return None

    # ------------------------------------------------------------ training

    def fit(self, x=None, y=None, *args, **kwargs):
        """Pretrains the embedding as a classifier of all base classes.

        Args:
            x: the examples of the base classes `(n, *features)` with their
                labels `y` (uint8 images are scaled to [0, 1] and `(n, H, W)`
                images get a channel axis, as `TaskSampler` does); or a task
                source whose batches carry `classes` (a `TaskSampler`): each
                batch's support and query examples, labelled with their base
                classes (with `rotations`, each rotated copy of a class is a
                class of its own), are one training batch.
            y: the labels of `x` (any values; mapped to `0..classes-1` in
                sorted order), or `None` for a task source. Defaults to
                `None`.
            *args: the other `MetaModel.fit` arguments (`batch_size`, the
                examples per batch for arrays, `epochs`, `verbose`,
                `callbacks`, ...).
            **kwargs: the same, by name.

        Returns:
            A `keras.callbacks.History`.

        Raises:
            ValueError: when the number of base classes cannot be found
                (pass `num_classes`) or exceeds `num_classes`.
        """
        if y is not None:
            if isinstance(x, dict):
                raise ValueError(
                    "`y` goes with arrays of examples `x`; episodes carry their "
                    "targets, so pass them with `y=None`."
                )
            x = as_model_inputs(np.asarray(x))
            _, y = np.unique(np.asarray(y), return_inverse=True)
            self._set_num_classes(int(y.max()) + 1)
        else:
            self._set_num_classes(_source_classes(x))
        return super().fit(x, y, *args, **kwargs)

    def _set_num_classes(self, found):
        name = type(self).__name__
        if found is None and self.num_classes is None:
            raise ValueError(
                f"{name} pretrains a classifier of all base classes and needs "
                "their number: pass `num_classes=` to the model, or fit on a "
                "`TaskSampler` (whose batches name each episode class's base "
                "class) or on arrays `fit(x, y)`."
            )
        if found is not None and self.num_classes is not None:
            if found > self.num_classes:
                raise ValueError(
                    f"The data holds {found} base classes, but the model was "
                    f"built for num_classes={self.num_classes}."
                )
        elif found is not None:
            self.num_classes = found
        if self._learner_output_shape is not None:
            self._build_own_weights()

    def _build_for_steps(self, first_batch):
        if self._learner_output_shape is None:
            batch = first_batch()
            if _is_episode(batch):
                inputs = unpack_episode(batch)[0]
            else:
                inputs = keras.utils.unpack_x_y_sample_weight(batch)[0][None]
            self._build_learner(to_tensor(inputs, "x"))
        super()._build_for_steps(first_batch)

    def train_step(self, data):
        x, y = self._labelled_batch(data)
        if self.head_weights is None:
            self._set_num_classes(None)
        high = int(y.max())
        if int(y.min()) < 0 or high >= self.num_classes:
            raise ValueError(
                f"Base-class labels must lie in [0, {self.num_classes - 1}] "
                f"(num_classes={self.num_classes}); received label {high}."
            )
        # The batch as one task whose query set it is: the meta-training step
        # (its loss, gradient, checks and update) then trains the classifier.
        self._pretraining = True
        try:
            return super().train_step((x[None], y[None], x[None], y[None]))
        finally:
            self._pretraining = False

    def _replays_graphs(self):
        runner = self._graph_runner
        if runner is not None and runner.reason is None:
            # The graph runner replays episode steps; this step is not one.
            runner._fall_back(
                "its pretraining step is an ordinary supervised step, not "
                "recorded as a CUDA graph"
            )
        return False

    def _labelled_batch(self, data):
        """`(x, y)` tensors of a training batch, y the base-class labels."""
        if _is_episode(data):
            if isinstance(data, (tuple, list)):
                data = data[0]
            if "classes" not in data:
                raise ValueError(
                    f"{type(self).__name__} pretrains on the base classes: an "
                    "episode batch must carry `classes` (the base class of each "
                    "episode label, as TaskSampler batches do), or fit on "
                    "arrays `fit(x, y)`."
                )
            sx, sy, qx, qy = (to_tensor(data[key], key) for key in EPISODE_KEYS)
            classes = to_tensor(data["classes"], "classes")
            rotations = data.get("rotations")
            if rotations is not None:
                rotations = to_tensor(rotations, "rotations")
            labels = [_base_classes(labels, classes, rotations) for labels in (sy, qy)]
            return torch.cat([merge_tasks(sx), merge_tasks(qx)]), torch.cat(labels)
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if y is None or sample_weight is not None:
            raise ValueError(
                f"{type(self).__name__} trains on batches `(x, y)` of examples and "
                "base-class labels (no sample weights), or on episodes with "
                f"`classes`; received {type(data).__name__} of "
                f"{len(data) if isinstance(data, (tuple, list)) else 1} item(s)."
            )
        return to_tensor(x, "x"), to_tensor(y, "y").long()

    def _episode_checks(self, support_x, support_y, query_y):
        if not self._pretraining:
            _episode_ways(support_y, type(self).__name__, query_y)

    def _task_forward(
        self, weights, state, support_x, support_y, query_x, training, context
    ):
        # Only the pretraining step gets here (`train_step`): the query set is
        # the batch of base-class examples, and support_y holds its labels.
        learner_state = len(self.learner.non_trainable_variables)
        embeddings, new_state = self._forward(
            weights, state[:learner_state], query_x, training=True
        )
        own = state[learner_state:]
        logits = self._pretraining_logits(embeddings)
        if self.centers is None:
            return logits, [*new_state, *self._updated_state(embeddings, own)]
        centers, own = own[0], own[1:]
        points = embeddings
        if self.head == "cosine":  # it compares directions: so do its centres
            points = torch.nn.functional.normalize(embeddings, dim=-1)
        distances = center_distances(points, centers, support_y)
        centers = moved_centers(centers, points, support_y, self.center_rate)
        extra = self._updated_state(embeddings, own)
        return (logits, distances), [*new_state, centers, *extra]

    def _training_loss(self, y, outputs, plain):
        if not isinstance(outputs, tuple):
            return super()._training_loss(y, outputs, plain)
        logits, distances = outputs
        loss, logits = super()._training_loss(y, logits, plain)
        return loss + self.center_loss * distances.mean(), logits

    def _updated_state(self, embeddings, state):
        """New values of the model's own state variables after a training batch."""
        return state

    def _pretraining_logits(self, embeddings):
        if self.head == "linear":
            return head_logits(
                embeddings, self.head_weights.value, self.head_bias.value
            )
        return head_logits(
            embeddings,
            self.head_weights.value,
            head="cosine",
            scale=self.head_scale.value,
        )

    # -------------------------------------------------------------- tasks

    def _episode_forward(self, support_x, support_y, query_x, training, steps=None):
        if training:
            return super()._episode_forward(
                support_x, support_y, query_x, training, steps
            )
        ways = _episode_ways(support_y, type(self).__name__)
        weights = [v.value.detach() for v in self.learner.trainable_variables]
        state = [v.value.detach() for v in self.learner.non_trainable_variables]
        mode = self.transductive_eval
        support, query = (
            self._embed_tasks(weights, state, x, mode) for x in (support_x, query_x)
        )
        inputs = _TaskInputs(weights, state, support_x, query_x, mode)
        logits = self._few_shot_logits(support, support_y, query, ways, steps, inputs)
        return logits, [v.value for v in self._state_variables()]

    def _embed_tasks(self, weights, state, x, transductive):
        """Embeddings `(T, n, d)` of `x (T, n, ...)`, each task in the mode given."""
        with torch.no_grad(), _discarding_moving_statistics():
            if not transductive:
                flat = merge_tasks(x)
                on_cpu = flat.device.type == "cpu"
                parts = flat.split(_CPU_INFERENCE_BATCH if on_cpu else len(flat))
                embedded = [self._forward(weights, state, p, False)[0] for p in parts]
                return torch.cat(embedded).reshape(*x.shape[:2], -1)
            return torch.stack(
                [self._forward(weights, state, task, True)[0] for task in x]
            )

    def _few_shot_logits(self, support, support_y, query, ways, steps, inputs):
        """Query logits `(T, m, ways)` of tasks from their embedded sets.

        Args:
            support: `(T, n, d)` support embeddings.
            support_y: `(T, n)` labels `0..ways-1`.
            query: `(T, m, d)` query embeddings.
            ways: the number of classes.
            steps: the `steps` argument of the call, or `None`.
            inputs: the tasks' inputs and the embedding's values
                (`_TaskInputs`), for rules that train the embedding further.
        """
        raise NotImplementedError

    def adapt(
        self, support_x, support_y, inner_steps=None, transductive=None, **kwargs
    ):
        """Embeds one task's support set and returns the task's classifier.

        Args:
            support_x: the task's labelled inputs, `(examples, *features)`.
            support_y: integer labels `0..N-1`, `(examples,)`.
            inner_steps: for Baseline and Baseline++, the gradient steps
                that fit the new head (`None`: the model's `adapt_steps`);
                SimpleShot takes none. Defaults to `None`.
            transductive: `True` embeds the support set, and every batch the
                classifier predicts, with its own batch statistics; `False`
                uses the moving statistics. Defaults to `None` (the model's
                `transductive_eval`).
            **kwargs: `steps`, the deprecated name of `inner_steps`.

        Returns:
            The task's classifier, a `keras.Model` whose `predict` returns
            `(n, N)` logits.
        """
        steps = inner_steps_argument(
            kwargs, inner_steps, f"{type(self).__name__}.adapt"
        )
        support_x, support_y, transductive = _checked_support_set(
            self, support_x, support_y, transductive
        )
        ways = _episode_ways(support_y[None], type(self).__name__)
        weights = [v.value.detach() for v in self.learner.trainable_variables]
        state = [v.value.detach() for v in self.learner.non_trainable_variables]
        support = self._embed_tasks(weights, state, support_x[None], transductive)[0]
        inputs = _TaskInputs(weights, state, support_x[None], None, transductive)
        with torch.no_grad():
            return self._classifier(support, support_y, ways, steps, inputs)

    def _classifier(self, support, support_y, ways, steps, inputs):
        """The classifier `adapt` returns, from one embedded support set."""
        raise NotImplementedError

    def _embedding(self, inputs, weights=None):
        """A copy of the learner holding `weights` (default: its own)."""
        values = inputs.weights if weights is None else weights
        return learner_with_weights(
            self.learner, values, inputs.state, inputs.support_x[0]
        )

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes)
        if self.center_loss:
            config.update(center_loss=self.center_loss, center_rate=self.center_rate)
        if self.transductive_eval:
            config["transductive_eval"] = True
        return config


class _TaskInputs:
    """What a few-shot rule may need beyond the embeddings of the sets."""

    def __init__(self, weights, state, support_x, query_x, transductive):
        self.weights = weights
        self.state = state
        self.support_x = support_x
        self.query_x = query_x
        self.transductive = transductive


def _is_episode(data):
    if isinstance(data, (tuple, list)) and data and isinstance(data[0], dict):
        data = data[0]
    return isinstance(data, dict) and "support_x" in data


def _base_classes(labels, classes, rotations):
    """Episode labels `(T, n)` as base-class labels `(T * n,)`."""
    base = torch.gather(classes.long(), 1, labels.long())
    if rotations is not None:
        degrees = torch.gather(rotations.long(), 1, labels.long())
        base = base * _ROTATIONS + degrees // 90
    return base.reshape(-1)


def _source_classes(source):
    """The number of base classes a task source's `classes` can name, or `None`."""
    if isinstance(source, dict):
        if "classes" not in source:
            return None
        rotated = "rotations" in source
        return (int(np.max(source["classes"])) + 1) * (_ROTATIONS if rotated else 1)
    labels = getattr(source, "class_labels", None)
    if labels is None:
        return None
    rotated = len(getattr(source, "rotations", (0,))) > 1
    return len(labels) * (_ROTATIONS if rotated else 1)
