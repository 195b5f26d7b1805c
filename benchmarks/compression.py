"""Few-shot accuracy, file size and speed of pruned and int8 meta-learners.

Meta-trains ProtoNet and MAML (conv4) on Omniglot with a SHORT, time-boxed
budget, then compares on the same 5-way 1-shot evaluation episodes (unseen
alphabets): the float model, copies fine-tuned for a few steps with
`MagnitudePruning` to 50%, 80% and 90% sparsity, the float model quantized to
int8 (`quantize_weights`, post-training) and the 80% model quantized to int8.
For each: accuracy (mean and 95% CI, paired difference to the float model),
the size of the saved `.keras` file, and the median time of one forward pass
of an adapted model on the episode's query set.

The budget is minutes, not the hours of the papers: the absolute accuracies
are far below the published ones (MAML especially); the point is the
differences between the rows. Falls back to scikit-learn's digits (upsampled
to 16x16) when Omniglot is not found.

Usage:
    python benchmarks/compression.py [--seed 0] [--train-seconds 90]
        [--episodes 200] [--data ../shared/data/omniglot]

Writes benchmarks/results/compression.csv and prints a table.
"""

import argparse
import os
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "torch")  # before Keras is imported

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

import metakeras  # noqa: E402
from metakeras._io import atomic_path  # noqa: E402
from metakeras.callbacks import (  # noqa: E402
    MagnitudePruning,
    PolynomialDecay,
    compression_report,
    quantize_weights,
    strip_pruning,
)

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
SPARSITIES = (0.5, 0.8, 0.9)


class _TimeBudget(keras.callbacks.Callback):
    """Stops `fit` after `seconds` of training."""

    def __init__(self, seconds):
        super().__init__()
        self.seconds = seconds

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if time.perf_counter() - self.start > self.seconds:
            self.model.stop_training = True


def load(data):
    if data and os.path.exists(data):
        (x_train, y_train), (x_test, y_test), _ = metakeras.datasets.omniglot.load_data(
            path=data
        )
        return (
            "omniglot",
            x_train[:, None],
            y_train,
            x_test[:, None],
            y_test,
            (1, 28, 28),
        )
    from metakeras.datasets import digits

    x, y = digits.load_data()
    x = np.kron(x, np.ones((2, 2), dtype="float32"))[:, None]
    train, test = y < 5, y >= 5
    return "digits", x[train], y[train], x[test], y[test], (1, 16, 16)


