"""How meta-training cost grows with inner steps, ways, shots, meta-batch and image size.

Each point times second-order MAML on conv4 (5-way 1-shot 15-query, 28x28,
one inner step, meta-batch 4 unless the sweep varies it) in a fresh process
with `_throughput_worker.py`, for metakeras and the plain PyTorch reference.
Reported per point: seconds per task, tasks/s, and the training memory (peak
resident memory minus the memory after imports and model building).

Beside the measurements, a first-order cost model: a task's work is
proportional to the pixels of its images times the passes over them,
`H*W * (9*S*N*K + 3*N*Q)` for `S` second-order inner steps on `N*K` support
and `N*Q` query images (an inner step is a forward and a backward that keeps
its graph, ~3 forward-equivalents, and the outer pass differentiates it
again, ~6 more; a query image is a forward and a backward, ~3). The model's
prediction is normalised to the sweep's first point.

Peak memory against inner steps (`--memory`): second-order MAML,
first-order MAML and implicit MAML (`metakeras.IMAML`) at 1, 5, 10 and 20
inner steps, each point one training step (after one warm-up step) in a
fresh process, on a support-heavy task (conv4, 20-way 5-shot 1-query, 28x28,
one task per meta-batch) where the inner steps' graphs, not the query pass,
decide the peak. Memory is not timing-sensitive, so a busy machine may
measure it (`--allow-busy`).

Usage:
    python benchmarks/scaling.py [--seconds 6] [--sweeps steps ways ...]
    python benchmarks/scaling.py --memory --allow-busy

Writes `results/scaling.csv` and `results/scaling.png` (or, with
`--memory`, `results/scaling_memory.csv`) and prints the table.
"""

import argparse
import os
import sys

import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _machine  # noqa: E402  (benchmarks/, the script's folder)
from throughput import BASE, RESULTS, run  # noqa: E402

SWEEPS = {
    "steps": [1, 2, 3, 5],
    "ways": [5, 10, 20],
    "shots": [1, 5, 10],
    "meta_batch": [4, 16, 32],
    "image_size": [28, 56, 84],
}
LABELS = {
    "steps": "inner steps S",
    "ways": "ways N",
    "shots": "shots K",
    "meta_batch": "meta-batch (tasks per step)",
    "image_size": "image side (pixels)",
}


MEMORY_STEPS = [1, 5, 10, 20]
MEMORY_ALGORITHMS = {
    "maml": {"algorithm": "maml", "first_order": False},
    "fomaml": {"algorithm": "maml", "first_order": True},
    "imaml": {"algorithm": "imaml", "first_order": True},
}
MEMORY_TASK = {"ways": 20, "shots": 5, "queries": 1, "meta_batch": 1, "inner_lr": 0.1}


def measure_memory():
    """Training memory of MAML, FOMAML and iMAML against inner steps."""
    rows = []
    for name, algorithm in MEMORY_ALGORITHMS.items():
        for steps in MEMORY_STEPS:
            config = {
                **BASE,
                **MEMORY_TASK,
                **algorithm,
                "steps": steps,
                "seconds": 0.0,
                "min_steps": 1,
                "max_steps": 1,
            }
            result = run("metakeras-loop", config, sys.executable)
            row = {"algorithm": name, "inner_steps": steps, **result}
            if "peak_rss_mb" in result:
                row["train_memory_mb"] = result["peak_rss_mb"] - result["rss_built_mb"]
            rows.append(row)
            print(name, steps, result, flush=True)
    return pd.DataFrame(rows)


def predicted_cost(config):
    """Relative work of one task under the cost model in the module docstring."""
    n, k, q, s = config["ways"], config["shots"], config["queries"], config["steps"]
    return config["image_size"] ** 2 * (9 * s * n * k + 3 * n * q)


