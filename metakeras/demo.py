"""The embedded default job: MAML on sinusoid regression, no network needed."""

import os
import time

import keras
import numpy as np
import pandas as pd

from metakeras._io import atomic_path
from metakeras._progress import progress_bar, resolve_verbose
from metakeras.evaluation import summarize
from metakeras.models import registry
from metakeras.tasks import SinusoidTasks

# MAML with the registry's regression defaults: one inner step at 0.01, the
# MAML paper's sinusoid settings.
_MAML = registry.get("maml")
INNER_LEARNING_RATE = _MAML.default("inner_learning_rate", "regression")


def sinusoid_learner(hidden=40, name="sinusoid_mlp"):
    """The MAML paper's regression network: 1-40-40-1 with ReLU.

    Args:
        hidden: units of each of the two hidden layers. Defaults to `40`.
        name: model name. Defaults to `"sinusoid_mlp"`.

    Returns:
        A `keras.Sequential` model mapping `(batch, 1)` to `(batch, 1)`.
    """
    return keras.Sequential(
        [
            keras.Input((1,)),
            keras.layers.Dense(hidden, activation="relu"),
            keras.layers.Dense(hidden, activation="relu"),
            keras.layers.Dense(1),
        ],
        name=name,
    )


def run_demo(
    seed=0,
    output_dir="metakeras_demo",
    epochs=6,
    steps_per_epoch=1000,
    eval_tasks=600,
    shots=(5, 10),
    eval_steps=(0, 1, 10),
    verbose="auto",
    write_files=True,
    train_shots=5,
):
    """Meta-trains MAML on sinusoids and compares it with a pooled baseline.

    MAML (1-40-40-1 ReLU, with `metakeras.models.registry`'s regression
    defaults: one inner step at 0.01; Adam 1e-3, 25 tasks of
    5 support + 10 query points per meta-batch) is meta-trained with
    `model.fit`. The baseline is the same network trained by ordinary
    regression on the same number of points pooled over tasks. Both are then
    adapted with the same inner loop on `eval_tasks` held-out tasks and
    scored on 100 query points per task.

    Args:
        seed: seed for weights and tasks. Defaults to `0`.
        output_dir: where the CSV, model and plot are written. Defaults to
            `"metakeras_demo"`.
        epochs: meta-training epochs. Defaults to `6`.
        steps_per_epoch: meta-batches per epoch. Defaults to `1000`.
        eval_tasks: held-out tasks. Defaults to `600`.
        shots: support sizes to evaluate. Defaults to `(5, 10)`.
        eval_steps: inner steps to evaluate. Defaults to `(0, 1, 10)`.
        verbose: `0` (silent), `1` (a line per phase and Keras progress
            bars), `2` (a line per phase and per epoch) or `"auto"` (1 on an
            interactive terminal, else 2). Defaults to `"auto"`.
        write_files: write the CSV tables, model and plot. Defaults to `True`.
        train_shots: support points per training task. Defaults to `5`.

    Returns:
        A dict with `summary` (DataFrame: model, shots, steps, mean MSE, 95%
        CI), `per_task` (DataFrame), `history` (Keras History), `paths`
        (written files) and `seconds` (wall time).
    """
    start = time.perf_counter()
    verbose = resolve_verbose(verbose)
    say = print if verbose else _silent
    if write_files:
        os.makedirs(output_dir, exist_ok=True)  # fail before training, not after
    keras.utils.set_random_seed(seed)
    train_tasks = SinusoidTasks(
        shots=train_shots,
        queries=10,
        meta_batch_size=25,
        steps=steps_per_epoch,
        seed=seed,
    )

    say(
        f"MAML: meta-training for {epochs} epoch{'s' * (epochs != 1)} of "
        f"{steps_per_epoch} meta-batches (25 sinusoid tasks each)"
    )
    maml, history = _meta_train(train_tasks, epochs, verbose)
    say("Pooled baseline: ordinary regression on the same tasks' points, pooled")
    baseline = _pooled_baseline(train_tasks, epochs, verbose)

    test = SinusoidTasks(
        shots=max(shots),
        queries=100,
        meta_batch_size=eval_tasks,
        steps=1,
        seed=seed + 10_000,
        resample=False,
    ).as_episodes()
    say(f"Adapting both models to {eval_tasks} held-out tasks")
    per_task = _score(
        {"MAML": maml, "pooled baseline": baseline},
        test,
        shots,
        eval_steps,
        progress_bar(verbose, 2 * len(shots) * len(eval_steps), "setting"),
    )
    summary = summarize(
        per_task[["model", "shots", "steps", "mse"]], by=["model", "shots", "steps"]
    )
    summary = summary.drop(columns="metric").rename(columns={"mean": "mse"})

    paths = {}
    if write_files:
        paths = _write_outputs(
            maml, baseline, test, summary, per_task, output_dir, min(shots)
        )
    return {
        "summary": summary,
        "per_task": per_task,
        "history": history,
        "paths": paths,
        "seconds": time.perf_counter() - start,
    }


def _meta_train(train_tasks, epochs, verbose):
    """MAML with the registry's regression settings, meta-trained."""
    maml = _MAML.create(
        sinusoid_learner(name="maml_learner"),
        "regression",
        vectorize_tasks=True,
        name="maml",
    )
    maml.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    history = maml.fit(train_tasks, epochs=epochs, verbose=verbose)
    return maml, history


