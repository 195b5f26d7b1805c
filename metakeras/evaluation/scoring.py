"""Evaluating models on episodes: `evaluate_episodes`, `compare_models`."""

import keras
import numpy as np

from metakeras._checks import (
    check_flag,
    check_int,
    inner_steps_argument,
    invalid,
    is_int,
)
from metakeras._progress import progress_bar, resolve_verbose
from metakeras.evaluation._metrics import _TASKS, _resolve_metrics
from metakeras.evaluation._scorer import _Scorer
from metakeras.evaluation.episodes import (
    _EPISODE_INFO,
    _check_episodes,
    _iter_batches,
)
from metakeras.evaluation.results import ModelComparison

__all__ = ["compare_models", "evaluate_episodes"]


def evaluate_episodes(
    model,
    tasks,
    episodes="auto",
    inner_steps=None,
    metrics=None,
    task="auto",
    from_logits=None,
    batch_size=32,
    seed=None,
    allow_untrained=False,
    verbose="auto",
    **kwargs,
):
    """Adapts a model to each test episode and scores its query predictions.

    Every episode's support set is used to adapt the model with its own inner
    strategy (`model.adapt_and_predict`, so MAML takes its inner gradient
    steps), and the adapted model's query predictions are scored with
    scikit-learn metrics. Scores are kept per episode: a few-shot result is
    their mean with a 95% confidence interval.

    For a model with an inner loop (`model.inner.steps`, as on `MAML`), the
    same episodes are by default scored before adaptation (`inner_steps=0`) and
    after every step up to the model's own setting, so the gain from
    adaptation shows (`EpisodeResults.adaptation`,
    `metakeras.plots.plot_adaptation_curve`). Each setting adapts from
    scratch, so a curve over `0..S` costs about `S / 2` times a single
    evaluation at `S` steps; pass `inner_steps=S` for the headline number
    alone.
    Models without an inner loop are evaluated once, in their own setting.

    The task type is inferred from the first episodes: integer query labels
    of one value per example with multi-column predictions are
    classification, anything else regression. Classification metrics:
    `"accuracy"`, macro-averaged `"precision"`, `"recall"` and `"f1"`
    (over the classes present in an episode's labels or predictions; an
    undefined precision or recall counts as 0), and `"log_loss"` on the
    predicted class probabilities; the confusion matrix is summed over
    episodes. Regression metrics: `"mse"`, `"mae"` and `"r2"`. `"loss"` is
    the model's compiled task loss on the query set, the number
    `model.evaluate` logs as `loss`.

    Logits or probabilities: `log_loss` needs probabilities, so logits are
    turned into probabilities with a softmax. With `from_logits=None` the
    model's compiled loss decides when it has a `from_logits` setting (e.g.
    `keras.losses.SparseCategoricalCrossentropy(from_logits=True)`);
    otherwise predictions whose rows are all in `[0, 1]` and sum to 1 (within
    `1e-3`) are taken as probabilities and anything else as logits.

    Task sources: a `keras.utils.PyDataset` whose items are episode batches
    (`metakeras.tasks.SinusoidTasks`, a `TaskSampler`), or one episode batch
    (a dict or tuple of arrays in the episode contract). Batches are drawn in
    order until `episodes` tasks are collected; if one pass over a PyDataset
    holds fewer, its `on_epoch_end()` is called to draw the next pass (as
    Keras does between epochs). A batch's optional `"classes"` entry,
    `(T, ways)` integers holding the original class of each remapped label
    (and `"rotations"`, its rotation, from a rotating `TaskSampler`), is
    recorded per episode.

    Args:
        model: a compiled, meta-trained `MetaModel` (or any object with an
            `adapt_and_predict(support_x, support_y, query_x, inner_steps=None,
            batch_size=32)` method returning `(T, N*Q, outputs)` arrays; the
            inner steps are passed as its fourth positional argument).
        tasks: the task source: a `keras.utils.PyDataset` of episode batches,
            or a dict (or tuple) of arrays in the episode contract.
        episodes: number of episodes to score, `None` for every episode of
            one pass over `tasks`, or `"auto"`: 600 (the papers' protocol)
            from a `PyDataset` (all of its distinct episodes, with a
            warning, where it repeats fewer on every pass), every episode
            of a single episode batch.
            Defaults to `"auto"`.
        inner_steps: inner gradient steps, for models with an inner loop:
            an integer, a list of integers, or `None` for `0, 1, ...,
            model.inner.steps`. Must be `None` for models without one.
            Defaults to `None`.
        metrics: metric names (see above) and/or callables
            `fn(y_true, y_pred) -> float`, or a dict mapping names to them.
            Callables receive one episode's query targets and, for
            classification, the predicted labels (for regression, the
            predictions), as 1-D arrays for a single output. Defaults to
            `None` (every built-in metric of the task type).
        task: `"auto"`, `"classification"` or `"regression"`.
            Defaults to `"auto"`.
        from_logits: whether classification predictions are logits (`True`)
            or probabilities (`False`). Defaults to `None` (inferred, see
            above).
        batch_size: tasks adapted together. Defaults to `32`.
        seed: if an integer, the global random state is reset with
            `keras.utils.set_random_seed` before each adaptation (derived from
            `seed`, the source batch and the number of steps), so adaptations
            with randomness (Dropout in the inner loop) repeat exactly and
            are paired across models. Defaults to `None` (not reset).
        allow_untrained: evaluate a model whose optimizer never took a step
            (e.g. a baseline trained by other means). Defaults to `False`.
        verbose: `0` (silent), `1` (a Keras progress bar over the episodes
            with the running mean of the first metric), `2` (one line when
            done) or `"auto"` (1 on an interactive terminal, else 2).
            Defaults to `"auto"`.
        **kwargs: `steps`, the deprecated name of `inner_steps`.

    Returns:
        An `EpisodeResults`.

    Raises:
        ValueError: for an invalid argument (the message names it and lists
            the valid choices), a model that is not compiled or never
            meta-trained, or a task source that cannot provide `episodes`
            distinct episodes.

    Example:

    ```python
    tasks = metakeras.tasks.SinusoidTasks(shots=5, queries=10, seed=1)
    results = evaluate_episodes(model, tasks, episodes=600)
    results.summary          # mean, std, ci95 per metric and inner steps
    results.adaptation()     # the gain from each inner step
    print(results.to_markdown())
    ```
    """
    steps = inner_steps_argument(kwargs, inner_steps, "evaluate_episodes")
    (result,) = _run(
        {None: model},
        tasks,
        episodes=episodes,
        steps={None: steps},
        metrics=metrics,
        task=task,
        from_logits=from_logits,
        batch_size=batch_size,
        seed=seed,
        allow_untrained=allow_untrained,
        strict_steps=True,
        verbose=verbose,
    ).values()
    return result


