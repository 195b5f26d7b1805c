"""Implicit MAML: meta-learning with implicit gradients (Rajeswaran et al., 2019)."""

import keras
import torch

from metakeras import _keras_compat
from metakeras._checks import check_int, check_number, invalid, is_number
from metakeras.models._adaptation import merge_tasks, reduce_over_tasks
from metakeras.models._trainer import episodic_train_step
from metakeras.models.maml import MAML

__all__ = ["IMAML"]

# MAML options iMAML has no use for: its meta-gradient is implicit, not a
# derivative through the inner steps.
_REFUSED = {
    "adapt_layers": "every weight adapts (the implicit gradient is taken "
    "with respect to all of them)",
    "per_step_bn_statistics": "the inner problem is solved, not unrolled",
    "per_step_learning_rates": "no gradient reaches the inner rates",
    "multi_step_loss_epochs": "only the solution of the inner problem is scored",
    "first_order_epochs": "the meta-gradient is neither first nor second order",
}


@keras.saving.register_keras_serializable(package="metakeras")
class IMAML(MAML):
    """Implicit MAML: the meta-gradient of a solved inner problem.

    iMAML (Rajeswaran, Finn, Kakade and Levine, NeurIPS 2019) adapts to a
    task by minimising the support loss plus a proximal term that keeps the
    adapted weights `phi` near the initialisation `theta`,
    `L_support(phi) + proximal_lambda / 2 * ||phi - theta||^2`, and takes
    the meta-gradient from the optimality condition of that problem instead
    of differentiating through the inner steps:
    `(I + H / proximal_lambda) g = grad L_query(phi)`, with `H` the Hessian
    of the support loss at `phi`, solved by `cg_steps` steps of conjugate
    gradient on Hessian-vector products. The Hessian of a network's loss is
    indefinite, and where an eigenvalue falls near or below
    `-proximal_lambda` that system is ill-posed: its solution blows up
    along those directions. So, as in the authors' code, the Hessian is
    damped (Tikhonov, `H + cg_damping * I`), which keeps the system positive
    definite for eigenvalues above `-(proximal_lambda + cg_damping)` and
    turns the meta-gradient towards the query gradient (first-order) as
    `cg_damping` grows; `cg_damping=0` solves the exact system. The inner
    steps run without a graph, so memory does not grow with `inner_steps`
    (second-order MAML's does), and the inner loop may take many steps or
    any inner optimizer.

    Training runs the tasks of a meta-batch one after another (one support
    graph at a time for the Hessian-vector products); evaluation and
    `adapt` solve the same proximal inner problem, batched over tasks with
    `vectorize_tasks` like MAML.

    Args:
        learner: the `keras.Model` whose initialisation is meta-learned.
        inner_steps: steps of the inner optimizer on the proximal problem.
            Defaults to `None` (`10`).
        inner_learning_rate: their step size. Defaults to `None` (`0.01`).
        proximal_lambda: `lambda`, the strength of the proximal term: larger
            keeps the adapted weights closer to the initialisation (and
            makes the linear system better conditioned). Defaults to `1.0`.
        cg_steps: conjugate-gradient steps per task, each one
            Hessian-vector product. Defaults to `5` (the paper's).
        cg_damping: `delta`, added to the Hessian's diagonal in the linear
            system, `(I + (H + delta I) / proximal_lambda) g = grad`. `0`
            is the undamped system. Defaults to `20.0` (about the authors'
            code at `proximal_lambda=2`; on Omniglot the undamped system
            made the meta-training diverge after some 20 meta-batches).
        **kwargs: the other `MAML` arguments that apply (`inner`,
            `inner_batch_size`, `inner_optimizer`, `inner_clipnorm`,
            `transductive_eval`, `vectorize_tasks`, `name`, ...).
            `first_order` is ignored (the inner steps are always taken
            without a graph); `adapt_layers`, `per_step_bn_statistics` and
            the MAML++ options are refused.

    Raises:
        ValueError: for an invalid `proximal_lambda`, `cg_steps` or
            `cg_damping`, or a MAML option iMAML does not take.

    Example:

    ```python
    model = metakeras.IMAML(learner, inner_steps=20, proximal_lambda=2.0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    model.fit(metakeras.tasks.SinusoidTasks(shots=10), epochs=5)
    adapted = model.adapt(support_x, support_y)
    ```
    """

    _inner_defaults = {"steps": 10, "first_order": True}

    def __init__(
        self,
        learner,
        inner_steps=None,
        inner_learning_rate=None,
        proximal_lambda=1.0,
        cg_steps=5,
        cg_damping=20.0,
        **kwargs,
    ):
        refused = [
            f"{name}={kwargs[name]!r} ({why})"
            for name, why in _REFUSED.items()
            if kwargs.get(name) not in (None, False)
        ]
        if refused:
            raise ValueError(f"IMAML does not take {'; '.join(refused)}.")
        check_number(
            "proximal_lambda",
            proximal_lambda,
            expected="a positive finite number",
            types=(int, float),
        )
        check_int("cg_steps", cg_steps, 1, types=int)
        if not is_number(cg_damping, minimum=0, types=(int, float)):
            raise invalid("cg_damping", "a finite number >= 0", cg_damping)
        kwargs.pop("first_order", None)
        inner = kwargs.pop("inner", None)
        if inner is not None and not inner.first_order:
            inner = type(inner).from_config({**inner.get_config(), "first_order": True})
        super().__init__(
            learner,
            inner_steps=inner_steps,
            inner_learning_rate=inner_learning_rate,
            inner=inner,
            **kwargs,
        )
        self.proximal_lambda = float(proximal_lambda)
        self.cg_steps = cg_steps
        self.cg_damping = float(cg_damping)

    def _adapt_weights(
        self, weights, state, support_x, support_y, context, loss_fn=None
    ):
        """Solves the proximal inner problem from `weights`, without a graph."""
        anchor = [w.detach() for w in weights]
        support = self._support_loss(state, support_x, support_y)
        half_lambda = self.proximal_lambda / 2

        def proximal(fast, index=None):
            distance = sum(torch.sum(torch.square(f - a)) for f, a in zip(fast, anchor))
            return support(fast, index) + half_lambda * distance

        return self.inner.run(
            proximal,
            anchor,
            steps=context["steps"],
            batches=context["batches"],
            constraints=self._constraints(),
            monitor=context.get("monitor"),
            first_order=True,
        )

    @episodic_train_step
    def train_step(self, support_x, support_y, query_x, query_y):
        # IMAML adds no weights of its own: the meta-parameters are the
        # learner's initialisation.
        variables = self.learner.trainable_variables
        weights = [v.value for v in variables]
        state = [v.value.detach() for v in self._state_variables()]
        context = self._episode_context(support_x, support_y, None)
        plain = self._loss_is_plain()
        num_tasks = support_x.shape[0]
        gradients = [torch.zeros_like(w) for w in weights]
        predictions, states, losses = [], [], []
        for i in range(num_tasks):
            fast = self._adapt_weights(
                weights, state, support_x[i], support_y[i], context
            )
            fast = [f.detach().requires_grad_() for f in fast]
            with torch.enable_grad():
                task_pred, task_state = self._forward(
                    fast, state, query_x[i], training=True
                )
                loss = self._query_loss(query_y[i], task_pred, plain)
                # The query gradient at the adapted weights, and any direct
                # term of the initialisation (the learner's regularizers).
                found = torch.autograd.grad(
                    self.optimizer.scale_loss(loss) / num_tasks,
                    fast + weights,
                    allow_unused=True,
                    materialize_grads=True,
                )
            implicit = _implicit_gradient(
                self._support_loss(state, support_x[i], support_y[i]),
                fast,
                list(found[: len(fast)]),
                self.proximal_lambda,
                self.cg_steps,
                self.cg_damping,
            )
            torch._foreach_add_(gradients, implicit)
            torch._foreach_add_(gradients, list(found[len(fast) :]))
            losses.append(loss.detach())
            predictions.append(task_pred.detach())
            states.append([value.detach() for value in task_state])
        _keras_compat.loss_tracker(self).update_state(
            torch.stack(losses).mean(), sample_weight=num_tasks * query_y.shape[1]
        )
        new_state = [reduce_over_tasks(torch.stack(values)) for values in zip(*states)]
        gradients = self._with_loss_check(gradients)
        with torch.no_grad():
            self._apply_meta_update(gradients, variables, new_state)
        return self.compute_metrics(None, merge_tasks(query_y), torch.cat(predictions))

    def _graph_signature(self):
        return (
            *super()._graph_signature(),
            self.proximal_lambda,
            self.cg_steps,
            self.cg_damping,
        )

    def get_config(self):
        config = super().get_config()
        config.pop("first_order")
        config.update(
            proximal_lambda=self.proximal_lambda,
            cg_steps=self.cg_steps,
            cg_damping=self.cg_damping,
        )
        return config


