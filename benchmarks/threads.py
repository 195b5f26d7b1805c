"""PyTorch threads on a shared machine: meta-training speed with and without a neighbour.

PyTorch starts one intra-op thread per core. That is the right choice on a
quiet machine, and the wrong one when another process also computes: on 2
cores, two threads that must meet at every operation wait for a core the
neighbour holds, and the whole run slows down many times over. This script
measures it: meta-training tasks/s of metakeras (the sinusoid MLP of the MAML
paper under `vectorize_tasks=True`, and conv4 5-way 1-shot second-order MAML
with its task loop) with 1 thread and with PyTorch's default, alone and
beside a neighbour process that keeps one core busy (a plain Python loop, as
any other job would), each cell in a fresh process.

Usage:
    python benchmarks/threads.py [--seconds 8] [--allow-busy]

Prints a table and writes benchmarks/results/threads.csv.
"""

import argparse
import os
import subprocess
import sys

import pandas as pd

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import _machine  # noqa: E402
from throughput import RESULTS, config_for, run  # noqa: E402

WORKLOADS = {
    "sinusoid MLP, meta-batch 25 (vmap)": ("sinusoid mlp k10 mb25", "metakeras-vmap"),
    "conv4 MAML 5-way 1-shot, meta-batch 16": ("maml2 5w1s mb16 1step", "metakeras"),
}
_BUSY_LOOP = "while True:\n    pass\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    _machine.add_arguments(parser)
    args = parser.parse_args(argv)
    import torch

    default_threads = torch.get_num_threads()
    state = _machine.check_quiet(args)
    rows = []
    for neighbour in (False, True):
        busy = (
            subprocess.Popen([sys.executable, "-c", _BUSY_LOOP]) if neighbour else None
        )
        try:
            for threads in sorted({1, default_threads}):
                for workload, (name, impl) in WORKLOADS.items():
                    config = {
                        **config_for(name),
                        "seconds": args.seconds,
                        "min_steps": 2,
                        "max_steps": 10_000,
                        "threads": threads,
                    }
                    result = run(impl, config, sys.executable)
                    row = {
                        "workload": workload,
                        "neighbour": "one busy core" if neighbour else "none",
                        "threads": threads,
                        "tasks_per_s": result.get("tasks_per_s"),
                    }
                    rows.append(row)
                    print(row, flush=True)
        finally:
            if busy is not None:
                busy.kill()
                busy.wait()
    table = pd.DataFrame(rows)
    pivot = table.pivot_table(
        index=["workload", "neighbour"], columns="threads", values="tasks_per_s"
    )
    pivot.columns = [f"{c} thread(s)" for c in pivot.columns]
    print()
    print(pivot.round(2).to_string())
    _machine.stamp(table, state)
    os.makedirs(RESULTS, exist_ok=True)
    from metakeras._io import atomic_path

    path = os.path.join(RESULTS, "threads.csv")
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
