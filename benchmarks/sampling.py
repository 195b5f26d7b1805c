"""Episode sampling throughput beside MAML's consumption speed.

Measures, on 28x28 Omniglot (the archives in ../shared/data/omniglot when
present, else scikit-learn's digits):

- the full-dataset load time, cold (no cache) and cached;
- `TaskSampler` episodes per second for 5-way 1-shot 15-query and 20-way
  5-shot 15-query episodes (x4 rotations on Omniglot), with 0 workers
  (direct `sampler[i]` calls) and 2 workers (a Keras PyDataset iteration);
- MAML's consumption speed: tasks per second of `metakeras.MAML` on a conv4
  channels_first learner, 5-way 1-shot, meta-batch 4, `train_on_batch`.

Sampling must be at least 20x faster than MAML consumes tasks. Prints a
table and writes benchmarks/results/sampling.csv.

Usage: python benchmarks/sampling.py [--batches 30] [--maml-steps 4]
"""

import argparse
import os
import pathlib
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "torch")

import _machine  # noqa: E402  (benchmarks/, the script's folder)
import keras  # noqa: E402
import pandas as pd  # noqa: E402
from keras.src.trainers.data_adapters.py_dataset_adapter import (  # noqa: E402
    PyDatasetAdapter,
)

import metakeras  # noqa: E402
from metakeras._io import atomic_path  # noqa: E402
from metakeras.datasets import digits, omniglot  # noqa: E402
from metakeras.tasks import TaskSampler  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
OMNIGLOT = HERE.parents[1] / "shared" / "data" / "omniglot"
RESULTS = HERE / "results" / "sampling.csv"
SETTINGS = [("5-way 1-shot 15-query", 5, 1, 15), ("20-way 5-shot 15-query", 20, 5, 15)]


def load(cache_dir):
    """Returns `(x, y, rotations, dataset name, rows of load timings)`."""
    if (OMNIGLOT / "images_background.zip").exists():
        start = time.perf_counter()
        (x, y), _, _ = omniglot.load_data(OMNIGLOT, image_size=28, cache_dir=cache_dir)
        cold = time.perf_counter() - start
        start = time.perf_counter()
        (x, y), _, info = omniglot.load_data(
            OMNIGLOT, image_size=28, cache_dir=cache_dir
        )
        cached = time.perf_counter() - start
        assert info["from_cache"]
        name = "omniglot 28x28: load both sets, sample background x4 rotations"
        return x, y, (0, 90, 180, 270), name, cold, cached
    start = time.perf_counter()
    x, y = digits.load_data()
    seconds = time.perf_counter() - start
    return x, y, (0,), "digits 8x8", seconds, seconds


def sampling_rate(x, y, ways, shots, queries, rotations, workers, batches):
    kwargs = dict(
        ways=ways,
        shots=shots,
        queries=queries,
        meta_batch_size=32,
        steps=batches,
        rotations=rotations,
        seed=0,
    )
    if workers == 0:
        sampler = TaskSampler(x, y, **kwargs)
        sampler[0]  # first-use costs out of the timing
        start = time.perf_counter()
        for index in range(batches):
            sampler[index]
    else:
        sampler = TaskSampler(x, y, workers=workers, **kwargs)
        adapter = PyDatasetAdapter(sampler, shuffle=False)
        start = time.perf_counter()
        count = sum(1 for _ in adapter.get_numpy_iterator())
        assert count == batches
        adapter.on_epoch_end()
    return batches * 32 / (time.perf_counter() - start)


def conv4(ways, image_size=28, filters=64):
    layers = [keras.Input((1, image_size, image_size))]
    for _ in range(4):
        layers += [
            keras.layers.Conv2D(
                filters, 3, padding="same", data_format="channels_first"
            ),
            keras.layers.BatchNormalization(axis=1),
            keras.layers.ReLU(),
            keras.layers.MaxPooling2D(2, data_format="channels_first"),
        ]
    layers += [keras.layers.Flatten(), keras.layers.Dense(ways)]
    return keras.Sequential(layers, name="conv4")


def maml_rate(x, y, rotations, steps):
    keras.utils.set_random_seed(0)
    size = x.shape[-1]
    sampler = TaskSampler(
        x,
        y,
        ways=5,
        shots=1,
        queries=15,
        meta_batch_size=4,
        steps=steps + 1,
        rotations=rotations,
        seed=0,
    )
    model = metakeras.MAML(conv4(5, image_size=size), inner_learning_rate=0.4)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.train_on_batch(sampler[0])  # build and warm up
    start = time.perf_counter()
    for index in range(1, steps + 1):
        model.train_on_batch(sampler[index])
    return steps * 4 / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--maml-steps", type=int, default=4)
    _machine.add_arguments(parser)
    args = parser.parse_args()
    machine = _machine.check_quiet(args)
    rows = []
    with tempfile.TemporaryDirectory() as cache_dir:
        x, y, rotations, name, cold, cached = load(cache_dir)
    rows.append(dict(measure="load, cold (no cache)", dataset=name, seconds=cold))
    rows.append(dict(measure="load, cached", dataset=name, seconds=cached))
    maml = maml_rate(x, y, rotations, args.maml_steps)
    rows.append(
        dict(
            measure="MAML consumption, conv4 5-way 1-shot, meta-batch 4",
            dataset=name,
            workers=0,
            per_second=maml,
        )
    )
    for label, ways, shots, queries in SETTINGS:
        for workers in (0, 2):
            rate = sampling_rate(
                x, y, ways, shots, queries, rotations, workers, args.batches
            )
            rows.append(
                dict(
                    measure=f"sampling {label}",
                    dataset=name,
                    workers=workers,
                    per_second=rate,
                    x_maml=rate / maml,
                )
            )
    table = pd.DataFrame(
        rows,
        columns=["measure", "dataset", "workers", "per_second", "x_maml", "seconds"],
    )
    table["workers"] = table["workers"].astype("Int64")
    with pd.option_context(
        "display.width", 160, "display.float_format", "{:.2f}".format
    ):
        print(table.to_string(index=False))
    slowest = table.loc[table["measure"].str.startswith("sampling"), "x_maml"].min()
    print(
        f"\nSlowest sampling setting is {slowest:.0f}x MAML's consumption "
        f"({'meets' if slowest >= 20 else 'MISSES'} the 20x target). "
        "per_second: episodes (sampling) or tasks (MAML) per second."
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(RESULTS) as tmp:
        _machine.stamp(table, machine)
        table.to_csv(tmp, index=False)
    print(f"Wrote {RESULTS}")


if __name__ == "__main__":
    main()
