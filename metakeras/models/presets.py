"""Training recipes that reproduce the README's Omniglot results in one call.

A preset bundles what a good result needs beyond the algorithm: the
learner, the optimizer and its schedule, the shape of the training episodes
and the callbacks. `benchmarks/omniglot.py` trains with these presets, so
the README's table is what they give.

- `"protonet-omniglot"`: ProtoNet on conv4, trained on 60-way 1-shot
  2-query episodes (more classes per episode than at test time, as Snell et
  al. found best), Adam 1e-3 halved every 1,000 meta-batches.
- `"matchingnet-omniglot"`, `"r2d2-omniglot"`, `"relationnet-omniglot"`:
  the other metric learners on ProtoNet's episodes and schedule.
- `"maml-omniglot"`: second-order MAML on conv4, one inner step at 0.4 on
  16 tasks of 5-way 1-shot 15-query, with the zeroing trick
  (`metakeras.callbacks.ZeroHead`), so the head of a trained model can be
  widened to any number of classes (`Preset.for_ways`).
- `"fomaml-omniglot"`, `"metasgd-omniglot"`, `"anil-omniglot"`: first-order
  MAML, Meta-SGD (per-weight rates starting at 0.4) and ANIL with MAML's
  settings.
- `"reptile-omniglot"`: Reptile (Nichol et al., 2018) with the paper's
  Omniglot settings where metakeras has them: 5-way 10-shot training tasks
  (5 queries, only logged), five inner steps of Adam at 1e-3 in batches of
  10, meta-batch 5, the outer Adam at 1e-3 on the pseudo-gradient, and
  the zeroing trick so the head widens to any number of classes.
- `"mamlpp-omniglot"`: MAML++ (`MAMLPlusPlus`, Antoniou et al., 2019) on the
  same episodes: five inner steps with learned per-step rates from 0.1,
  per-step BatchNormalization statistics, the multi-step loss over the first
  10 epochs and first-order gradients for the first 5 (epochs of 100
  meta-batches here, against the paper's 500), Adam 1e-3 cosine-annealed to
  1e-5 over 10,000 meta-batches, the zeroing trick.
- `"imaml-omniglot"`: implicit MAML (`IMAML`, Rajeswaran et al., 2019) on the
  same episodes: ten inner steps at 0.1 on the proximal problem with
  `proximal_lambda=2`, five conjugate-gradient steps, the zeroing trick.

- `"baseline-omniglot"`, `"baselinepp-omniglot"`, `"simpleshot-omniglot"`:
  Baseline, Baseline++ and SimpleShot pretrained as classifiers of all
  3,856 rotated background classes on batches of 128 examples (64 classes,
  2 examples each: `TaskSampler` batches, whose `classes` name the base
  classes), the rate halved every 2,000 batches (Baseline++: constant,
  which its 15-minute runs favoured). SimpleShot and Baseline++
  train conv4 without its final ReLU (`final_relu=False`) with SGD
  (Nesterov momentum 0.9, weight decay 1e-4: SimpleShot's) at 0.05,
  Baseline the standard conv4 with Adam 1e-3. SimpleShot adds a center
  loss of weight 0.003 (`SimpleShot(center_loss=0.003)`), Baseline++ one
  of weight 10 on its unit-length embeddings.

All train on rotated copies of the background alphabets (x4 classes) and
evaluate with `transductive_eval=True`, as the papers do.

Example:

```python
preset = metakeras.models.presets.get("protonet-omniglot")
(x_train, y_train), (x_test, y_test), _ = metakeras.datasets.omniglot.load_data()
model = preset.model()
model.fit(preset.train_tasks(x_train, y_train), epochs=10,
          callbacks=preset.callbacks())
```
"""

import dataclasses

import keras

from metakeras._checks import check_choice
from metakeras.models import registry
from metakeras.models.baseline import BaselinePlusPlus
from metakeras.models.conv4 import conv4
from metakeras.models.simpleshot import SimpleShot
from metakeras.tasks.task_sampler import TaskSampler

__all__ = ["Preset", "available", "get"]

