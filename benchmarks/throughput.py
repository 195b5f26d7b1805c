"""Meta-training throughput and memory: metakeras beside plain PyTorch and learn2learn.

Every (implementation, configuration) pair runs in a fresh subprocess, one
after another, so that peak memory is its own and the runs do not compete
for the 2 cores. Implementations:

- `metakeras`: `MAML`/`ProtoNet`/`MatchingNet`/`RelationNet`/`R2D2`
  `train_on_batch`, tasks one after another (`Baseline`, `BaselinePlusPlus`,
  `SimpleShot`: their pretraining step, `train_on_batch(x, y)` on a batch of
  base classes);
- `metakeras-vmap`: the same with `vectorize_tasks=True`;
- `torch`: a plain PyTorch reference (`torch.func.functional_call` over an
  `nn.Module`, same network, same math, Adam; for the pretrained baselines
  an ordinary `nn.Module` classifier step);
- `learn2learn`: learn2learn 0.2.0's `MAML` wrapper, run with the Python of
  the peers virtual environment (`../shared/peers/setup.sh`), if present
  (not for the pretrained baselines, MatchingNet, RelationNet and R2D2,
  which learn2learn does not implement).

The implementations of a configuration take turns, `--rounds` times (the
machine's speed drifts over minutes, so running one after another would
favour whichever ran in a fast spell); the table reports each one's median
tasks/s and its largest peak memory.

`--peers-malloc-tuned` runs the PyTorch reference and learn2learn with the
allocator settings that metakeras applies to itself when it trains on the
CPU (`metakeras.config`), as glibc environment variables, to show how much
of the difference those settings make.

With `--device cuda` it runs the GPU table instead (`GPU_CONFIGS`, Omniglot
and mini-ImageNet sizes): metakeras's default (`vectorize_tasks="auto"`),
its task loop, `vectorize_tasks=True`, and `compile(jit_compile=True)` (the
step as a CUDA graph), beside the PyTorch reference of `_reference.py` as a
task loop and under `torch.func.vmap`; tasks/s and peak GPU memory.

Usage:
    python benchmarks/throughput.py [--seconds 12] [--rounds 3] [--quick]
        [--configs NAME ...] [--peers-python PATH] [--peers-malloc-tuned]
        [--device cuda]

Prints a table and writes benchmarks/results/throughput.csv
(`throughput_peers_malloc_tuned.csv` with `--peers-malloc-tuned`,
`throughput_cuda.csv` with `--device cuda`).
"""

import argparse
import json
import os
import subprocess
import sys

import _machine  # noqa: E402  (benchmarks/, the script's folder)
import pandas as pd
from _throughput_worker import NO_LEARN2LEARN, PRETRAINED

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
DEFAULT_PEERS = os.path.expanduser("~/.cache/metakeras-peers/bin/python")