def compare_models(
    models,
    tasks,
    episodes="auto",
    baseline=None,
    inner_steps=None,
    metrics=None,
    task="auto",
    from_logits=None,
    batch_size=32,
    seed=None,
    allow_untrained=False,
    verbose="auto",
    **kwargs,
):
    """Scores several models on identical episodes and compares them paired.

    Each batch is drawn from `tasks` once and handed to every model, so all
    models see exactly the same support and query sets; with `seed` set,
    the random state of every adaptation is the same for every model too.
    Differences are then computed per episode (`model - baseline`) and
    summarized with their own confidence interval, which is much tighter
    than comparing two separate intervals.

    Args:
        models: a dict mapping names to models, or a list of models (named by
            their `name` attribute, which must then be unique).
        tasks: the task source, as in `evaluate_episodes`.
        episodes: number of episodes, as in `evaluate_episodes`.
            Defaults to `"auto"`.
        baseline: name of the model the others are compared with.
            Defaults to `None` (the first model).
        inner_steps: inner steps as in `evaluate_episodes`, applied to every
            model with an inner loop (models without one use their own
            setting), or a dict mapping model names to their `inner_steps`.
            Each model is
            compared at its headline setting (its own `inner.steps` when
            evaluated, else the largest). Defaults to `None`.
        metrics: as in `evaluate_episodes`. Defaults to `None`.
        task: as in `evaluate_episodes`. Defaults to `"auto"`.
        from_logits: as in `evaluate_episodes`. Defaults to `None`.
        batch_size: tasks adapted together. Defaults to `32`.
        seed: as in `evaluate_episodes`. Defaults to `None`.
        allow_untrained: as in `evaluate_episodes`. Defaults to `False`.
        verbose: as in `evaluate_episodes` (the bar shows each model's first
            metric). Defaults to `"auto"`.
        **kwargs: `steps`, the deprecated name of `inner_steps`.

    Returns:
        A `ModelComparison`.

    Raises:
        ValueError: for an invalid argument, an unknown `baseline` name,
            fewer than two models, or models without a metric in common.

    Example:

    ```python
    comparison = compare_models({"maml": maml, "fomaml": fomaml}, test_tasks)
    comparison.differences   # fomaml - maml per metric, with its 95% CI
    ```
    """
    steps = inner_steps_argument(kwargs, inner_steps, "compare_models")
    named = _named_models(models)
    if baseline is None:
        baseline = next(iter(named))
    if baseline not in named:
        raise ValueError(f"Unknown baseline {baseline!r}. Valid names: {list(named)}.")
    per_model = _steps_per_model(steps, named)
    results = _run(
        named,
        tasks,
        episodes=episodes,
        steps=per_model,
        metrics=metrics,
        task=task,
        from_logits=from_logits,
        batch_size=batch_size,
        seed=seed,
        allow_untrained=allow_untrained,
        strict_steps=isinstance(steps, dict),
        verbose=verbose,
    )
    return ModelComparison(results, baseline=baseline)