ROTATIONS = (0, 90, 180, 270)
# The MAML family's training episodes: 16 tasks of 5-way 1-shot 15-query.
MAML_EPISODES = dict(
    ways=5, shots=1, queries=15, meta_batch_size=16, rotations=ROTATIONS
)
# The algorithms that pretrain on all base classes, and their batches: one
# episode of 64 classes with 2 examples each, read as 128 labelled examples.
_PRETRAINED = [name for name in registry.available() if registry.get(name).pretrains]
# The episodic metric learners, trained on ProtoNet's episodes.
_METRIC = [
    name
    for name in registry.available("classification")
    if not (registry.get(name).inner_loop or registry.get(name).pretrains)
]
_METRIC_EPISODES = dict(
    ways=60, shots=1, queries=2, meta_batch_size=1, rotations=ROTATIONS
)
_OPTIMIZERS = ("adam", "sgd")
# SimpleShot's optimizer on conv4 without its last ReLU trained better
# SimpleShot and Baseline++ embeddings in 15 minutes; Baseline's per-task
# linear head did worse on them, so it keeps Adam 1e-3 (benchmarks/README.md).
_SGD_PRETRAINING = (SimpleShot, BaselinePlusPlus)


# Weights of the center loss in pretraining (Wen et al., 2016): it drew the
# base classes' embeddings together and raised the 20-way 1-shot accuracy at
# 15 minutes of SimpleShot from 92.5% to 94.2% and of Baseline++ (on its
# unit-length embeddings, whose squared distances are at most 4) from 90.4%
# to 93.5% (benchmarks/README.md).
_CENTER_LOSS = {SimpleShot: 0.003, BaselinePlusPlus: 10.0}
# Baseline++ keeps its rate constant: halving it every 1,000, 2,000 or 3,000
# batches, or a cosine decay, ended 15 minutes of training lower on 20-way
# 1-shot tasks (the tenth study of benchmarks/README.md).
_CONSTANT_RATE = (BaselinePlusPlus,)


def _pretraining_recipe(algorithm):
    """Preset fields of a pretrained baseline's recipe beyond Adam 1e-3."""
    cls = registry.get(algorithm).cls
    recipe = dict(halve_every=None if cls in _CONSTANT_RATE else 2000)
    if cls not in _SGD_PRETRAINING:
        return recipe
    recipe.update(learning_rate=0.05, learner=dict(final_relu=False), optimizer="sgd")
    if cls in _CENTER_LOSS:
        recipe["inner"] = dict(center_loss=_CENTER_LOSS[cls])
    return recipe


_PRETRAINING_BATCHES = dict(
    ways=64, shots=1, queries=1, meta_batch_size=1, rotations=ROTATIONS
)