BASE = {
    "learner": "conv4",
    "algorithm": "maml",
    "ways": 5,
    "shots": 1,
    "queries": 15,
    "meta_batch": 16,
    "steps": 1,
    "inner_lr": 0.4,
    "first_order": False,
    "image_size": 28,
}
CONFIGS = {
    "maml2 5w1s mb16 1step": {},
    "maml1 5w1s mb16 1step": {"first_order": True},
    "maml2 5w1s mb16 5steps": {"steps": 5},
    "maml1 5w1s mb16 5steps": {"steps": 5, "first_order": True},
    "maml2 20w1s mb16 1step": {"ways": 20},
    "maml2 5w1s mb4 1step": {"meta_batch": 4},
    "maml2 5w1s mb32 1step": {"meta_batch": 32},
    "protonet 5w1s mb16": {"algorithm": "protonet"},
    # The other episodic metric learners on ProtoNet's episodes, at their
    # defaults (cosine attention scale 10; relation module Dense 256; ridge
    # penalty 1, scale 10).
    "matchingnet 5w1s mb16": {"algorithm": "matchingnet"},
    "relationnet 5w1s mb16": {"algorithm": "relationnet"},
    "r2d2 5w1s mb16": {"algorithm": "r2d2"},
    # The pretrained baselines' step: a batch of 128 examples (64 classes x
    # 2) through conv4 and a head over 3,856 base classes (Omniglot x4
    # rotations); "tasks" per second are batches per second.
    **{
        f"{name} pretraining 128 of 3856 classes": {
            "algorithm": name,
            "ways": 64,
            "queries": 1,
            "meta_batch": 1,
            "classes": 3856,
        }
        for name in PRETRAINED
    },
    "sinusoid mlp k10 mb25": {
        "learner": "mlp",
        "shots": 10,
        "queries": 10,
        "meta_batch": 25,
        "inner_lr": 0.01,
        "ways": 1,
    },
}
QUICK = ["maml2 5w1s mb16 1step", "protonet 5w1s mb16", "sinusoid mlp k10 mb25"]
# The configurations of the GPU table (`--device cuda`): Omniglot and
# mini-ImageNet sizes as the papers train them.
GPU_CONFIGS = {
    "maml2 omniglot 5w1s mb16 1step": {},
    "maml2 omniglot 20w1s mb16 5steps": {"ways": 20, "steps": 5, "inner_lr": 0.1},
    "maml2 84x84x3 F32 5w5s mb4 5steps": {
        "image_size": 84,
        "channels": 3,
        "filters": 32,
        "shots": 5,
        "meta_batch": 4,
        "steps": 5,
        "inner_lr": 0.01,
    },
    "maml1 84x84x3 F32 5w1s mb4 5steps": {
        "image_size": 84,
        "channels": 3,
        "filters": 32,
        "meta_batch": 4,
        "steps": 5,
        "inner_lr": 0.01,
        "first_order": True,
    },
    "protonet omniglot 20w5s mb16": {"algorithm": "protonet", "ways": 20, "shots": 5},
}
CPU_IMPLS = ["metakeras", "metakeras-vmap", "torch", "learn2learn"]
CUDA_IMPLS = [
    "metakeras-loop",
    "metakeras",
    "metakeras-vmap",
    "metakeras-graph",
    "torch",
    "torch-vmap",
]


def config_for(name, table=None):
    """The full configuration of the named row of `table` (`CONFIGS`)."""
    table = CONFIGS if table is None else table
    if name not in table:
        raise SystemExit(f"unknown configuration {name!r}; choose from {list(table)}")
    return {**BASE, **table[name]}


TUNED_MALLOC = {
    "MALLOC_MMAP_THRESHOLD_": str(32 << 20),
    "MALLOC_TRIM_THRESHOLD_": str(1 << 30),
}


