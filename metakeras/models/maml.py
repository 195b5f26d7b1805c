"""MAML: Model-Agnostic Meta-Learning (Finn et al., 2017)."""

import keras
import torch

from metakeras import _keras_compat
from metakeras._checks import check_flag, check_int, inner_steps_argument
from metakeras.inner import resolve_inner
from metakeras.models._adaptation import select_examples
from metakeras.models._annealing import multi_step_loss_weights
from metakeras.models._cloning import learner_with_weights
from metakeras.models.meta_model import MetaModel


@keras.saving.register_keras_serializable(package="metakeras")
class MAML(MetaModel):
    """Model-Agnostic Meta-Learning.

    MAML learns an initialisation of the learner's weights from which a few
    gradient steps on a new task's support set give a good model for that
    task. Each training step adapts the weights to every task of the
    meta-batch with the inner loop (`model.inner`, an `InnerLoop`), scores
    the adapted weights on the task's query set, and updates the
    initialisation with the compiled optimizer using the gradient of the mean
    query loss *through* the inner loop (second order), or treating the inner
    gradients as constants (`first_order=True`, "FOMAML").

    The same `InnerLoop` runs in training, `adapt`, `evaluate` and
    `adapt_and_predict`, so they cannot disagree. Its options: steps,
    learning rate, first order, full-batch gradient descent
    (`inner_batch_size=None`) or mini-batch SGD over the support set, and
    which layers adapt (`adapt_layers`; ANIL adapts only the head).

    BatchNormalization and Dropout: inner-loop steps run the learner in
    training mode, so BatchNormalization normalises with the statistics of
    the task's support set (per task, also under `vectorize_tasks`) and
    Dropout is active. During meta-training the query pass also uses the
    query set's batch statistics (the transductive setting of the MAML
    paper) and the moving statistics are updated with their mean over the
    tasks of the meta-batch (warmed up, as `MetaModel` says). At evaluation
    (`evaluate`, `adapt_and_predict` and the model returned by `adapt`)
    queries are predicted in inference mode (moving statistics, no Dropout)
    unless `transductive_eval=True`, which keeps batch statistics of the
    query set there too, as the MAML reference code does.

    Per-step statistics (`per_step_bn_statistics=True`, MAML++'s "BNRS",
    Antoniou et al., 2019): instead of one pair of moving statistics per
    BatchNormalization layer, the model keeps `inner_steps + 1`, one for the
    weights after each number of inner steps (`model.step_statistics`). In
    training, inner step `s` updates slot `s` with the support set's batch
    statistics and the query pass updates slot `inner_steps`; the learner's
    own moving statistics follow the query pass as without the option. At
    evaluation, in inference mode, the queries after `S` adaptation steps are
    normalised with slot `min(S, inner_steps)`, also in the model `adapt`
    returns. The inner steps themselves always normalise with the support
    set's batch statistics.

    MAML++ (Antoniou, Edwards and Storkey, 2019, "How to train your MAML"):
    learned per-layer per-step learning rates (`per_step_learning_rates`),
    the multi-step loss (`multi_step_loss_epochs`), derivative-order
    annealing (`first_order_epochs`) and per-step statistics are options of
    this class; `metakeras.models.MAMLPlusPlus` switches on the paper's set.
    The annealing schedules count the epochs of `fit` (also from
    `initial_epoch` and after a `BackupAndRestore` resumption).

    Args:
        learner: the `keras.Model` whose initialisation is meta-learned.
        inner_steps: inner gradient steps per task. `0` trains the
            initialisation on the query sets without adapting to the
            support sets (joint training, a baseline); `adapt(...,
            inner_steps=...)` and `evaluate_episodes(..., inner_steps=...)`
            still adapt it. Defaults to `None` (`1`).
        inner_learning_rate: step size of the inner loop. Defaults to `None`
            (`0.01`, the MAML paper's sinusoid value; its Omniglot value,
            `0.4`, is the classification default of `metakeras.models.get`).
        first_order: use first-order MAML. Defaults to `None` (`False`).
        inner_batch_size: support examples per inner step; `None` for full
            batch. Defaults to `None`.
        adapt_layers: names of the learner's layers whose weights adapt in
            the inner loop; `None` adapts all. Defaults to `None`.
        transductive_eval: predict queries with batch statistics at
            evaluation. Defaults to `False`.
        vectorize_tasks: batch the tasks of a meta-batch with
            `torch.func.vmap` (`True`), run them one by one (`False`), or
            choose by device and learner (`"auto"`, see `MetaModel`).
            Defaults to `"auto"`.
        inner_clipnorm: clip each weight's inner gradient to this L2 norm at
            every inner step (`InnerLoop(clipnorm=...)`), in training,
            `adapt` and evaluation alike. Defaults to `None` (no clipping).
        inner_global_clipnorm: clip the joint L2 norm of all inner gradients
            instead (`InnerLoop(global_clipnorm=...)`). Defaults to `None`.
        per_step_bn_statistics: keep BatchNormalization moving statistics
            per inner step (MAML++); needs a learner with BatchNormalization
            layers. Defaults to `False`.
        inner: the whole inner loop as a `metakeras.InnerLoop`, instead of
            the shorthand arguments above (`inner_steps`,
            `inner_learning_rate`, `first_order`, `inner_batch_size`,
            `inner_shuffle`, `inner_clipnorm`, `inner_global_clipnorm`,
            `inner_optimizer`, one per `InnerLoop` argument). A shorthand
            given beside it must agree with it, else a `ValueError` names
            both. The model keeps it as `model.inner`. Defaults to `None`.
        inner_shuffle: with `inner_batch_size`, draw the inner mini-batches
            from a fresh permutation of the support set
            (`InnerLoop(shuffle=...)`). Defaults to `None` (`True`).
        inner_optimizer: the inner update rule (`InnerLoop(optimizer=...)`):
            a `keras.optimizers.SGD` (momentum, Nesterov), `Adam` or
            `RMSprop`, or its name, differentiated through like plain
            gradient descent. Defaults to `None` (plain gradient descent).
        per_step_learning_rates: learn one inner learning rate per learner
            weight (kernel, bias, ...) and inner step, MAML++'s "LSLR": the
            rates start at `inner_learning_rate`, are trainable weights of
            the model (`model.step_rates`, each of shape `(inner_steps,)`),
            receive meta-gradients and are saved with it; steps beyond
            `inner_steps` in `adapt` use the last step's rates. Defaults to
            `False`.
        multi_step_loss_epochs: if set, the training loss is MAML++'s
            multi-step loss: a weighted sum of the query losses after every
            inner step, the weights moving towards the last step over this
            many epochs (`metakeras.models.multi_step_loss_weights`), then
            the last step's loss alone. Evaluation always scores the last
            step. Defaults to `None` (the last step's loss only).
        first_order_epochs: if set (with `first_order=False`), MAML++'s
            derivative-order annealing: the meta-gradient is first order
            during this many epochs of `fit`, then second order. Defaults to
            `None` (the order `first_order` says, throughout).
        **kwargs: passed to `keras.Model`.

    Example:

    ```python
    import metakeras, keras
    learner = keras.Sequential([
        keras.Input((1,)),
        keras.layers.Dense(40, activation="relu"),
        keras.layers.Dense(40, activation="relu"),
        keras.layers.Dense(1),
    ])
    model = metakeras.MAML(learner, inner_steps=1, inner_learning_rate=0.01)
    # the same: metakeras.MAML(learner, inner=metakeras.InnerLoop(1, 0.01))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    model.fit(metakeras.tasks.SinusoidTasks(shots=10, seed=0), epochs=2)
    adapted = model.adapt(support_x, support_y, inner_steps=10)
    adapted.predict(x_new)
    ```
    """

    # `InnerLoop` arguments of the shorthands not given (and no `inner`).
    _inner_defaults = {}

    def __init__(
        self,
        learner,
        inner_steps=None,
        inner_learning_rate=None,
        first_order=None,
        inner_batch_size=None,
        adapt_layers=None,
        transductive_eval=False,
        vectorize_tasks="auto",
        inner_clipnorm=None,
        inner_global_clipnorm=None,
        per_step_bn_statistics=False,
        inner=None,
        inner_shuffle=None,
        inner_optimizer=None,
        per_step_learning_rates=False,
        multi_step_loss_epochs=None,
        first_order_epochs=None,
        **kwargs,
    ):
        super().__init__(learner, vectorize_tasks=vectorize_tasks, **kwargs)
        self.inner = resolve_inner(
            inner,
            defaults=self._inner_defaults,
            inner_steps=inner_steps,
            inner_learning_rate=inner_learning_rate,
            first_order=first_order,
            inner_batch_size=inner_batch_size,
            inner_shuffle=inner_shuffle,
            inner_clipnorm=inner_clipnorm,
            inner_global_clipnorm=inner_global_clipnorm,
            inner_optimizer=inner_optimizer,
        )
        if adapt_layers is not None:
            if isinstance(adapt_layers, str) or not all(
                isinstance(name, str) for name in adapt_layers
            ):
                raise ValueError(
                    "`adapt_layers` must be None or a list of layer names. "
                    f"Received: {adapt_layers!r}"
                )
            adapt_layers = list(adapt_layers)
            if not adapt_layers:
                raise ValueError("`adapt_layers` must name at least one layer.")
        check_flag("transductive_eval", transductive_eval, echo_name=False)
        check_flag("per_step_bn_statistics", per_step_bn_statistics, echo_name=False)
        check_flag("per_step_learning_rates", per_step_learning_rates, echo_name=False)
        for name, value in (
            ("multi_step_loss_epochs", multi_step_loss_epochs),
            ("first_order_epochs", first_order_epochs),
        ):
            check_int(
                name,
                value,
                0,
                none=True,
                expected="None (off) or an integer >= 0",
                types=int,
            )
        self.adapt_layers = adapt_layers
        self.transductive_eval = transductive_eval
        self.per_step_bn_statistics = per_step_bn_statistics
        self.per_step_learning_rates = per_step_learning_rates
        self.multi_step_loss_epochs = multi_step_loss_epochs
        self.first_order_epochs = first_order_epochs
        self.step_statistics = []
        self.step_rates = []
        self._step_slots = None
        self._mask = None
        if per_step_bn_statistics and self.learner.built:
            self._create_step_statistics()
        if per_step_learning_rates and self.learner.built:
            self._create_step_rates()

    @property
    def inner_steps(self):
        """Inner gradient steps per task (`model.inner.steps`)."""
        return self.inner.steps

    @property
    def inner_learning_rate(self):
        """Step size of the inner loop (`model.inner.learning_rate`)."""
        return self.inner.learning_rate

    @property
    def first_order(self):
        """Whether the meta-gradient is first order (`model.inner.first_order`)."""
        return self.inner.first_order

    # --------------------------------------------------- per-step statistics

    def _create_step_statistics(self):
        """Creates one `(inner_steps + 1, ...)` variable per BN moving statistic."""
        if self.step_statistics:
            return
        batch_norm = {
            id(v)
            for layer in _keras_compat.flatten_layers(self.learner)
            if isinstance(layer, keras.layers.BatchNormalization)
            for v in layer.non_trainable_variables
        }
        slots = [
            i
            for i, v in enumerate(self.learner.non_trainable_variables)
            if id(v) in batch_norm
        ]
        if not slots:
            raise ValueError(
                "`per_step_bn_statistics=True` needs a learner with "
                "BatchNormalization layers; the learner "
                f"{self.learner.name!r} has none."
            )
        state = self.learner.non_trainable_variables
        self._step_slots = slots
        self.step_statistics = [
            self.add_weight(
                shape=(self.inner.steps + 1, *state[i].shape),
                # Every slot starts from the learner's current statistics.
                initializer=lambda shape, dtype, v=state[i]: keras.ops.stack(
                    [keras.ops.cast(v, dtype)] * shape[0]
                ),
                trainable=False,
                name=f"step_{state[i].path.replace('/', '_')}",
            )
            for i in slots
        ]

    def _build_learner(self, support_x):
        super()._build_learner(support_x)
        if self.per_step_bn_statistics:
            self._create_step_statistics()
        if self.per_step_learning_rates:
            self._create_step_rates()

    # ------------------------------------------------------------ MAML++

    def _create_step_rates(self):
        """One learned rate per learner weight and inner step (LSLR)."""
        if self.step_rates or not self.learner.trainable_variables:
            return
        self.step_rates = [
            self.add_weight(
                shape=(max(self.inner.steps, 1),),
                initializer=keras.initializers.Constant(self.inner.learning_rate),
                name=f"step_rate_{variable.path.replace('/', '_')}",
            )
            for variable in self.learner.trainable_variables
        ]

    def _first_order_now(self):
        """Whether this epoch's meta-gradient is first order (annealing)."""
        if self.inner.first_order or self.first_order_epochs is None:
            return self.inner.first_order
        return self._epoch < self.first_order_epochs

    def _step_loss_weights(self, steps):
        """This epoch's multi-step loss weights, or `None` without the loss."""
        if self.multi_step_loss_epochs is None or not steps:
            return None
        return multi_step_loss_weights(steps, self._epoch, self.multi_step_loss_epochs)

    def _training_loss(self, y, outputs, plain):
        if not isinstance(outputs, (tuple, list)):
            return super()._training_loss(y, outputs, plain)
        # The query predictions after every inner step (multi-step loss).
        weights = self._step_loss_weights(len(outputs))
        loss = sum(
            weight * self._query_loss(y, predictions, plain)
            for weight, predictions in zip(weights, outputs)
            if weight
        )
        return loss, outputs[-1]

    def _graph_signature(self):
        # The epoch's schedules change what a recorded step computes.
        steps = self.inner.steps
        weights = self._step_loss_weights(steps)
        return (
            *super()._graph_signature(),
            self._first_order_now(),
            None if weights is None else tuple(weights),
        )

    def _state_variables(self):
        return super()._state_variables() + list(self.step_statistics)

    def _state_momenta(self, state):
        momenta = super()._state_momenta(state)
        if not self.step_statistics:
            return momenta
        # Each per-step stack averages the statistic in its learner slot.
        count = len(momenta) - len(self.step_statistics)
        return (*momenta[:count], *(momenta[i] for i in self._step_slots))

    def _split_state(self, state):
        """`state` -> (the learner's state, the per-step stacks)."""
        if not self.step_statistics:
            return state, []
        count = len(state) - len(self.step_statistics)
        return list(state[:count]), list(state[count:])

    def _state_at(self, learner_state, stacks, step):
        """The learner's state with the statistics of `step` inner steps."""
        if not stacks:
            return learner_state
        state = list(learner_state)
        for i, stacked in zip(self._step_slots, stacks):
            state[i] = stacked[min(step, stacked.shape[0] - 1)]
        return state

    def _support_loss(self, state, x, y):
        learner_state, stacks = self._split_state(state)
        return super()._support_loss(self._state_at(learner_state, stacks, 0), x, y)

    def _support_loss_per_step(self, learner_state, stacks, x, y):
        """`loss(weights, index, step) -> (loss, new learner state)`."""

        def loss(weights, index=None, step=0):
            x_, y_ = select_examples(x, y, index)
            state = self._state_at(learner_state, stacks, step)
            predictions, new_state = self._forward(weights, state, x_, training=True)
            return self._task_loss(y_, predictions), [
                new_state[i].detach() for i in self._step_slots
            ]

        return loss

    # ------------------------------------------------------------ inner loop

    def _inner_learning_rates(self):
        """Per-weight inner learning rates, or None for the scalar rate.

        With `per_step_learning_rates`, a function of the inner step: steps
        beyond `inner_steps` (in `adapt`) keep the last step's rates.
        """
        if not self.step_rates:
            return None
        rates = [rate.value for rate in self.step_rates]
        last = rates[0].shape[0] - 1
        return lambda step: [rate[min(step, last)] for rate in rates]

    def _adapt_mask(self):
        """Which of the learner's trainable weights adapt (ANIL: the head)."""
        if self.adapt_layers is None:
            return None
        if self._mask is None:
            names = [layer.name for layer in self.learner.layers]
            unknown = [n for n in self.adapt_layers if n not in names]
            if unknown:
                raise ValueError(
                    f"`adapt_layers` names unknown layer(s) {unknown}; the "
                    f"learner's layers are {names}."
                )
            chosen = {
                id(v)
                for name in self.adapt_layers
                for v in self.learner.get_layer(name).trainable_variables
            }
            mask = [id(v) in chosen for v in self.learner.trainable_variables]
            if not any(mask):
                raise ValueError(
                    f"`adapt_layers`={self.adapt_layers} holds no trainable weights."
                )
            self._mask = mask
        return self._mask

    def _adapt_weights(
        self, weights, state, support_x, support_y, context, loss_fn=None
    ):
        """Runs the inner loop; with `loss_fn`, that loss and its auxiliary values."""
        return self.inner.run(
            loss_fn or self._support_loss(state, support_x, support_y),
            weights,
            steps=context["steps"],
            batches=context["batches"],
            adapt_mask=self._adapt_mask(),
            learning_rates=self._inner_learning_rates(),
            constraints=self._constraints(),
            monitor=context.get("monitor"),
            has_aux=loss_fn is not None,
            first_order=context.get("first_order"),
        )

    def _constraints(self):
        """The learner variables' Keras constraints, applied to fast weights too."""
        constraints = [v.constraint for v in self.learner.trainable_variables]
        return constraints if any(c is not None for c in constraints) else None

    def _episode_context(self, support_x, support_y, steps):
        return {
            "steps": steps,
            "batches": self.inner.batches(
                support_x.shape[1], steps, device=support_x.device
            ),
            "first_order": self._first_order_now(),
            "loss_weights": self._step_loss_weights(
                self.inner.steps if steps is None else steps
            ),
        }

    def _task_forward(
        self, weights, state, support_x, support_y, query_x, training, context
    ):
        query_training = training or self.transductive_eval
        learner_state, stacks = self._split_state(state)
        steps = self.inner.steps if context["steps"] is None else context["steps"]
        trajectory = None
        if training and context.get("loss_weights") is not None:
            # Multi-step loss: keep the fast weights of every inner step.
            trajectory = []
            context = dict(
                context, monitor=_keeping(trajectory, context.get("monitor"))
            )
        if not stacks:
            fast = self._adapt_weights(weights, state, support_x, support_y, context)
            predictions, new_state = self._forward(
                fast, learner_state, query_x, training=query_training
            )
        else:
            per_step = self._support_loss_per_step(
                learner_state, stacks, support_x, support_y
            )
            fast, support_stats = self._adapt_weights(
                weights, state, support_x, support_y, context, loss_fn=per_step
            )
            predictions, new_state = self._forward(
                fast,
                self._state_at(learner_state, stacks, steps),
                query_x,
                training=query_training,
            )
            # Slot s: the statistics after s inner steps (the query pass's last).
            per_slot = support_stats + [[new_state[i] for i in self._step_slots]]
            new_stacks = []
            for j, stacked in enumerate(stacks):
                rows = [
                    per_slot[s][j] if s < len(per_slot) else stacked[s]
                    for s in range(stacked.shape[0])
                ]
                new_stacks.append(torch.stack(rows))
            new_state = new_state + new_stacks
        if trajectory is None:
            return predictions, new_state
        earlier = [
            self._forward(
                step_weights,
                self._state_at(learner_state, stacks, step + 1),
                query_x,
                training=query_training,
            )[0]
            for step, step_weights in enumerate(trajectory[:-1])
        ]
        return (*earlier, predictions), new_state

    # ------------------------------------------------------------ adaptation

    def adapt(self, support_x, support_y, inner_steps=None, **kwargs):
        """Fine-tunes a copy of the learner on one task's support set.

        Args:
            support_x: the task's labelled inputs, `(examples, *features)`.
            support_y: their targets, `(examples, *targets)`; integer class
                labels for classification.
            inner_steps: inner gradient steps. Defaults to `None` (the
                model's `inner_steps`).
            **kwargs: `steps`, the deprecated name of `inner_steps`.

        Returns:
            A new `keras.Model` (a copy of the learner) holding the adapted
            weights. The meta-learned weights are not changed.

        Example:

        ```python
        adapted = model.adapt(support_x, support_y, inner_steps=5)
        y_pred = adapted.predict(query_x)
        ```
        """
        steps = inner_steps_argument(
            kwargs, inner_steps, f"{type(self).__name__}.adapt"
        )
        _check_steps(steps)
        support_x, support_y = self._check_single_task(support_x, support_y)
        if self._task_loss is None:
            raise RuntimeError(
                "The model must be compiled before `adapt`: call "
                "model.compile(optimizer, loss) first (it sets the task loss)."
            )
        weights = [v.value.detach() for v in self.learner.trainable_variables]
        state = [v.value.detach() for v in self._state_variables()]
        context = self._episode_context(support_x[None], support_y[None], steps)
        with torch.no_grad():
            fast = self._adapt_weights(weights, state, support_x, support_y, context)
        fast = [w.detach() for w in fast]
        steps = self.inner.steps if steps is None else steps
        self._check_adapted(fast, steps)
        learner_state, stacks = self._split_state(state)
        learner_state = self._state_at(learner_state, stacks, steps)
        return learner_with_weights(self.learner, fast, learner_state, support_x)

    def _check_adapted(self, fast, steps):
        """Raises if adaptation made a weight non-finite (a diverged inner loop)."""
        for variable, value in zip(self.learner.trainable_variables, fast):
            if not bool(torch.isfinite(value).all()):
                raise ValueError(
                    f"Adaptation diverged: the adapted weight {variable.path!r} is "
                    f"non-finite after {steps} inner step(s) at "
                    f"inner_learning_rate={self.inner.learning_rate}. Lower the "
                    "inner learning rate or steps, or clip the inner gradients "
                    "(`inner_clipnorm`); check the support set for extreme values."
                )

    def adapt_and_predict(
        self, support_x, support_y, query_x, inner_steps=None, batch_size=32, **kwargs
    ):
        steps = inner_steps_argument(
            kwargs, inner_steps, f"{type(self).__name__}.adapt_and_predict"
        )
        _check_steps(steps)
        return super().adapt_and_predict(
            support_x, support_y, query_x, inner_steps=steps, batch_size=batch_size
        )

    adapt_and_predict.__doc__ = MetaModel.adapt_and_predict.__doc__

    def get_config(self):
        config = super().get_config()
        config.update(
            inner_steps=self.inner.steps,
            inner_learning_rate=self.inner.learning_rate,
            first_order=self.inner.first_order,
            inner_batch_size=self.inner.batch_size,
            adapt_layers=self.adapt_layers,
            transductive_eval=self.transductive_eval,
        )
        if self.per_step_bn_statistics:
            config["per_step_bn_statistics"] = True
        if not self.inner.shuffle:
            config["inner_shuffle"] = False
        if self.inner.clipnorm is not None:
            config["inner_clipnorm"] = self.inner.clipnorm
        if self.inner.global_clipnorm is not None:
            config["inner_global_clipnorm"] = self.inner.global_clipnorm
        if self.inner.optimizer is not None:
            config["inner_optimizer"] = self.inner.get_config()["optimizer"]
        if self.per_step_learning_rates:
            config["per_step_learning_rates"] = True
        for name in ("multi_step_loss_epochs", "first_order_epochs"):
            if getattr(self, name) is not None:
                config[name] = getattr(self, name)
        return config


def _check_steps(steps):
    check_int("inner_steps", steps, 0, none=True, types=int)


def _keeping(trajectory, monitor):
    """An inner-loop monitor that keeps each step's fast weights."""

    def keep(step, loss, gradients, fast):
        trajectory.append(fast)
        if monitor is not None:
            monitor(step, loss, gradients, fast)

    return keep