@dataclasses.dataclass(frozen=True)
class Preset:
    """A named training recipe: model, optimizer, training episodes, callbacks.

    Args:
        name: the preset's name.
        algorithm: the `metakeras.models.registry` name of its algorithm.
        episodes: `TaskSampler` arguments of the training episodes (`ways`,
            `shots`, `queries`, `meta_batch_size`, `rotations`).
        learning_rate: the optimizer's learning rate at the start. Defaults
            to `1e-3`.
        halve_every: meta-batches between halvings of the learning rate, or
            `None` for a constant rate. Defaults to `None`.
        cosine_decay_steps: if set instead, the learning rate follows a
            cosine from `learning_rate` down to 1% of it over this many
            meta-batches (`keras.optimizers.schedules.CosineDecay`, MAML++'s
            annealing). Defaults to `None`.
        steps_per_epoch: meta-batches per epoch of `train_tasks`; schedules
            over epochs (MAML++'s) count these epochs. Defaults to `1000`.
        inner: settings of the algorithm, keyword arguments of its model
            (`inner_steps`, `inner_learning_rate`, ...; `center_loss` for the
            pretrained baselines). Defaults to `{}` (the registry's
            defaults).
        zero_head: whether training keeps the head at zero (`ZeroHead`).
            Defaults to `False`.
        learner: keyword arguments of the `conv4` learner (`filters`,
            `final_relu`, ...). Defaults to `{}`.
        optimizer: `"adam"`, or `"sgd"` (momentum 0.9, Nesterov, weight
            decay 1e-4: SimpleShot's). Defaults to `"adam"`.
        ema_momentum: if set, the optimizer keeps an exponential moving
            average of the weights with this momentum (Keras's `use_ema`)
            and training ends with the averaged weights. Defaults to `None`.

    Example:

    ```python
    import dataclasses

    preset = metakeras.models.presets.get("maml-omniglot")
    faster = dataclasses.replace(preset, inner={"inner_steps": 1,
                                                 "inner_learning_rate": 0.4,
                                                 "first_order": True})
    model = faster.model(ways=5)
    ```
    """

    name: str
    algorithm: str
    episodes: dict
    learning_rate: float = 1e-3
    halve_every: int = None
    inner: dict = dataclasses.field(default_factory=dict)
    zero_head: bool = False
    cosine_decay_steps: int = None
    steps_per_epoch: int = 1000
    learner: dict = dataclasses.field(default_factory=dict)
    optimizer: str = "adam"
    ema_momentum: float = None

    def __post_init__(self):
        check_choice("optimizer", self.optimizer, _OPTIMIZERS)

    def model(self, ways=None, input_shape=(1, 28, 28)):
        """Builds and compiles the preset's model.

        Args:
            ways: classes per test episode, for models with a head
                (MAML). Defaults to `None` (the training episodes' `ways`).
            input_shape: channels-first image shape. Defaults to
                `(1, 28, 28)` (Omniglot as `load_data` returns it, with the
                channel axis added).

        Returns:
            A compiled `MetaModel`.
        """
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        algorithm = registry.get(self.algorithm)
        outputs = (ways or self.episodes["ways"]) if algorithm.head else None
        model = algorithm.create(
            self._learner(input_shape, outputs),
            "classification",
            transductive_eval=True,
            **self.inner,
        )
        rate = self.learning_rate
        if self.halve_every is not None:
            rate = keras.optimizers.schedules.ExponentialDecay(
                rate, decay_steps=self.halve_every, decay_rate=0.5, staircase=True
            )
        elif self.cosine_decay_steps is not None:
            rate = keras.optimizers.schedules.CosineDecay(
                rate, decay_steps=self.cosine_decay_steps, alpha=0.01
            )
        averaging = {}
        if self.ema_momentum is not None:
            averaging = dict(use_ema=True, ema_momentum=self.ema_momentum)
        if self.optimizer == "sgd":
            optimizer = keras.optimizers.SGD(
                rate, momentum=0.9, nesterov=True, weight_decay=1e-4, **averaging
            )
        else:
            optimizer = keras.optimizers.Adam(rate, **averaging)
        model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])
        return model

    def _learner(self, input_shape, outputs):
        """The preset's conv4 learner for `input_shape` and `outputs` classes."""
        return conv4(input_shape=input_shape, outputs=outputs, **self.learner)

    def train_tasks(self, x, y, steps=None, seed=0):
        """The preset's training episodes from `x`, `y`.

        Args:
            x: images `(n, height, width)` or `(n, 1, height, width)`.
            y: integer class labels `(n,)`.
            steps: meta-batches per epoch. Defaults to `None` (the preset's
                `steps_per_epoch`).
            seed: the sampler's seed. Defaults to `0`.

        Returns:
            A `metakeras.tasks.TaskSampler`.
        """
        steps = self.steps_per_epoch if steps is None else steps
        return TaskSampler(x, y, steps=steps, seed=seed, **self.episodes)

    def callbacks(self):
        """The callbacks training needs (`ZeroHead` for the zeroing trick).

        Returns:
            A list of `keras.callbacks.Callback`s.
        """
        return registry.get(self.algorithm).callbacks(zero_head=self.zero_head)

    def for_ways(self, model, ways):
        """The trained model, ready for episodes of `ways` classes.

        A ProtoNet handles any number of classes as it is. A MAML model
        trained with the zeroing trick has a zero head, so a zero head of
        another width gives the same model for `ways`-way tasks; its
        optimizer state is not carried over (evaluate it with
        `evaluate_episodes(..., allow_untrained=True)`).

        Args:
            model: a model built by `model()` and trained.
            ways: classes per episode.

        Returns:
            `model` itself, or a copy with a zero head of `ways` outputs.

        Raises:
            ValueError: for a head trained without the zeroing trick and a
                different `ways`.
        """
        head = registry.get(self.algorithm).head
        heads = model.learner.output_shape[-1] if head else None
        if heads is None or heads == ways:
            return model
        if not self.zero_head:
            raise ValueError(
                f"A head trained for {heads} classes cannot score {ways}; only "
                "presets with the zeroing trick can widen their head."
            )
        learner = self._learner(model.learner.input_shape[1:], ways)
        for source, target in zip(model.learner.layers[:-1], learner.layers[:-1]):
            target.set_weights(source.get_weights())
        for variable in learner.layers[-1].weights:
            variable.assign(keras.ops.zeros(variable.shape, variable.dtype))
        config = model.get_config()
        for key in ("learner", "name"):
            config.pop(key)
        wide = type(model)(learner, **config)
        # Learned per-step rates and per-step statistics (MAML++) do not
        # depend on the head's width: carry them over. Meta-SGD's per-weight
        # rates of the head do; every output column plays every class in
        # training, so each new column gets their mean over the old ones.
        for name in ("step_rates", "step_statistics", "inner_rates"):
            for source, target in zip(
                getattr(model, name, []), getattr(wide, name, [])
            ):
                target.assign(_widened(source, target.shape))
        wide.compile(loss=model.loss, metrics=["accuracy"])
        return wide


