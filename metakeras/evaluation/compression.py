"""Size and few-shot quality of models before and after compression."""

import os
import tempfile

import keras
import numpy as np
import pandas as pd

from metakeras._checks import inner_steps_argument
from metakeras._io import atomic_path, deflate_archive
from metakeras.evaluation.scoring import compare_models

__all__ = ["compression_report"]


def compression_report(
    models,
    tasks,
    episodes=100,
    baseline=None,
    inner_steps=None,
    metric=None,
    batch_size=32,
    seed=0,
    directory=None,
    **kwargs,
):
    """Compares models' size and post-adaptation quality on the same episodes.

    For each model: the number of weight values of its learner (pruning masks
    are bookkeeping and not counted; quantization scales are), how many are
    non-zero, the size in bytes of its saved `.keras` file (as `model.save`
    writes it, optimizer state included; compressed when the model has
    pruning masks, as `MetaModel.save` writes it) and of its learner's file
    alone (the network a device stores, compressed likewise), and its
    few-shot
    score after adaptation on identical evaluation episodes
    (`metakeras.evaluation.compare_models`, so the differences to the
    baseline are paired, with their own 95% confidence interval).

    Args:
        models: a dict mapping names to models (e.g. `{"float": model,
            "pruned": pruned, "int8": quantized}`), at least two.
        tasks: the evaluation task source, as in `compare_models`.
        episodes: number of evaluation episodes. Defaults to `100`.
        baseline: name of the reference model. Defaults to `None` (the
            first).
        inner_steps: inner steps for models with an inner loop; `None`
            uses each model's own setting. Defaults to `None`.
        metric: the score reported, e.g. `"accuracy"` or `"mse"`; `None`
            picks `"accuracy"` for classification and `"mse"` for
            regression. Defaults to `None`.
        batch_size: tasks adapted together. Defaults to `32`.
        seed: seed of the adaptations' random state, as in
            `compare_models`. Defaults to `0`.
        directory: where the `.keras` files are written (kept); `None`
            uses a temporary directory. Defaults to `None`.
        **kwargs: `steps`, the deprecated name of `inner_steps`.

    Returns:
        A `pandas.DataFrame` with one row per model: `model`, `parameters`,
        `nonzero`, `sparsity`, `file_bytes`, `learner_bytes`, `metric`,
        `mean`, `ci95`,
        `difference` (paired, model minus baseline; 0 for the baseline) and
        `difference_ci95`.

    Raises:
        ValueError: for invalid arguments, as `compare_models` raises them,
            or a `metric` that was not computed.

    Example:

    ```python
    report = compression_report({"float": model, "int8": quantized},
                                SinusoidTasks(shots=5, seed=1), episodes=200)
    print(report.to_string())
    ```
    """
    if not isinstance(models, dict):
        raise ValueError(
            "`models` must be a dict mapping names to models. Received: "
            f"{type(models).__name__}"
        )
    steps = inner_steps_argument(kwargs, inner_steps, "compression_report")
    comparison = _compare(models, tasks, episodes, baseline, steps, batch_size, seed)
    metric, summary = _metric_summary(comparison, metric)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = scratch if directory is None else os.fspath(directory)
        os.makedirs(folder, exist_ok=True)
        for name, model in models.items():
            row = summary[summary["model"] == name].iloc[0]
            difference, half = _paired(comparison, name, metric)
            rows.append(
                {
                    "model": name,
                    **_size(model, name, folder),
                    "metric": metric,
                    "mean": float(row["mean"]),
                    "ci95": float(row["ci95"]),
                    "difference": difference,
                    "difference_ci95": half,
                }
            )
    return pd.DataFrame(rows)


def _compare(models, tasks, episodes, baseline, steps, batch_size, seed):
    """`compare_models` on the models, seeded as `compression_report` says."""
    if steps is None:
        steps = {name: None for name in models}
    paired_seed = seed
    if seed is not None and any(
        getattr(m, "inner", None) is None for m in models.values()
    ):
        # `compare_models` cannot derive per-batch seeds for models without
        # inner steps; their adaptation has no randomness, so one global
        # seed makes the run repeatable.
        keras.utils.set_random_seed(seed)
        paired_seed = None
    return compare_models(
        models,
        tasks,
        episodes=episodes,
        baseline=baseline,
        inner_steps=steps,
        batch_size=batch_size,
        seed=paired_seed,
    )


def _metric_summary(comparison, metric):
    """The reported metric (chosen by task when `None`) and its summary rows."""
    if metric is None:
        task = comparison.results[comparison.baseline].task
        metric = "accuracy" if task == "classification" else "mse"
    summary = comparison.summary[comparison.summary["metric"] == metric]
    if summary.empty:
        raise ValueError(
            f"`metric`={metric!r} was not computed. Valid choices: "
            f"{sorted(set(comparison.summary['metric']))}."
        )
    return metric, summary


def _paired(comparison, name, metric):
    """Mean paired difference to the baseline and its 95% half-width."""
    if name == comparison.baseline:
        return 0.0, 0.0
    differences = comparison.differences
    match = differences[
        (differences["model"] == name) & (differences["metric"] == metric)
    ].iloc[0]
    return float(match["difference"]), float(match["ci95"])


def _size(model, name, folder):
    """Weight counts of the learner and bytes of the saved model and learner."""
    parameters, nonzero = _count(model)
    return {
        "parameters": parameters,
        "nonzero": nonzero,
        "sparsity": 1.0 - nonzero / parameters,
        "file_bytes": _saved_size(model, folder, name),
        "learner_bytes": _saved_size(_learner_of(model), folder, f"{name}.learner"),
    }


def _learner_of(model):
    # Imported here: `metakeras.callbacks` re-exports `compression_report`,
    # so importing it while this module loads would be circular.
    from metakeras.callbacks import _layers

    return _layers.learner_of(model)


def _saved_size(model, directory, name):
    """Saves `model` as `<directory>/<name>.keras` and returns its size in bytes."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(name))
    path = os.path.join(os.fspath(directory), f"{safe}.keras")
    with atomic_path(path) as tmp:
        model.save(tmp)
        # As `MetaModel.save` writes a pruned model: masks and zeros compressed.
        from metakeras.callbacks.pruning import has_masks

        if has_masks(model):
            deflate_archive(tmp)
    return os.path.getsize(path)


def _count(model):
    """Weight values of the learner and how many are non-zero.

    Pruning masks are not among a layer's weights, so they are not counted.
    """
    parameters = nonzero = 0
    for variable in _learner_of(model).weights:
        values = keras.ops.convert_to_numpy(variable)
        parameters += values.size
        nonzero += int(np.count_nonzero(values))
    return parameters, nonzero
