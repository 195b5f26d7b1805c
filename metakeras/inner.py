"""The inner loop: how a learner adapts its weights to one task's support set."""

import re

import keras
import torch

from metakeras import _inner_rules
from metakeras._checks import check_flag, check_int, check_number
from metakeras.layers.batch_normalization import _first_derivatives_only

# The keyword arguments of the MAML family (and of the scikit-learn
# estimators and the command line, through `metakeras.models.registry`) that
# stand for an `InnerLoop` argument: `MAML(learner, inner_steps=5)` is
# `MAML(learner, inner=InnerLoop(steps=5))`. An option added to `InnerLoop`
# gets its shorthand here.
SHORTHANDS = {
    "inner_steps": "steps",
    "inner_learning_rate": "learning_rate",
    "first_order": "first_order",
    "inner_batch_size": "batch_size",
    "inner_shuffle": "shuffle",
    "inner_clipnorm": "clipnorm",
    "inner_global_clipnorm": "global_clipnorm",
    "inner_optimizer": "optimizer",
}


@keras.saving.register_keras_serializable(package="metakeras")
class InnerLoop:
    """Gradient-descent adaptation on a task's support set.

    The inner loop is a pure function of `(weights, support data)` that returns
    new "fast" weights, so it composes with `torch.func.vmap` (batching over
    the tasks of a meta-batch) and with second-order differentiation (the
    outer update differentiates through it). Training, `adapt` and evaluation
    all run the same `InnerLoop`, so they cannot disagree.

    Each step is `w <- w - lr * grad(support_loss)(w)`, on the whole support
    set (full-batch gradient descent, `batch_size=None`) or on the next
    mini-batch of a permutation of it (mini-batch SGD). Weights can be frozen
    (ANIL adapts only the head) and learning rates can be tensors with one
    rate per weight element (Meta-SGD learns them) or per weight and step
    (MAML++'s learned per-layer per-step rates).

    With `optimizer`, each step is instead the update of a Keras optimizer:
    `keras.optimizers.SGD` (momentum, Nesterov), `Adam` or `RMSprop`, their
    hyperparameters read from the object. The optimizer object itself is
    never stepped: its update is recomputed as a pure function of tensors,
    with its slots (momenta, second moments) starting at zero for every
    task and carried from step to step, so second-order MAML differentiates
    through the whole update, as in torchopt and higher.

    Args:
        steps: number of gradient steps. `0` means no adaptation.
            Defaults to `1`.
        learning_rate: step size of each inner step. Defaults to `None`:
            the `optimizer`'s learning rate, or `0.01` without one. A
            different value beside an optimizer object is an error; an
            optimizer given by name takes this rate.
        first_order: if `True`, the outer gradient treats the inner gradients
            as constants (first-order MAML): cheaper, and no second
            derivatives. Defaults to `False` (full second-order MAML).
        batch_size: support examples per step; `None` uses the whole support
            set every step. Defaults to `None`.
        shuffle: with `batch_size`, draw the mini-batches from a fresh random
            permutation of the support set (cycling through it); otherwise
            take them in order. Defaults to `True`.
        clipnorm: if set, each weight's inner gradient is rescaled at every
            step so that its L2 norm is at most `clipnorm`, as Keras
            optimizers' `clipnorm`. The clipping is part of the
            differentiated computation (second order sees it). Defaults to
            `None`.
        global_clipnorm: if set, the inner gradients of all adapted weights
            are rescaled together so that their joint L2 norm is at most
            `global_clipnorm`, as Keras optimizers' `global_clipnorm`. Only
            one of `clipnorm` and `global_clipnorm` can be set. Defaults to
            `None`.
        optimizer: the update rule: `None` (plain gradient descent), a
            `keras.optimizers.SGD`, `Adam` or `RMSprop` instance, or one of
            their names `"sgd"`, `"adam"`, `"rmsprop"` (Keras's defaults at
            `learning_rate`). Learning-rate schedules, `amsgrad`,
            `centered`, `weight_decay`, EMA and the optimizer's own clipping
            are refused (clip with `clipnorm` here). Defaults to `None`.

    Raises:
        ValueError: for an invalid argument, an unsupported optimizer or
            option, or a `learning_rate` that disagrees with the optimizer's.

    Example:

    >>> inner = InnerLoop(steps=5, learning_rate=0.01, batch_size=10)
    >>> inner.get_config()["steps"]
    5
    >>> adam = InnerLoop(steps=5, optimizer=keras.optimizers.Adam(0.001))
    >>> adam.learning_rate
    0.001
    """

    def __init__(
        self,
        steps=1,
        learning_rate=None,
        first_order=False,
        batch_size=None,
        shuffle=True,
        clipnorm=None,
        global_clipnorm=None,
        optimizer=None,
    ):
        check_int("steps", steps, 0, types=int)
        check_number(
            "learning_rate",
            learning_rate,
            positive=False,
            finite=False,
            none=True,
            expected="a number",
            types=(int, float),
        )
        check_number(
            "learning_rate",
            learning_rate,
            none=True,
            expected="a positive finite number",
            types=(int, float),
        )
        check_flag("first_order", first_order, echo_name=False)
        check_int(
            "batch_size",
            batch_size,
            none=True,
            expected="None (full batch) or a positive integer",
            types=int,
        )
        check_flag("shuffle", shuffle, echo_name=False)
        for name, value in (
            ("clipnorm", clipnorm),
            ("global_clipnorm", global_clipnorm),
        ):
            check_number(
                name,
                value,
                none=True,
                expected="None or a positive finite number",
                types=(int, float),
            )
        if clipnorm is not None and global_clipnorm is not None:
            raise ValueError(
                "Only one of `clipnorm` and `global_clipnorm` can be set. "
                f"Received: clipnorm={clipnorm!r}, global_clipnorm={global_clipnorm!r}"
            )
        keras_optimizer = _inner_rules.as_optimizer(optimizer)
        self._keras_optimizer = keras_optimizer
        self._rule = (
            _inner_rules.SGDRule()
            if keras_optimizer is None
            else _inner_rules.update_rule(keras_optimizer)
        )
        learning_rate = _resolve_learning_rate(
            learning_rate, keras_optimizer, optimizer
        )
        self.steps = steps
        self.learning_rate = learning_rate
        self.optimizer = optimizer
        self.first_order = first_order
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.clipnorm = None if clipnorm is None else float(clipnorm)
        self.global_clipnorm = (
            None if global_clipnorm is None else float(global_clipnorm)
        )

    def run(
        self,
        loss_fn,
        weights,
        steps=None,
        batches=None,
        adapt_mask=None,
        learning_rates=None,
        constraints=None,
        monitor=None,
        has_aux=False,
        first_order=None,
    ):
        """Adapts `weights` by gradient descent on `loss_fn`.

        Args:
            loss_fn: a function `loss_fn(weights, index)` returning the
                support loss of one task as a scalar tensor, on all support
                examples when `index` is `None`, else on the examples at the
                positions in the 1-D tensor `index`. It must be pure (no side
                effects), so it can run under `torch.func` transforms.
            weights: list of tensors, the starting (meta-learned) weights.
            steps: overrides `self.steps` for this call. Defaults to `None`.
            batches: the mini-batch index of each step, from `batches()`;
                `None` uses the whole support set. Defaults to `None`.
            adapt_mask: list of booleans, one per weight; weights marked
                `False` keep their starting value. Defaults to `None` (all
                weights adapt).
            learning_rates: used instead of `learning_rate`: a list of
                tensors, one per weight, broadcastable to it (Meta-SGD), or
                a function `learning_rates(step)` returning such a list for
                inner step `step` (learned per-step rates). Defaults to
                `None`.
            constraints: list of `None` or callables, one per weight,
                applied to the weight after every inner step, as Keras
                applies a variable's `constraint` after every optimizer step
                (pruning masks use this, so a pruned weight stays zero after
                adaptation). Defaults to `None`.
            monitor: `None` or a function `monitor(step, loss, gradients,
                weights)` called after every step with the step index, the
                support loss at the step's starting weights, the (clipped)
                gradients of the adapted weights and the new fast weights
                (all of them, adapted or not).
                `MetaModel` uses it to say where a non-finite value arose
                (reading values synchronises with the device) and MAML++'s
                multi-step loss to keep each step's fast weights. Defaults
                to `None`.
            has_aux: if `True`, `loss_fn` is called as
                `loss_fn(weights, index, step)` and returns `(loss, aux)`;
                the auxiliary values of every step are returned too (MAML's
                per-step BatchNormalization statistics). Defaults to `False`.
            first_order: overrides `self.first_order` for this call (MAML++'s
                derivative-order annealing). Defaults to `None`.

        Returns:
            The list of adapted weights. When differentiating through the
            result, second-order terms are included unless `first_order`.
            With `has_aux`, `(weights, auxes)` where `auxes` holds the `aux`
            of each step in order.
        """
        steps = self.steps if steps is None else steps
        first_order = self.first_order if first_order is None else first_order
        if adapt_mask is None:
            adapt_mask = [True] * len(weights)
        adapted = [i for i, flag in enumerate(adapt_mask) if flag]
        if learning_rates is None:
            learning_rates = [self.learning_rate] * len(weights)
        rates_of = learning_rates if callable(learning_rates) else None
        slots = {i: self._rule.slots(weights[i]) for i in adapted}
        fast = list(weights)
        auxes = []
        for step in range(steps):
            index = None if batches is None else batches[step]

            def adapted_loss(subset, fast=fast, index=index, step=step):
                full = list(fast)
                for i, w in zip(adapted, subset):
                    full[i] = w
                if has_aux:
                    return loss_fn(full, index, step)
                return loss_fn(full, index)

            at = [fast[i] for i in adapted]
            grads, loss, aux = self._gradients(adapted_loss, at, has_aux, first_order)
            if has_aux:
                auxes.append(aux)
            rates = learning_rates if rates_of is None else rates_of(step)
            fast = list(fast)
            for i, w, g in zip(adapted, at, grads):
                fast[i], slots[i] = self._rule.update(w, g, slots[i], rates[i], step)
                if constraints is not None and constraints[i] is not None:
                    fast[i] = constraints[i](fast[i])
            if monitor is not None:
                monitor(step, loss, grads, fast)
        return (fast, auxes) if has_aux else fast

    def _gradients(self, loss_fn, at, has_aux, first_order):
        """`(clipped grads, loss, aux)` of `loss_fn` at the weights `at`."""
        if torch._C._functorch.maybe_current_level() is None:
            # Outside vmap, plain autograd is the same math as torch.func.grad
            # with less per-op dispatch. First order: the gradients are taken
            # at detached copies, so they are constants of the outer graph.
            grads, loss, aux = _autograd_step(
                loss_fn, at, create_graph=not first_order, has_aux=has_aux
            )
        elif first_order:
            with _first_derivatives_only():
                grads, loss = torch.func.grad_and_value(loss_fn, has_aux=has_aux)(
                    [w.detach() for w in at]
                )
            loss, aux = loss if has_aux else (loss, None)
        else:
            grads, loss = torch.func.grad_and_value(loss_fn, has_aux=has_aux)(at)
            loss, aux = loss if has_aux else (loss, None)
        return self._clip(grads), loss, aux

    def _clip(self, grads):
        """Clips the inner gradients by norm, as Keras optimizers do."""
        if self.clipnorm is not None:
            return [g * (self.clipnorm / _safe_norm(g, self.clipnorm)) for g in grads]
        if self.global_clipnorm is not None:
            total = sum(torch.sum(torch.square(g)) for g in grads)
            scale = self.global_clipnorm / _safe_sqrt(total, self.global_clipnorm)
            return [g * scale for g in grads]
        return grads

    def batches(self, num_examples, steps=None, device=None):
        """Support indices of each step's mini-batch, or `None` for full batch.

        Each mini-batch lies within one pass over the support set; a new pass
        starts (with a new permutation when `shuffle`) when the current one
        has no full batch left. With `batch_size >= num_examples` every step
        sees the whole support set.

        Args:
            num_examples: number of support examples.
            steps: number of steps. Defaults to `None` (`self.steps`).
            device: where the indices live: the support set's device, so
                that selecting a mini-batch stays on it (permutations are
                drawn from that device's random generator). Defaults to
                `None` (the CPU).

        Returns:
            A list of `steps` 1-D int64 tensors, or `None` without
            `batch_size`.
        """
        steps = self.steps if steps is None else steps
        if self.batch_size is None or steps == 0:
            return None
        size = min(self.batch_size, num_examples)
        per_pass = num_examples // size
        passes = -(-steps // per_pass)
        if self.shuffle:
            orders = [
                torch.randperm(num_examples, device=device) for _ in range(passes)
            ]
        else:
            orders = [torch.arange(num_examples, device=device)] * passes
        return [
            orders[s // per_pass][(s % per_pass) * size : (s % per_pass + 1) * size]
            for s in range(steps)
        ]

    def get_config(self):
        return {
            "steps": self.steps,
            "learning_rate": self.learning_rate,
            "first_order": self.first_order,
            "batch_size": self.batch_size,
            "shuffle": self.shuffle,
            "clipnorm": self.clipnorm,
            "global_clipnorm": self.global_clipnorm,
            "optimizer": (
                self.optimizer
                if self.optimizer is None or isinstance(self.optimizer, str)
                else keras.saving.serialize_keras_object(self._keras_optimizer)
            ),
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        config = self.get_config()
        if isinstance(config["optimizer"], dict):
            config["optimizer"] = _inner_rules.describe(self._rule)
        args = ", ".join(f"{k}={v!r}" for k, v in config.items())
        return f"InnerLoop({args})"


def _resolve_learning_rate(learning_rate, keras_optimizer, optimizer):
    """The inner step size from `learning_rate` and the optimizer given."""
    if keras_optimizer is None or isinstance(optimizer, str):
        return 0.01 if learning_rate is None else float(learning_rate)
    own = _inner_rules.learning_rate_of(keras_optimizer)
    if learning_rate is not None and abs(float(learning_rate) - own) > 1e-7 * own:
        raise ValueError(
            f"Received learning_rate={learning_rate!r} and an optimizer whose "
            f"learning_rate is {own!r}, which disagree. Set the inner step "
            "size in one place: the optimizer's `learning_rate`, or "
            "`learning_rate` with the optimizer given by name "
            "(optimizer='adam')."
        )
    return own


def resolve_inner(inner=None, defaults=None, **shorthand):
    """The `InnerLoop` that `inner` or the shorthand keyword arguments describe.

    The MAML family takes its inner loop either whole (`inner=InnerLoop(...)`)
    or as shorthand keyword arguments (`inner_steps`, `inner_learning_rate`,
    ... see `SHORTHANDS`); a shorthand left at `None` is not given.

    Args:
        inner: `None` or an `InnerLoop`, returned as is (after the check
            below). Defaults to `None`.
        defaults: dict of `InnerLoop` arguments used for the shorthands not
            given when `inner` is `None` (e.g. Reptile's `{"steps": 5}`).
            Defaults to `None` (`InnerLoop`'s own defaults).
        **shorthand: shorthand keyword arguments, names from `SHORTHANDS`.

    Returns:
        An `InnerLoop`.

    Raises:
        ValueError: if `inner` is not an `InnerLoop`, a shorthand is unknown,
            or a shorthand given beside `inner` disagrees with it (the error
            names both).

    Example:

    >>> resolve_inner(inner_steps=3).steps
    3
    >>> resolve_inner(InnerLoop(steps=3), inner_steps=3).steps
    3
    """
    unknown = sorted(set(shorthand) - set(SHORTHANDS))
    if unknown:
        raise ValueError(
            f"Unknown inner-loop argument(s) {unknown}; valid: {list(SHORTHANDS)}."
        )
    given = {SHORTHANDS[k]: v for k, v in shorthand.items() if v is not None}
    if inner is None:
        try:
            return InnerLoop(**{**(defaults or {}), **given})
        except ValueError as error:
            names = [k for k, v in shorthand.items() if v is not None]
            raise ValueError(_in_shorthand(str(error), names)) from None
    if not isinstance(inner, InnerLoop):
        raise ValueError(
            f"`inner` must be None or a metakeras.InnerLoop. Received: inner={inner!r}"
        )
    conflicts = [
        f"{name}={shorthand[name]!r}"
        for name, argument in SHORTHANDS.items()
        if shorthand.get(name) is not None
        and shorthand[name] != getattr(inner, argument)
    ]
    if conflicts:
        raise ValueError(
            f"Received both inner={inner!r} and {', '.join(conflicts)}, which "
            "disagree. Set each inner-loop option in one place: either in "
            "`inner=InnerLoop(...)` or with the shorthand arguments."
        )
    return inner


def _in_shorthand(message, names):
    """An `InnerLoop` error in the argument names the caller wrote."""
    for name in names:
        argument = SHORTHANDS[name]
        message = re.sub(rf"(?<![\w`])`{argument}`", f"`{name}`", message)
        message = re.sub(rf"(?<!\w){argument}=", f"{name}=", message)
    return message


def _autograd_step(loss_fn, at, create_graph, has_aux):
    """`torch.func.grad_and_value` with `torch.autograd.grad`, outside vmap.

    Returns:
        `(grads, loss, aux)`; `aux` is `None` without `has_aux`.
    """
    with torch.enable_grad():
        leaves = [
            w if w.requires_grad and create_graph else w.detach().requires_grad_()
            for w in at
        ]
        out = loss_fn(leaves)
        loss, aux = out if has_aux else (out, None)
        grads = torch.autograd.grad(
            loss,
            leaves,
            create_graph=create_graph,
            allow_unused=True,
            materialize_grads=True,
        )
    return list(grads), loss.detach(), aux


def _safe_norm(tensor, floor):
    """`max(||tensor||, floor)`, twice differentiable also at zero."""
    return _safe_sqrt(torch.sum(torch.square(tensor)), floor)


def _safe_sqrt(square_sum, floor):
    # sqrt's derivative is infinite at 0; as in Keras's `clip_by_norm`, take
    # the root of a safe value where the sum is zero (the result is `floor`).
    positive = square_sum > 0
    safe = torch.where(positive, square_sum, torch.ones_like(square_sum))
    norm = torch.where(positive, torch.sqrt(safe), square_sum)
    return torch.clamp(norm, min=floor)