def _pooled_baseline(train_tasks, epochs, verbose):
    """The same network trained by ordinary regression on the pooled points,
    wrapped in the same MAML so it adapts with the same inner loop."""
    baseline = _MAML.create(
        sinusoid_learner(name="pooled_learner"),
        "regression",
        vectorize_tasks=True,
        name="pooled_baseline",
    )
    baseline.compile(loss="mse")
    pooled = baseline.learner
    pooled.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    pooled.fit(_PooledPoints(train_tasks), epochs=epochs, verbose=verbose)
    return baseline


def _write_outputs(maml, baseline, test, summary, per_task, output_dir, shots):
    paths = {
        "summary": os.path.join(output_dir, "sinusoid_summary.csv"),
        "per_task": os.path.join(output_dir, "sinusoid_per_task.csv"),
        "model": os.path.join(output_dir, "maml_sinusoid.keras"),
        "plot": os.path.join(output_dir, "sinusoid_adaptation.png"),
    }
    with atomic_path(paths["summary"]) as tmp:
        summary.to_csv(tmp, index=False)
    with atomic_path(paths["per_task"]) as tmp:
        per_task.to_csv(tmp, index=False)
    with atomic_path(paths["model"]) as tmp:
        maml.save(tmp)
    _plot_tasks(maml, baseline, test, paths["plot"], shots=shots)
    return paths


def format_summary(summary):
    """Formats the demo summary as a text table (MSE mean ± 95% CI)."""
    table = summary.copy()
    table["mse (95% CI)"] = [
        f"{m:.3f} ± {c:.3f}" for m, c in zip(table["mse"], table["ci95"])
    ]
    table = table.pivot_table(
        index=["shots", "steps"],
        columns="model",
        values="mse (95% CI)",
        aggfunc="first",
    )
    table.columns.name = None
    return table.to_string()


class _PooledPoints(keras.utils.PyDataset):
    """The training tasks' points as one ordinary regression data set."""

    def __init__(self, tasks):
        super().__init__()
        self.tasks = tasks

    def __len__(self):
        return len(self.tasks)

    def __getitem__(self, index):
        batch = self.tasks[index]
        x = np.concatenate([batch["support_x"], batch["query_x"]], axis=1)
        y = np.concatenate([batch["support_y"], batch["query_y"]], axis=1)
        return x.reshape(-1, 1), y.reshape(-1, 1)

    def on_epoch_end(self):
        self.tasks.on_epoch_end()


def _score(models, test, shots, steps_list, bar=None):
    rows = []
    done = 0
    for name, model in models.items():
        for k in shots:
            for steps in steps_list:
                predictions = model.adapt_and_predict(
                    test["support_x"][:, :k],
                    test["support_y"][:, :k],
                    test["query_x"],
                    inner_steps=steps,
                    batch_size=len(test["query_x"]),
                )
                mse = ((predictions - test["query_y"]) ** 2).mean(axis=(1, 2))
                rows.extend(
                    {"model": name, "shots": k, "steps": steps, "task": i, "mse": v}
                    for i, v in enumerate(mse)
                )
                done += 1
                if bar is not None:
                    bar.update(done)
    return pd.DataFrame(rows)


def _silent(*args, **kwargs):
    """A `print` that prints nothing (`verbose=0`)."""


def _plot_tasks(maml, baseline, test, path, shots, count=3):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = np.linspace(-5, 5, 200, dtype="float32")[None, :, None]
    grid = np.repeat(grid, count, axis=0)
    sx, sy = test["support_x"][:count, :shots], test["support_y"][:count, :shots]
    curves = {
        "MAML, before adaptation": maml.adapt_and_predict(sx, sy, grid, inner_steps=0),
        "MAML, 1 step": maml.adapt_and_predict(sx, sy, grid, inner_steps=1),
        "MAML, 10 steps": maml.adapt_and_predict(sx, sy, grid, inner_steps=10),
        "pooled baseline, 10 steps": baseline.adapt_and_predict(
            sx, sy, grid, inner_steps=10
        ),
    }
    fig, axes = plt.subplots(1, count, figsize=(5 * count, 3.6), sharey=True)
    for i, ax in enumerate(np.atleast_1d(axes)):
        truth = test["amplitude"][i] * np.sin(grid[i, :, 0] - test["phase"][i])
        ax.plot(grid[i, :, 0], truth, color="black", lw=2, label="true function")
        for (label, values), style in zip(curves.items(), (":", "--", "-", "-.")):
            ax.plot(grid[i, :, 0], values[i, :, 0], style, label=label)
        ax.scatter(
            sx[i, :, 0],
            sy[i, :, 0],
            color="red",
            zorder=5,
            label=f"{shots} support points",
        )
        ax.set_title(
            f"task {i}: A={test['amplitude'][i]:.2f}, phase={test['phase'][i]:.2f}"
        )
        ax.set_xlabel("x")
    first = np.atleast_1d(axes)[0]
    first.set_ylabel("y = A sin(x - phase)")
    first.legend(fontsize=7, loc="lower left")
    fig.suptitle(
        f"Held-out sinusoid tasks: MAML and the pooled baseline adapted from "
        f"{shots} points (inner learning rate {INNER_LEARNING_RATE})"
    )
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