def build(algorithm, shape):
    if algorithm == "protonet":
        model = metakeras.ProtoNet(metakeras.models.conv4(input_shape=shape))
        model.compile(
            optimizer=keras.optimizers.Adam(1e-3),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
    else:
        model = metakeras.MAML(
            metakeras.models.conv4(input_shape=shape, outputs=5),
            inner_steps=1,
            inner_learning_rate=0.4,
            first_order=True,
        )
        model.compile(
            optimizer=keras.optimizers.Adam(1e-3),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
    return model


def sampler(algorithm, x, y, seed, rotations=(0,), steps=400):
    # ProtoNet trains on harder (20-way) episodes than it is tested on.
    ways = min(20 if algorithm == "protonet" else 5, len(np.unique(y)))
    return metakeras.tasks.TaskSampler(
        x,
        y,
        ways=ways,
        shots=1,
        queries=5,
        meta_batch_size=4 if algorithm == "protonet" else 8,
        # A TaskSampler draws an epoch's episodes when the epoch starts:
        # keep `steps` near what the time budget can use.
        steps=steps,
        rotations=rotations,
        seed=seed,
    )


def fine_tune_pruned(model, tasks, sparsity, steps):
    """Prunes a copy of `model` to `sparsity` during `steps` more steps."""
    pruned = strip_pruning(model)  # a copy with the same weights and optimizer
    start = int(keras.ops.convert_to_numpy(pruned.optimizer.iterations))
    schedule = PolynomialDecay(
        0.0, sparsity, begin_step=start, end_step=start + steps // 2, frequency=2
    )
    pruned.fit(
        tasks,
        epochs=1,
        steps_per_epoch=steps,
        verbose=0,
        callbacks=[MagnitudePruning(schedule)],
    )
    return strip_pruning(pruned)


def inference_ms(model, episode, repeats=20):
    adapted = model.adapt(episode["support_x"][0], episode["support_y"][0])
    query = keras.ops.convert_to_tensor(episode["query_x"][0])
    times = []
    with torch.no_grad():
        adapted(query, training=False)
        for _ in range(repeats):
            start = time.perf_counter()
            adapted(query, training=False)
            times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def run(algorithm, data, args):
    name, x_train, y_train, x_test, y_test, shape = data
    keras.utils.set_random_seed(args.seed)
    model = build(algorithm, shape)
    rotations = (0, 90, 180, 270) if name == "omniglot" else (0,)
    tasks = sampler(algorithm, x_train, y_train, args.seed, rotations)
    start = time.perf_counter()
    model.fit(
        tasks,
        epochs=1,
        verbose=0,
        callbacks=[_TimeBudget(args.train_seconds)],
    )
    seconds = time.perf_counter() - start
    steps = int(keras.ops.convert_to_numpy(model.optimizer.iterations))

    fine_tune = max(10, steps // 10)
    _progress(f"{algorithm}: {steps} meta-training steps in {seconds:.0f} s")
    variants = {"float": model}
    for sparsity in SPARSITIES:
        short = sampler(
            algorithm, x_train, y_train, args.seed + 2, rotations, steps=fine_tune
        )
        variants[f"pruned {sparsity:.0%}"] = fine_tune_pruned(
            model, short, sparsity, fine_tune
        )
    int8 = strip_pruning(model)
    quantize_weights(int8, "int8")
    variants["int8"] = int8
    both = strip_pruning(variants["pruned 80%"])
    quantize_weights(both, "int8")
    variants["pruned 80% + int8"] = both

    test = metakeras.tasks.TaskSampler(
        x_test,
        y_test,
        ways=5,
        shots=1,
        queries=15,
        meta_batch_size=25,
        steps=-(-args.episodes // 25),
        seed=args.seed + 1,
    )
    with tempfile.TemporaryDirectory() as folder:
        report = compression_report(
            variants, test, episodes=args.episodes, seed=args.seed, directory=folder
        )
    episode = test[0]
    report["inference_ms"] = [inference_ms(m, episode) for m in variants.values()]
    report.insert(0, "algorithm", algorithm)
    report.insert(1, "dataset", name)
    report["train_seconds"] = round(seconds, 1)
    report["train_steps"] = steps
    report["fine_tune_steps"] = [0] + [fine_tune] * 3 + [0, fine_tune]
    return report


def _progress(message):
    print(message, flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-seconds", type=float, default=90.0)
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument(
        "--data", default=os.path.join(HERE, "..", "..", "shared", "data", "omniglot")
    )
    parser.add_argument("--algorithms", nargs="+", default=["protonet", "maml"])
    args = parser.parse_args(argv)

    data = load(args.data)
    frames = [run(algorithm, data, args) for algorithm in args.algorithms]
    table = pd.concat(frames, ignore_index=True)
    with atomic_path(os.path.join(RESULTS, "compression.csv")) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")
    shown = table[
        [
            "algorithm",
            "model",
            "sparsity",
            "mean",
            "ci95",
            "difference",
            "difference_ci95",
            "file_bytes",
            "inference_ms",
            "train_seconds",
        ]
    ].rename(columns={"mean": "accuracy"})
    print(
        f"SHORT budget: {args.train_seconds:.0f} s of meta-training per algorithm on "
        f"{data[0]} (plus a few fine-tuning steps per sparsity); 5-way 1-shot, "
        f"{args.episodes} evaluation episodes, the same for every row."
    )
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.4f}"))


if __name__ == "__main__":
    main()
