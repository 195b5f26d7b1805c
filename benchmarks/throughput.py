"""Meta-training throughput and memory: metakeras beside plain PyTorch and learn2learn.

Every (implementation, configuration) pair runs in a fresh subprocess, one
after another, so that peak memory is its own and the runs do not compete
for the 2 cores. Implementations:

- `metakeras`: `MAML`/`ProtoNet` `train_on_batch`, tasks one after another;
- `metakeras-vmap`: the same with `vectorize_tasks=True`;
- `torch`: a plain PyTorch reference (`torch.func.functional_call` over an
  `nn.Module`, same network, same math, Adam);
- `learn2learn`: learn2learn 0.2.0's `MAML` wrapper, run with the Python of
  the peers virtual environment (`../shared/peers/setup.sh`), if present.

The implementations of a configuration take turns, `--rounds` times (the
machine's speed drifts over minutes, so running one after another would
favour whichever ran in a fast spell); the table reports each one's median
tasks/s and its largest peak memory.

`--peers-malloc-tuned` runs the PyTorch reference and learn2learn with the
allocator settings that metakeras applies to itself when it trains on the
CPU (`metakeras.config`), as glibc environment variables, to show how much
of the difference those settings make.

Usage:
    python benchmarks/throughput.py [--seconds 12] [--rounds 3] [--quick]
        [--configs NAME ...] [--peers-python PATH] [--peers-malloc-tuned]

Prints a table and writes benchmarks/results/throughput.csv
(`throughput_peers_malloc_tuned.csv` with `--peers-malloc-tuned`).
"""

import argparse
import json
import os
import subprocess
import sys

import pandas as pd

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


TUNED_MALLOC = {
    "MALLOC_MMAP_THRESHOLD_": str(32 << 20),
    "MALLOC_TRIM_THRESHOLD_": str(1 << 30),
}


def run(impl, config, python, malloc_tuned=False):
    worker = os.path.join(HERE, "_throughput_worker.py")
    env = dict(os.environ, KERAS_BACKEND="torch", PYTHONPATH=os.path.dirname(HERE))
    if malloc_tuned:
        env.update(TUNED_MALLOC)
    result = subprocess.run(
        [python, worker, impl, json.dumps(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    if result.returncode != 0:
        return {"error": result.stderr.strip().splitlines()[-1][:120]}
    return json.loads(result.stdout.strip().splitlines()[-1])


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
    args = parser.parse_args(argv)

    names = args.configs or (QUICK if args.quick else list(CONFIGS))
    peers = args.peers_python if os.path.exists(args.peers_python) else None
    rows = []
    for name in names:
        config = {
            **BASE,
            **CONFIGS[name],
            "seconds": args.seconds,
            "min_steps": 3,
            "max_steps": 10_000,
        }
        impls = ["metakeras"] + ([] if args.no_vmap else ["metakeras-vmap"])
        impls += ["torch"] + (["learn2learn"] if peers else [])
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
    ours = [impl for impl in ("metakeras", "metakeras-vmap") if impl in pivot]
    for peer in ("torch", "learn2learn"):
        if peer in pivot:
            pivot[f"metakeras/{peer}"] = pivot[ours].max(axis=1) / pivot[peer]
    memory = ok.pivot_table(
        index="config", columns="impl", values="peak_rss_mb", aggfunc="max"
    )
    os.makedirs(RESULTS, exist_ok=True)
    from metakeras._io import atomic_path

    filename = args.output or (
        "throughput_peers_malloc_tuned.csv"
        if args.peers_malloc_tuned
        else "throughput.csv"
    )
    with atomic_path(os.path.join(RESULTS, filename)) as tmp:
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
            "\npeak resident memory, MB (the learn2learn venv's torch is a larger CUDA build)"
        )
        print(memory.loc[[n for n in names if n in memory.index]].to_string())


if __name__ == "__main__":
    main()
