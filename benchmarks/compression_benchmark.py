"""Few-shot accuracy, file size and speed of pruned and int8 meta-learners.

Meta-trains ProtoNet and MAML (conv4) on Omniglot with a SHORT, time-boxed
budget, then compares on the same 5-way 1-shot evaluation episodes (unseen
alphabets): the float model, copies fine-tuned for a few steps with
`MagnitudePruning` to 50%, 80% and 90% sparsity, the float model quantized to
int8 (`quantize_weights`, post-training) and the 80% model quantized to int8.
For each: accuracy (mean and 95% CI, paired difference to the float model),
the size of the saved `.keras` file (optimizer state included) and of the
learner's file alone, and the median time of one forward pass of an adapted
model on the episode's query set.

MAML from scratch needs thousands of meta-steps on Omniglot, far beyond a
CPU budget of minutes (a few hundred first-order steps reach ~30%). So, by
default (`--maml-init protonet`), MAML starts from the ProtoNet embedding
just meta-trained here and a zero head (a zero head makes the first inner
step produce prototype-like class weights, as in Proto-MAML), then trains
`--maml-seconds` of first-order MAML. `--maml-init scratch` trains from a
random initialisation instead. With `--cache DIR` the trained float models
are saved there and reused by later runs (no training then).

The budget is minutes, not the hours of the papers: the absolute accuracies
are below the published ones; the point is the differences between the
rows. Falls back to scikit-learn's digits (upsampled to 16x16) when Omniglot
is not found.

Usage:
    python benchmarks/compression_benchmark.py [--seed 0] [--train-seconds 120]
        [--maml-seconds 150] [--maml-init protonet|scratch] [--cache DIR]
        [--episodes 200] [--data ../shared/data/omniglot]

Writes benchmarks/results/compression.csv and prints a table.
"""

import argparse
import os
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "torch")  # before Keras is imported

import _machine  # noqa: E402  (benchmarks/, the script's folder)
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


def build(algorithm, shape, embedding=None):
    """A compiled conv4 ProtoNet or first-order MAML.

    For MAML, `embedding` (a trained conv4 embedding) gives the starting
    weights of the convolution blocks; the head then starts at zero.
    """
    if algorithm == "protonet":
        model = metakeras.ProtoNet(metakeras.models.conv4(input_shape=shape))
        model.compile(
            optimizer=keras.optimizers.Adam(1e-3),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
    else:
        learner = metakeras.models.conv4(input_shape=shape, outputs=5)
        if embedding is not None:
            for layer in embedding.layers:
                if layer.weights:
                    learner.get_layer(layer.name).set_weights(layer.get_weights())
            head = learner.get_layer("head")
            head.set_weights([np.zeros_like(w) for w in head.get_weights()])
        model = metakeras.MAML(
            learner,
            inner_steps=1,
            inner_learning_rate=0.4,
            first_order=True,
            # Batch statistics of the query set at evaluation, as the MAML
            # reference code does.
            transductive_eval=True,
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


def train(algorithm, data, args, trained):
    """The trained float model, its training seconds and meta-steps.

    Reuses `<cache>/<algorithm>_<dataset>_seed<seed>.keras` when present.
    """
    name, x_train, y_train, _, _, shape = data
    cached = None
    if args.cache:
        cached = os.path.join(args.cache, f"{algorithm}_{name}_seed{args.seed}.keras")
        if os.path.exists(cached):
            model = keras.models.load_model(cached)
            _progress(f"{algorithm}: reusing the trained model {cached}")
            steps = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
            return model, float("nan"), steps
    keras.utils.set_random_seed(args.seed)
    embedding = None
    seconds = args.train_seconds
    if algorithm == "maml":
        seconds = args.maml_seconds
        if args.maml_init == "protonet":
            protonet = trained.get("protonet")
            if protonet is None:
                protonet = train("protonet", data, args, trained)[0]
            embedding = protonet.learner
    model = build(algorithm, shape, embedding)
    rotations = (0, 90, 180, 270) if name == "omniglot" else (0,)
    tasks = sampler(algorithm, x_train, y_train, args.seed, rotations)
    start = time.perf_counter()
    model.fit(tasks, epochs=1, verbose=0, callbacks=[_TimeBudget(seconds)])
    seconds = time.perf_counter() - start
    steps = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
    if cached:
        os.makedirs(args.cache, exist_ok=True)
        model.save(cached)
    trained[algorithm] = model
    return model, seconds, steps


def run(algorithm, data, args, trained):
    name, x_train, y_train, x_test, y_test, shape = data
    model, seconds, steps = train(algorithm, data, args, trained)
    rotations = (0, 90, 180, 270) if name == "omniglot" else (0,)
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
    report["init"] = (
        f"protonet embedding + {steps} FOMAML steps"
        if algorithm == "maml" and args.maml_init == "protonet"
        else "scratch"
    )
    return report


def _progress(message):
    print(message, flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--train-seconds", type=float, default=120.0, help="ProtoNet training"
    )
    parser.add_argument(
        "--maml-seconds", type=float, default=150.0, help="MAML training"
    )
    parser.add_argument(
        "--maml-init", choices=("protonet", "scratch"), default="protonet"
    )
    parser.add_argument(
        "--cache", default=None, help="folder to save and reuse trained models"
    )
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument(
        "--data", default=os.path.join(HERE, "..", "..", "shared", "data", "omniglot")
    )
    parser.add_argument("--algorithms", nargs="+", default=["protonet", "maml"])
    _machine.add_arguments(parser)
    args = parser.parse_args(argv)
    machine = _machine.check_quiet(args)

    data = load(args.data)
    trained = {}
    frames = [run(algorithm, data, args, trained) for algorithm in args.algorithms]
    table = pd.concat(frames, ignore_index=True)
    with atomic_path(os.path.join(RESULTS, "compression.csv")) as tmp:
        _machine.stamp(table, machine)
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
            "learner_bytes",
            "inference_ms",
            "train_seconds",
        ]
    ].rename(columns={"mean": "accuracy"})
    print(
        f"SHORT budget: {args.train_seconds:.0f} s of ProtoNet and "
        f"{args.maml_seconds:.0f} s of MAML meta-training (MAML from "
        f"{args.maml_init}) on {data[0]} (plus a few fine-tuning steps per "
        f"sparsity); 5-way 1-shot, {args.episodes} evaluation episodes, the same "
        "for every row."
    )
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.4f}"))


if __name__ == "__main__":
    main()
