"""ATen operators per meta-training step: metakeras beside plain PyTorch.

At the sizes of few-shot learning a GPU meta-step is bound by kernel
launches and Python, not arithmetic, so the number of ATen operators one
step dispatches is the figure to cut. It is counted here on the CPU with a
`torch.utils._python_dispatch.TorchDispatchMode` (no GPU needed): every
operator that reaches the dispatcher during one `train_on_batch` (metakeras)
or one hand-written step (`_reference.py`), after a warm-up step. "kernels"
leaves out view operators (`view`, `expand`, `permute`, `detach`, ...), which
launch nothing on a GPU but still cost dispatch time.

The operators a step dispatches do not depend on the sizes of its tensors,
so episodes are shrunk to 16x16 images and one query per class for the
count (`--full-size` counts at the configured sizes; the totals agree).

Pooling a channels-last copy is a CPU optimisation that metakeras's
`MaxPooling2D` does not use on GPUs (it adds layout copies); the count uses
the GPU's choice (`--cpu-kernels` counts the CPU's).

Compared: metakeras's task loop (`vectorize_tasks=False`) with the PyTorch
loop, and `vectorize_tasks=True` with the PyTorch `torch.func.vmap` step,
for the configurations of the GPU throughput table (`throughput.py
--device cuda`). The reference's vmap step keeps no BatchNormalization
running statistics (`torch.func.replace_all_batch_norm_modules_`, as the
functorch MAML recipe does); metakeras also updates the moving statistics.

Usage:
    python benchmarks/operators.py [--configs NAME ...]

Prints a table and writes benchmarks/results/operators.csv.
"""

import argparse
import collections
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import _machine  # noqa: E402  (benchmarks/, the script's folder)
import _throughput_worker as worker  # noqa: E402
from _reference import step_function  # noqa: E402
from throughput import GPU_CONFIGS, config_for  # noqa: E402

RESULTS = os.path.join(HERE, "results")


class _OperatorCounter(TorchDispatchMode):
    """Counts the ATen operators dispatched while it is active."""

    def __init__(self):
        super().__init__()
        self.counts = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[func] += 1
        return func(*args, **(kwargs or {}))


def count_operators(step, batch):
    """`(all operators, kernel operators, Counter)` of one call `step(batch)`."""
    step(batch)  # warm-up: builds the optimizer state, caches plans
    with _OperatorCounter() as counter:
        step(batch)
    views = sum(n for op, n in counter.counts.items() if op.is_view)
    total = sum(counter.counts.values())
    return total, total - views, counter.counts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="*", help="names of configurations")
    parser.add_argument(
        "--top", type=int, default=0, help="also print the N most frequent operators"
    )
    parser.add_argument(
        "--full-size",
        action="store_true",
        help="count on episodes of the configured image size and queries",
    )
    parser.add_argument(
        "--cpu-kernels",
        action="store_true",
        help="count with the CPU's max-pooling layout trick",
    )
    _machine.add_arguments(parser)
    args = parser.parse_args(argv)
    machine = _machine.check_quiet(args)
    torch.set_num_threads(1)
    if not args.cpu_kernels:
        from metakeras.layers import max_pooling2d

        max_pooling2d._LAYOUT_TRICK_DEVICES.clear()
    rows = []
    for name in args.configs or list(GPU_CONFIGS):
        config = config_for(name, GPU_CONFIGS)
        if not args.full_size:
            config.update(image_size=16, queries=1)
        batch = worker._episode(config, np.random.default_rng(0))
        pairs = {
            "loop": (worker._metakeras_step(config, vectorize=False), False),
            "vmap": (worker._metakeras_step(config, vectorize=True), True),
        }
        for mode, (ours, vectorize) in pairs.items():
            reference = step_function(config, "cpu", vectorize=vectorize)
            counted = {}
            for impl, step in (("metakeras", ours), ("torch", reference)):
                total, kernels, counts = count_operators(step, batch)
                counted[impl] = (total, kernels)
                if args.top:
                    print(f"\n{name} {mode} {impl}: {total} operators")
                    for op, n in counts.most_common(args.top):
                        print(f"{n:8d}  {op}")
            rows.append(
                {
                    "config": name,
                    "mode": mode,
                    "metakeras": counted["metakeras"][0],
                    "torch": counted["torch"][0],
                    "ratio": counted["metakeras"][0] / counted["torch"][0],
                    "metakeras kernels": counted["metakeras"][1],
                    "torch kernels": counted["torch"][1],
                    "kernel ratio": counted["metakeras"][1] / counted["torch"][1],
                }
            )
            print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    os.makedirs(RESULTS, exist_ok=True)
    from metakeras._io import atomic_path

    with atomic_path(os.path.join(RESULTS, "operators.csv")) as tmp:
        _machine.stamp(table, machine)
        table.to_csv(tmp, index=False)
    with pd.option_context(
        "display.width", 200, "display.float_format", "{:.2f}".format
    ):
        print("\nATen operators per meta-training step (lower is better)")
        print(table.to_string(index=False))


if __name__ == "__main__":
    main()
