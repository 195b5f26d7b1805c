"""Few-shot accuracy on real Omniglot: train on background, test on evaluation.

Meta-trains each algorithm on the background alphabets (964 characters x 4
rotations = 3,856 classes, 28x28) for a wall-clock budget, then evaluates
600 episodes each of 5-way 1-shot and 20-way 1-shot on the 659 characters of
the evaluation alphabets, reporting accuracy with its 95% CI. The data is
read from `../shared/data/omniglot` (or `METAKERAS_DATA`, or downloaded).

Settings (`--algorithm`):
- `protonet`: conv4 embedding, 30-way 1-shot 5-query training episodes,
  Adam 1e-3 halved every 1,000 episodes (the plain-PyTorch floor's recipe).
- `fomaml`, `maml`, `anil`: conv4 + head, 5-way 1-shot 15-query, meta-batch
  `--meta-batch`, one inner step at 0.4 in training, 3 at test.

Usage:
    python benchmarks/omniglot.py --algorithm protonet --minutes 15

Appends to benchmarks/results/omniglot.csv and prints the table.
"""

import argparse
import os
import time

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is imported

import keras  # noqa: E402
import pandas as pd  # noqa: E402

import metakeras  # noqa: E402
from metakeras._io import atomic_path  # noqa: E402
from metakeras.datasets import omniglot  # noqa: E402
from metakeras.evaluation import evaluate_episodes  # noqa: E402
from metakeras.tasks import TaskSampler  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.join(HERE, "..", "..", "shared", "data", "omniglot")


class TimeBudget(keras.callbacks.Callback):
    """Stops training once `seconds` of wall time have passed."""

    def __init__(self, seconds):
        super().__init__()
        self.seconds = seconds

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()
        self.batches = 0

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1
        if time.perf_counter() - self.start > self.seconds:
            self.model.stop_training = True


def build(algorithm, meta_batch, inner_lr):
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    if algorithm == "protonet":
        model = metakeras.ProtoNet(metakeras.models.conv4())
        schedule = keras.optimizers.schedules.ExponentialDecay(
            1e-3, decay_steps=1000, decay_rate=0.5, staircase=True
        )
        train = dict(ways=30, shots=1, queries=5, meta_batch_size=1)
    else:
        cls = {
            "maml": metakeras.MAML,
            "fomaml": metakeras.MAML,
            "anil": metakeras.ANIL,
        }[algorithm]
        kwargs = {"first_order": True} if algorithm == "fomaml" else {}
        model = cls(
            metakeras.models.conv4(outputs=5),
            inner_steps=1,
            inner_learning_rate=inner_lr,
            **kwargs,
        )
        schedule = 1e-3
        train = dict(ways=5, shots=1, queries=15, meta_batch_size=meta_batch)
    model.compile(
        optimizer=keras.optimizers.Adam(schedule), loss=loss, metrics=["accuracy"]
    )
    return model, train


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--algorithm",
        default="protonet",
        choices=["protonet", "maml", "fomaml", "anil"],
    )
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--meta-batch", type=int, default=16)
    parser.add_argument("--inner-lr", type=float, default=0.4)
    parser.add_argument("--test-steps", type=int, default=3)
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default=SHARED if os.path.isdir(SHARED) else None)
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(args.seed)
    (x_bg, y_bg), (x_ev, y_ev), info = omniglot.load_data(path=args.data)
    model, train = build(args.algorithm, args.meta_batch, args.inner_lr)
    sampler = TaskSampler(
        x_bg, y_bg, rotations=(0, 90, 180, 270), steps=1000, seed=args.seed, **train
    )
    budget = TimeBudget(args.minutes * 60)
    start = time.perf_counter()
    model.fit(sampler, epochs=10_000, verbose=0, callbacks=[budget])
    train_seconds = time.perf_counter() - start

    rows = []
    for ways in (5, 20):
        if args.algorithm != "protonet" and ways != 5:
            continue  # the MAML heads here have 5 outputs
        test = TaskSampler(
            x_ev,
            y_ev,
            ways=ways,
            shots=1,
            queries=15,
            meta_batch_size=20,
            steps=args.episodes // 20,
            seed=args.seed + 1,
            resample=False,
        )
        steps = None if args.algorithm == "protonet" else args.test_steps
        result = evaluate_episodes(
            model, test, episodes=args.episodes, steps=steps, metrics=["accuracy"]
        )
        mean, ci95 = result.mean("accuracy")
        rows.append(
            {
                "algorithm": args.algorithm,
                "test": f"{ways}-way 1-shot",
                "accuracy": mean,
                "ci95": ci95,
                "episodes": args.episodes,
                "train_minutes": round(train_seconds / 60, 1),
                "meta_batches": budget.batches,
                "tasks_seen": budget.batches * train["meta_batch_size"],
                "train_setting": f"{train['ways']}-way {train['shots']}-shot {train['queries']}-query x{train['meta_batch_size']}",
                "test_steps": steps,
                "data_check": info["check"],
            }
        )
    table = pd.DataFrame(rows)
    print(table.to_string(index=False))
    path = os.path.join(HERE, "results", "omniglot.csv")
    if os.path.exists(path):
        table = pd.concat([pd.read_csv(path), table], ignore_index=True)
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)


if __name__ == "__main__":
    main()