def _implicit_gradient(
    support_loss, fast, query_gradients, proximal_lambda, cg_steps, cg_damping=0.0
):
    """Solves `(I + (H + cg_damping I) / proximal_lambda) g = query_gradients` by CG.

    `H` is the Hessian of `support_loss` at `fast`, applied as
    Hessian-vector products (double backward through one support graph,
    kept for all `cg_steps` products).

    Args:
        support_loss: `support_loss(weights)`, the task's support loss.
        fast: the adapted weights, tensors without a graph.
        query_gradients: the query loss's gradients at `fast`.
        proximal_lambda: the proximal strength `lambda`.
        cg_steps: conjugate-gradient steps.
        cg_damping: the Tikhonov damping added to the Hessian's diagonal.
            Defaults to `0.0` (the exact system).

    Returns:
        The list of tensors `g`, the meta-gradient of the initialisation.
    """
    with torch.enable_grad():
        at = [w.detach().requires_grad_() for w in fast]
        grads = torch.autograd.grad(support_loss(at), at, create_graph=True)
    identity = 1 + cg_damping / proximal_lambda

    def system(vector):
        with torch.enable_grad():
            hessian_vector = torch.autograd.grad(
                grads,
                at,
                grad_outputs=vector,
                retain_graph=True,
                allow_unused=True,
                materialize_grads=True,
            )
        return [
            identity * v + h.detach() / proximal_lambda
            for v, h in zip(vector, hessian_vector)
        ]

    return _conjugate_gradient(system, [g.detach() for g in query_gradients], cg_steps)