def run(impl, config, python, malloc_tuned=False):
    """Measures `impl` on `config` (or on each of a list of configs) in a fresh
    process; returns one result dict per configuration."""
    configs = config if isinstance(config, list) else [config]
    worker = os.path.join(HERE, "_throughput_worker.py")
    paths = [os.path.dirname(HERE)] + [p for p in [os.environ.get("PYTHONPATH")] if p]
    env = dict(os.environ, KERAS_BACKEND="torch", PYTHONPATH=os.pathsep.join(paths))
    if malloc_tuned:
        env.update(TUNED_MALLOC)
    result = subprocess.run(
        [python, worker, impl, json.dumps(configs)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    lines = [json.loads(line) for line in result.stdout.strip().splitlines() if line]
    if result.returncode != 0:
        error = {"error": (result.stderr.strip().splitlines() or ["?"])[-1][:200]}
        lines += [error] * (len(configs) - len(lines))
    return lines if isinstance(config, list) else lines[0]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument(
        "--quick", action="store_true", help="three configurations only"
    )
    parser.add_argument("--peers-python", default=DEFAULT_PEERS)
    parser.add_argument("--configs", nargs="*", help="names of configurations to run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--peers-malloc-tuned",
        action="store_true",
        help="give the PyTorch reference and learn2learn metakeras's allocator settings",
    )
    parser.add_argument(
        "--no-vmap", action="store_true", help="skip the vectorize_tasks runs"
    )
    parser.add_argument(
        "--impls", nargs="*", help="run only these implementations (default: all)"
    )
    parser.add_argument("--output", help="CSV file name in benchmarks/results")
    parser.add_argument(
        "--device",
        default="cpu",
        help="cpu, or cuda: the GPU table (its configurations and "
        "implementations, peak GPU memory)",
    )
    _machine.add_arguments(parser)
    args = parser.parse_args(argv)
    machine = _machine.check_quiet(args)

    cuda = args.device.startswith("cuda")
    table = GPU_CONFIGS if cuda else CONFIGS
    names = args.configs or (QUICK if args.quick and not cuda else list(table))
    peers = args.peers_python if os.path.exists(args.peers_python) else None
    rows = []
    if cuda:
        # On a GPU one process per implementation runs every configuration
        # (peak GPU memory is reset per configuration): the imports would
        # otherwise take longer than the measurements.
        configs = [
            {
                **config_for(name, table),
                "seconds": args.seconds,
                "min_steps": 3,
                "max_steps": 100_000,
                "device": args.device,
                "warmup_steps": 3,
            }
            for name in names
        ]
        impls = [impl for impl in CUDA_IMPLS if not args.impls or impl in args.impls]
        for round_ in range(args.rounds):
            for impl in impls:
                for name, result in zip(names, run(impl, configs, sys.executable)):
                    rows.append(
                        {"config": name, "impl": impl, "round": round_, **result}
                    )
                    print(name, impl, result, flush=True)
        names_run = []
    else:
        names_run = names
    for name in names_run:
        config = {
            **config_for(name, table),
            "seconds": args.seconds,
            "min_steps": 3,
            "max_steps": 10_000,
        }
        impls = ["metakeras"] + ([] if args.no_vmap else ["metakeras-vmap"])
        impls += ["torch"] + (["learn2learn"] if peers else [])
        if config["algorithm"] in PRETRAINED:
            # One batch, no tasks to vectorise; learn2learn has no such step.
            impls = ["metakeras", "torch"]
        elif config["algorithm"] in NO_LEARN2LEARN:
            impls = [impl for impl in impls if impl != "learn2learn"]
        impls = [impl for impl in impls if not args.impls or impl in args.impls]
        for round_ in range(args.rounds):
            for impl in impls:
                python = peers if impl == "learn2learn" else sys.executable
                tuned = args.peers_malloc_tuned and impl in ("torch", "learn2learn")
                result = run(impl, config, python, malloc_tuned=tuned)
                rows.append({"config": name, "impl": impl, "round": round_, **result})
                print(name, impl, result, flush=True)
    table = pd.DataFrame(rows)
    ok = table[table.get("tasks_per_s").notna()] if "tasks_per_s" in table else table
    pivot = ok.pivot_table(
        index="config", columns="impl", values="tasks_per_s", aggfunc="median"
    )
    ours = [impl for impl in pivot.columns if impl.startswith("metakeras")]
    if cuda:
        if {"metakeras", "torch"} <= set(pivot):
            pivot["default/torch loop"] = pivot["metakeras"] / pivot["torch"]
        best_reference = pivot[[c for c in ("torch", "torch-vmap") if c in pivot]]
        pivot["best/best reference"] = pivot[ours].max(axis=1) / best_reference.max(
            axis=1
        )
        if {"metakeras-graph", "torch-vmap"} <= set(pivot):
            pivot["graph/torch vmap"] = pivot["metakeras-graph"] / pivot["torch-vmap"]
    else:
        for peer in ("torch", "learn2learn"):
            if peer in pivot:
                pivot[f"metakeras/{peer}"] = pivot[ours].max(axis=1) / pivot[peer]
    memory_column = "peak_gpu_mb" if cuda else "peak_rss_mb"
    memory = ok.pivot_table(
        index="config", columns="impl", values=memory_column, aggfunc="max"
    )
    os.makedirs(RESULTS, exist_ok=True)
    from metakeras._io import atomic_path

    filename = args.output or (
        "throughput_peers_malloc_tuned.csv"
        if args.peers_malloc_tuned
        else "throughput_cuda.csv"
        if cuda
        else "throughput.csv"
    )
    with atomic_path(os.path.join(RESULTS, filename)) as tmp:
        _machine.stamp(table, machine)
        table.to_csv(tmp, index=False)
    with pd.option_context(
        "display.width", 200, "display.float_format", "{:.2f}".format
    ):
        print(
            f"\nmeta-training tasks per second, median of {args.rounds} rounds "
            "(higher is better)"
        )
        print(pivot.loc[[n for n in names if n in pivot.index]].to_string())
        print(
            "\npeak GPU memory allocated, MB"
            if cuda
            else "\npeak resident memory, MB (the learn2learn venv's torch is a "
            "larger CUDA build)"
        )
        print(memory.loc[[n for n in names if n in memory.index]].to_string())


if __name__ == "__main__":
    main()