def _named_models(models):
    """`compare_models`'s `models` as a dict of at least two named models."""
    if isinstance(models, dict):
        named = dict(models)
    elif isinstance(models, (list, tuple)):
        names = [getattr(m, "name", type(m).__name__) for m in models]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(
                f"`models` holds models with the same name {duplicates}; pass a "
                "dict mapping distinct names to models instead."
            )
        named = dict(zip(names, models))
    else:
        raise ValueError(
            "`models` must be a dict mapping names to models or a list of "
            f"models. Received: {type(models).__name__}."
        )
    if len(named) < 2:
        raise ValueError(
            f"`models` must hold at least two models to compare; received "
            f"{len(named)}: {list(named)}."
        )
    for name in named:
        if not isinstance(name, str) or not name:
            raise ValueError(
                f"Model names in `models` must be non-empty strings; got {name!r}."
            )
    return named


def _steps_per_model(steps, named):
    """`compare_models`'s `steps` as a dict mapping each model to its setting."""
    if isinstance(steps, dict):
        unknown = [n for n in steps if n not in named]
        if unknown:
            raise ValueError(
                f"`inner_steps` names unknown model(s) {unknown}. Valid names: "
                f"{list(named)}."
            )
        return {n: steps.get(n) for n in named}
    return {
        n: steps if getattr(m, "inner", None) is not None else None
        for n, m in named.items()
    }


def _run(
    models,
    tasks,
    episodes,
    steps,
    metrics,
    task,
    from_logits,
    batch_size,
    seed,
    allow_untrained,
    strict_steps,
    verbose,
):
    """Scores `models` (a dict) on the same episodes; their `EpisodeResults`."""
    up_to = isinstance(episodes, str) and episodes == "auto"
    if up_to:
        episodes = 600 if isinstance(tasks, keras.utils.PyDataset) else None
    episodes = _check_episodes(episodes)
    verbose = resolve_verbose(verbose)
    options = _options(metrics, task, from_logits, batch_size, seed)
    scorers = []
    for key, model in models.items():
        name = _model_name(model, key)
        _check_model(model, name, allow_untrained)
        settings, headline = _resolve_steps(steps[key], model, name, strict_steps)
        scorers.append(_Scorer(name, model, settings, headline, options))
    info = _score_batches(scorers, tasks, episodes, verbose, up_to)
    return {key: s.result(info) for key, s in zip(models, scorers)}