def _widened(value, shape):
    if tuple(value.shape) == tuple(shape):
        return value
    mean = keras.ops.mean(value, axis=-1, keepdims=True)
    return keras.ops.broadcast_to(mean, shape)


_PRESETS = {
    preset.name: preset
    for preset in (
        *(
            Preset(
                name=f"{algorithm}-omniglot",
                algorithm=algorithm,
                episodes=_METRIC_EPISODES,
                halve_every=1000,
            )
            for algorithm in _METRIC
        ),
        Preset(
            name="reptile-omniglot",
            algorithm="reptile",
            episodes=dict(
                ways=5, shots=10, queries=5, meta_batch_size=5, rotations=ROTATIONS
            ),
            inner=dict(
                inner_steps=5,
                inner_learning_rate=1e-3,
                inner_optimizer="adam",
                inner_batch_size=10,
            ),
            zero_head=True,
        ),
        Preset(
            name="mamlpp-omniglot",
            algorithm="mamlpp",
            episodes=MAML_EPISODES,
            inner=dict(
                inner_steps=5,
                inner_learning_rate=0.1,
                multi_step_loss_epochs=10,
                first_order_epochs=5,
            ),
            zero_head=True,
            cosine_decay_steps=10_000,
            steps_per_epoch=100,
        ),
        Preset(
            name="imaml-omniglot",
            algorithm="imaml",
            episodes=MAML_EPISODES,
            inner=dict(
                inner_steps=10,
                inner_learning_rate=0.1,
                proximal_lambda=2.0,
                cg_steps=5,
            ),
            zero_head=True,
        ),
        *(
            Preset(
                name=f"{algorithm}-omniglot",
                algorithm=algorithm,
                episodes=_PRETRAINING_BATCHES,
                **_pretraining_recipe(algorithm),
            )
            for algorithm in _PRETRAINED
        ),
    )
}
# The other gradient-based algorithms (MAML and the variants that differ
# from it only in what they adapt): MAML's episodes and settings.
_PRESETS.update(
    {
        f"{algorithm}-omniglot": Preset(
            name=f"{algorithm}-omniglot",
            algorithm=algorithm,
            episodes=MAML_EPISODES,
            inner=dict(inner_steps=1, inner_learning_rate=0.4),
            zero_head=True,
        )
        for algorithm in registry.available("classification")
        if registry.get(algorithm).inner_loop
        and f"{algorithm}-omniglot" not in _PRESETS
    }
)


def available():
    """The preset names.

    Returns:
        A tuple of names for `get`.

    Example:

    >>> available()[:2]
    ('protonet-omniglot', 'matchingnet-omniglot')
    """
    return tuple(_PRESETS)


def get(name):
    """The preset of a name.

    Args:
        name: one of `available()`.

    Returns:
        A `Preset`.

    Raises:
        ValueError: for an unknown name (the message lists the valid ones).

    Example:

    >>> get("maml-omniglot").inner["inner_learning_rate"]
    0.4
    """
    if name not in _PRESETS:
        raise ValueError(f"Unknown preset {name!r}. Valid choices: {list(_PRESETS)}.")
    return _PRESETS[name]
