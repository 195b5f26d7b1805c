"""Multi-process meta-training throughput with `metakeras.distributed` (torchrun).

For each configuration and process count, launches
`python -m torch.distributed.run --nproc-per-node=N` on this file (worker
mode) and times `train_on_batch` on each rank's share of the meta-batches:
the same global meta-batch, split over N processes, with the meta-gradients
averaged by an all-reduce every step. Reports tasks/s (tasks of the global
meta-batch per second of wall time) and the scaling efficiency
`tasks/s(N) / (N * tasks/s(1))`.

Configurations:

- `sinusoid`: MAML, 1-40-40-1 MLP, 10 shots, meta-batch 24,
  `vectorize_tasks=True` (the MAML paper's regression setting);
- `conv4`: second-order MAML, conv4 (64 filters), 5-way 1-shot 15-query
  28x28, meta-batch 16, one inner step at 0.4 (Omniglot-shaped). Real
  Omniglot from `../shared/data/omniglot` when present (`--data auto`),
  else synthetic images; throughput does not depend on the pixels.

CPU runs use `gloo` with `--threads` threads per process (default 1, so N
processes use N cores); `--device cuda` uses `nccl` and one GPU per process.

Usage:
    python benchmarks/distributed.py [--procs 1 2] [--configs sinusoid conv4]
        [--steps 20] [--warmup 3] [--threads 1] [--device cpu|cuda]
        [--data auto|synthetic|omniglot] [--quick]

Prints a table and writes benchmarks/results/distributed.csv.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import time

import _machine  # noqa: E402  (benchmarks/, the script's folder)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results")
OMNIGLOT = os.path.join(ROOT, "..", "shared", "data", "omniglot")

CONFIGS = {
    "sinusoid": {"meta_batch": 24, "shots": 10, "queries": 10},
    "conv4": {"meta_batch": 16, "ways": 5, "shots": 1, "queries": 15},
}


# ------------------------------------------------------------------ worker


def _conv4_tasks(config, seed):
    import numpy as np

    from metakeras.tasks import TaskSampler

    data = config["data"]
    if data == "auto":
        data = "omniglot" if os.path.isdir(OMNIGLOT) else "synthetic"
    if data == "omniglot":
        from metakeras.datasets import omniglot

        (x, y), _, _ = omniglot.load_data(path=OMNIGLOT, image_size=28)
    else:
        rng = np.random.default_rng(0)
        x = rng.integers(0, 256, size=(200 * 20, 28, 28), dtype=np.uint8)
        y = np.repeat(np.arange(200), 20)
    sampler = TaskSampler(
        x,
        y,
        ways=config["ways"],
        shots=config["shots"],
        queries=config["queries"],
        meta_batch_size=config["meta_batch"],
        steps=config["warmup"] + config["steps"],
        seed=seed,
    )
    return sampler, data


def _worker(config):
    import torch

    if config["device"] == "cpu":
        torch.set_num_threads(config["threads"])

    import keras

    import metakeras
    from metakeras import distributed

    distributed.initialize(backend="nccl" if config["device"] == "cuda" else "gloo")
    keras.utils.set_random_seed(0)
    steps, warmup = config["steps"], config["warmup"]
    if config["name"] == "sinusoid":
        tasks = metakeras.tasks.SinusoidTasks(
            shots=config["shots"],
            queries=config["queries"],
            meta_batch_size=config["meta_batch"],
            steps=warmup + steps,
            seed=0,
        )
        data = "sinusoid"
        learner = keras.Sequential(
            [
                keras.Input((1,)),
                keras.layers.Dense(40, activation="relu"),
                keras.layers.Dense(40, activation="relu"),
                keras.layers.Dense(1),
            ]
        )
        model = metakeras.MAML(learner, inner_learning_rate=0.01, vectorize_tasks=True)
        model.compile(optimizer="adam", loss="mse")
    else:
        tasks, data = _conv4_tasks(config, seed=0)
        learner = metakeras.models.conv4(input_shape=(1, 28, 28), outputs=5)
        model = metakeras.MAML(learner, inner_steps=1, inner_learning_rate=0.4)
        model.compile(
            optimizer="adam",
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
    shard = distributed.shard(tasks)
    batches = [shard[i] for i in range(warmup + steps)]  # sampling not timed
    # `fit` would broadcast rank 0's weights; train_on_batch does not.
    distributed.broadcast(model.weights)
    for batch in batches[:warmup]:
        model.train_on_batch(batch)
    _synchronize(config["device"])
    start = time.perf_counter()
    for batch in batches[warmup:]:
        model.train_on_batch(batch)
    _synchronize(config["device"])
    seconds = time.perf_counter() - start
    if distributed.rank() == 0:
        print(
            json.dumps(
                {
                    "seconds": seconds,
                    "tasks_per_s": steps * config["meta_batch"] / seconds,
                    "data": data,
                    "backend": torch.distributed.get_backend(),
                }
            ),
            flush=True,
        )


def _synchronize(device):
    import torch

    from metakeras import distributed

    if device == "cuda":
        torch.cuda.synchronize()
    if distributed.is_distributed():
        torch.distributed.barrier()


# ------------------------------------------------------------------ driver


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(config, procs, timeout=1800):
    """Launches `procs` workers on `config`; returns rank 0's JSON result."""
    env = dict(
        os.environ,
        KERAS_BACKEND="torch",
        PYTHONPATH=ROOT,
        OMP_NUM_THREADS=str(config["threads"]),
    )
    if config["device"] == "cpu":
        env["KERAS_TORCH_DEVICE"] = "cpu"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc-per-node={procs}",
        "--master-addr=127.0.0.1",
        f"--master-port={_free_port()}",
        os.path.abspath(__file__),
        "--worker",
        json.dumps(config),
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=timeout
    )
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or ["(no output)"]
        errors = [line for line in lines if "Error" in line] or lines
        return {"error": errors[-1][:160]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS))
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps")
    parser.add_argument(
        "--threads", type=int, default=1, help="threads per process (CPU)"
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--data", choices=("auto", "synthetic", "omniglot"), default="auto"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke test: 2 timed steps, 1 warm-up, small meta-batches",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    _machine.add_arguments(parser)
    args = parser.parse_args(argv)
    machine = _machine.check_quiet(args)
    if args.worker:
        return _worker(json.loads(args.worker))

    import pandas as pd

    from metakeras._io import atomic_path

    if args.quick:
        args.steps, args.warmup = 2, 1
    names = args.configs or list(CONFIGS)
    rows = []
    for name in names:
        base = {
            "name": name,
            **CONFIGS[name],
            "steps": args.steps,
            "warmup": args.warmup,
            "threads": args.threads,
            "device": args.device,
            "data": args.data,
        }
        if args.quick:
            base["meta_batch"] = 4
        for procs in args.procs:
            result = run(base, procs)
            row = {
                "config": name,
                "device": args.device,
                "processes": procs,
                "threads_per_process": args.threads if args.device == "cpu" else None,
                "meta_batch": base["meta_batch"],
                "tasks_per_process": base["meta_batch"] / procs,
                "steps": args.steps,
                **result,
            }
            rows.append(row)
            print(name, procs, result, flush=True)
    table = pd.DataFrame(rows)
    if "tasks_per_s" in table:
        single = table[table["processes"] == 1].set_index("config")["tasks_per_s"]
        table["efficiency"] = table.apply(
            lambda r: (
                r["tasks_per_s"] / (r["processes"] * single.get(r["config"]))
                if r["config"] in single.index
                else float("nan")
            ),
            axis=1,
        )
    os.makedirs(RESULTS, exist_ok=True)
    with atomic_path(os.path.join(RESULTS, "distributed.csv")) as tmp:
        _machine.stamp(table, machine)
        table.to_csv(tmp, index=False)
    columns = [
        c
        for c in (
            "config",
            "data",
            "processes",
            "threads_per_process",
            "meta_batch",
            "tasks_per_s",
            "efficiency",
            "error",
        )
        if c in table
    ]
    with pd.option_context(
        "display.width", 200, "display.float_format", "{:.2f}".format
    ):
        print(
            "\nmeta-training tasks per second, global meta-batch split over processes"
        )
        print(table[columns].to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