def _options(metrics, task, from_logits, batch_size, seed):
    """The scoring options shared by every model, checked."""
    if task not in _TASKS:
        raise ValueError(f"Unknown task {task!r}. Valid choices: {list(_TASKS)}.")
    if from_logits is not None:
        check_flag(
            "from_logits", from_logits, expected="None (inferred), True or False"
        )
    check_int("batch_size", batch_size, echo_name=False)
    check_int("seed", seed, 0, none=True, echo_name=False)
    return {
        "metrics": _resolve_metrics(metrics),
        "task": task,
        "from_logits": from_logits,
        "batch_size": int(batch_size),
        "seed": seed,
    }


def _score_batches(scorers, tasks, episodes, verbose, up_to=False):
    """Hands each batch drawn from `tasks` to every scorer, with a progress bar.

    `up_to`: stop early, with a warning, at the distinct episodes of a
    source that repeats them (`episodes="auto"`).

    Returns the per-episode info (`classes`, `rotations`) the batches carry.
    """
    offset = 0
    info = []
    bar = progress_bar(verbose, episodes, "episode")
    for batch_number, batch in enumerate(_iter_batches(tasks, episodes, up_to)):
        values = []
        for scorer in scorers:
            values += scorer.update(batch, offset, batch_number, len(scorers) > 1)
        info.append(batch.info)
        offset += len(batch)
        if bar is not None:
            # Not finalised here: Keras's Progbar replaces the running means
            # by the values of the update that finalises it.
            bar.update(offset, values=values, finalize=False)
    if bar is not None:
        bar.update(offset, values=[], finalize=True)
    # Recorded only when every batch has it.
    return {
        key: np.concatenate([i[key] for i in info])
        for key in _EPISODE_INFO
        if all(key in i for i in info)
    }


# ------------------------------------------------------------ model checks


def _model_name(model, key):
    if key is not None:
        return key
    return getattr(model, "name", None) or type(model).__name__


def _check_model(model, name, allow_untrained):
    if not callable(getattr(model, "adapt_and_predict", None)):
        raise ValueError(
            f"`model` ({name!r}) must be a metakeras MetaModel, or an object with "
            "an `adapt_and_predict(support_x, support_y, query_x, inner_steps=None, "
            f"batch_size=32)` method. Received: {type(model).__name__}."
        )
    if isinstance(model, keras.Model) and not model.compiled:
        raise ValueError(
            f"`model` ({name!r}) is not compiled, so it has no task loss to "
            "adapt with: call model.compile(optimizer, loss=...) and meta-train "
            "it with model.fit(...) before evaluating it."
        )
    check_flag("allow_untrained", allow_untrained)
    optimizer = getattr(model, "optimizer", None)
    iterations = getattr(optimizer, "iterations", None)
    if (
        not allow_untrained
        and iterations is not None
        and int(keras.ops.convert_to_numpy(iterations)) == 0
    ):
        raise ValueError(
            f"`model` ({name!r}) was never meta-trained: its optimizer has taken "
            "no step, so its weights are the initial ones. Train it with "
            "model.fit(tasks) (or load a trained model) first, or pass "
            "allow_untrained=True to evaluate it anyway (e.g. as a baseline)."
        )


def _resolve_steps(steps, model, name, strict):
    inner = getattr(model, "inner", None)
    own = getattr(inner, "steps", None) if inner is not None else None
    if own is None:
        if steps is not None and strict:
            raise ValueError(
                f"`inner_steps` applies to models with an inner loop (`model."
                f"inner.steps`); {name!r} has none, so pass inner_steps=None. "
                f"Received: inner_steps={steps!r}."
            )
        return [None], None
    if steps is None:
        return list(range(own + 1)), own
    values = list(steps) if isinstance(steps, (list, tuple, range)) else [steps]
    if not values:
        raise ValueError(
            "`inner_steps` must be None, a non-negative integer or a non-empty "
            f"list of them. Received: inner_steps={steps!r}"
        )
    if not all(is_int(value, 0) for value in values):
        raise invalid(
            "inner_steps", "None, a non-negative integer or a list of them", steps
        )
    values = sorted({int(v) for v in values})
    return values, own if own in values else values[-1]