def measure(sweeps, seconds):
    rows = []
    for sweep in sweeps:
        for value in SWEEPS[sweep]:
            config = {
                **BASE,
                "meta_batch": 4,
                sweep: value,
                "seconds": seconds,
                "min_steps": 2,
                "max_steps": 10_000,
            }
            for impl in ("metakeras", "torch"):
                result = run(impl, config, sys.executable)
                row = {"sweep": sweep, "value": value, "impl": impl, **result}
                if "tasks_per_s" in result:
                    row["seconds_per_task"] = 1.0 / result["tasks_per_s"]
                    row["train_memory_mb"] = (
                        result["peak_rss_mb"] - result["rss_built_mb"]
                    )
                row["predicted_cost"] = predicted_cost(config)
                rows.append(row)
                print(sweep, value, impl, result, flush=True)
    table = pd.DataFrame(rows)
    for _, group in table.groupby(["sweep", "impl"]):
        first = group.sort_values("value").iloc[0]
        index = group.index
        table.loc[index, "relative_time"] = (
            group["seconds_per_task"] / first["seconds_per_task"]
        )
        table.loc[index, "predicted_relative_time"] = (
            group["predicted_cost"] / first["predicted_cost"]
        )
    return table


def plot(table, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweeps = [s for s in SWEEPS if s in set(table["sweep"])]
    fig, axes = plt.subplots(
        2, len(sweeps), figsize=(3.6 * len(sweeps), 6.4), squeeze=False
    )
    for col, sweep in enumerate(sweeps):
        part = table[table["sweep"] == sweep]
        top, bottom = axes[0][col], axes[1][col]
        for impl, group in part.groupby("impl"):
            group = group.sort_values("value")
            top.plot(group["value"], group["seconds_per_task"], "o-", label=impl)
            bottom.plot(group["value"], group["train_memory_mb"], "o-", label=impl)
        model = part[part["impl"] == "metakeras"].sort_values("value")
        if len(model):
            scale = model["seconds_per_task"].iloc[0]
            top.plot(
                model["value"],
                model["predicted_relative_time"] * scale,
                "k--",
                label="cost model",
            )
        top.set_title(LABELS[sweep])
        top.set_ylabel("seconds per task")
        bottom.set_ylabel("training memory (MB)")
        bottom.set_xlabel(LABELS[sweep])
    axes[0][0].legend(fontsize=7)
    axes[1][0].legend(fontsize=7)
    fig.suptitle("Second-order MAML, conv4: cost per task (CPU, 2 cores)")
    fig.tight_layout()
    from metakeras._io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--sweeps", nargs="*", choices=list(SWEEPS), default=None)
    parser.add_argument(
        "--memory",
        action="store_true",
        help="peak memory against inner steps for maml, fomaml and imaml",
    )
    _machine.add_arguments(parser)
    args = parser.parse_args(argv)
    machine = _machine.check_quiet(args)
    if args.memory:
        return memory_main(machine)
    table = measure(args.sweeps or list(SWEEPS), args.seconds)
    os.makedirs(RESULTS, exist_ok=True)
    from metakeras._io import atomic_path

    with atomic_path(os.path.join(RESULTS, "scaling.csv")) as tmp:
        _machine.stamp(table, machine)
        table.to_csv(tmp, index=False)
    plot(table, os.path.join(RESULTS, "scaling.png"))
    columns = [
        "sweep",
        "value",
        "impl",
        "tasks_per_s",
        "seconds_per_task",
        "relative_time",
        "predicted_relative_time",
        "train_memory_mb",
        "peak_rss_mb",
    ]
    with pd.option_context(
        "display.width", 200, "display.float_format", "{:.3g}".format
    ):
        print(table[[c for c in columns if c in table]].to_string(index=False))


def memory_main(machine):
    from metakeras._io import atomic_path

    table = measure_memory()
    os.makedirs(RESULTS, exist_ok=True)
    with atomic_path(os.path.join(RESULTS, "scaling_memory.csv")) as tmp:
        _machine.stamp(table, machine)
        table.to_csv(tmp, index=False)
    if "train_memory_mb" in table:
        pivot = table.pivot(
            index="inner_steps", columns="algorithm", values="train_memory_mb"
        )
        print("\ntraining memory (MB): peak resident minus after building")
        print(pivot[list(MEMORY_ALGORITHMS)].round(0).to_string())


if __name__ == "__main__":
    main()
