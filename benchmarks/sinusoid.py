"""Sinusoid regression accuracy of MAML beside the pooled baseline and the paper.

Meta-trains MAML with the `metakeras demo` budget, then reports the
post-adaptation MSE after 1 and 10 inner steps for 5, 10 and 20 shots on 600
held-out tasks (mean and 95% CI), beside the pooled baseline and the values
read off Figure 2 of the MAML paper (5-shot only). Also times the
`metakeras demo` command itself, end to end, in a subprocess.

Usage:
    python benchmarks/sinusoid.py [--seed 0] [--skip-demo-timing]

Writes benchmarks/results/sinusoid.csv and prints a table.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

import _machine  # noqa: E402  (benchmarks/, the script's folder)
import pandas as pd

import metakeras  # noqa: F401  (selects the torch backend)
from metakeras._io import atomic_path
from metakeras.demo import run_demo

# MAML paper (Finn et al., 2017), Figure 2, 5-shot, read off the plot;
# 70,000 meta-iterations of 25 tasks.
PAPER = {(5, 1): 0.7, (5, 10): 0.3}
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-demo-timing", action="store_true")
    _machine.add_arguments(parser)
    args = parser.parse_args(argv)
    machine = _machine.check_quiet(args)

    demo_seconds = float("nan")
    if not args.skip_demo_timing:
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "metakeras",
                    "demo",
                    "--quiet",
                    "--output-dir",
                    out,
                ],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            demo_seconds = time.perf_counter() - start

    epochs, steps_per_epoch = 6, 1000
    result = run_demo(
        seed=args.seed,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        eval_tasks=600,
        shots=(5, 10, 20),
        eval_steps=(1, 10),
        verbose=0,
        write_files=False,
    )
    table = result["summary"].rename(columns={"mse": "mse_mean"})
    table["paper_mse"] = [
        PAPER.get((k, s)) if m == "MAML" else None
        for m, k, s in zip(table["model"], table["shots"], table["steps"])
    ]
    table["meta_iterations"] = epochs * steps_per_epoch
    table["tasks_seen"] = epochs * steps_per_epoch * 25
    table["run_seconds"] = round(result["seconds"], 1)
    table["demo_wall_seconds"] = round(demo_seconds, 1)
    os.makedirs(RESULTS, exist_ok=True)
    with atomic_path(os.path.join(RESULTS, "sinusoid.csv")) as tmp:
        _machine.stamp(table, machine)
        table.to_csv(tmp, index=False)
    with pd.option_context(
        "display.width", 200, "display.float_format", "{:.3f}".format
    ):
        print(table.to_string(index=False))


if __name__ == "__main__":
    main()