def _conjugate_gradient(matvec, b, steps):
    """`steps` conjugate-gradient steps on `A x = b`, `A` symmetric positive definite.

    `x` and `b` are lists of tensors (one per weight); `matvec(x)` returns
    `A x` in the same form. No value is read on the host (a converged or
    broken-down step takes a zero step instead of dividing by zero), so the
    solve can be recorded in a CUDA graph.

    Args:
        matvec: the function `x -> A x`.
        b: the right-hand side, a list of tensors.
        steps: the number of steps; in exact arithmetic `n` steps solve an
            `n`-dimensional system.

    Returns:
        The approximate solution `x`, a list of tensors shaped like `b`.
    """
    x = [torch.zeros_like(t) for t in b]
    r = list(b)
    p = list(b)
    rs = _dot(r, r)
    for _ in range(steps):
        ap = matvec(p)
        alpha = _safe_divide(rs, _dot(p, ap))
        x = [xi + alpha * pi for xi, pi in zip(x, p)]
        r = [ri - alpha * api for ri, api in zip(r, ap)]
        rs_next = _dot(r, r)
        beta = _safe_divide(rs_next, rs)
        p = [ri + beta * pi for ri, pi in zip(r, p)]
        rs = rs_next
    return x


def _dot(a, b):
    return sum(torch.sum(x * y) for x, y in zip(a, b))


def _safe_divide(numerator, denominator):
    """`numerator / denominator`, 0 where the denominator is not positive."""
    positive = denominator > 0
    return torch.where(
        positive, numerator / torch.where(positive, denominator, 1.0), 0.0
    )
