"""Multi-process meta-training with `metakeras.distributed` (torchrun).

The multi-process tests launch `python -m torch.distributed.run` with two
processes on loopback (gloo, on the CPU or sharing one GPU; nccl where there
is a GPU per process); the processes run this file as a script
(`_worker`), save what they trained, and the test compares it with one
process trained here on the union of their tasks. Two launches cover it all,
to keep the start-up cost (about 8 s per launch on 2 cores) down.
"""

import json
import os
import socket
import subprocess
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "torch")  # also when run by torchrun

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from conftest import mlp, requires_cuda  # noqa: E402

import metakeras  # noqa: E402
from metakeras import distributed  # noqa: E402
from metakeras.tasks import SinusoidTasks, TaskSampler  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
ROOT = os.path.dirname(TESTS)
EPOCHS = 2
LAUNCH_TIMEOUT_S = 150


# ------------------------------------------------------------ the scenarios
# Each builds a model and its (unsharded) task source, seeded from `seed`.


def _maml(seed):
    keras.utils.set_random_seed(seed)
    model = metakeras.MAML(
        mlp(hidden=16, activation="relu"),
        inner_learning_rate=0.01,
        vectorize_tasks=True,
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse", metrics=["mae"])
    tasks = SinusoidTasks(shots=5, queries=5, meta_batch_size=4, steps=3, seed=0)
    return model, tasks


def _protonet_batchnorm(seed):
    keras.utils.set_random_seed(seed)
    learner = keras.Sequential(
        [
            keras.Input((4,)),
            # No biases: before BatchNormalization, or shifting all
            # embeddings alike, their gradient is zero up to rounding, which
            # Adam would blow up into steps that depend on summation order.
            keras.layers.Dense(16, use_bias=False),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.Dense(8, use_bias=False),
        ]
    )
    model = metakeras.ProtoNet(learner)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(8), 10)
    x = (rng.normal(size=(8, 4)) * 2)[y] + rng.normal(size=(80, 4))
    tasks = TaskSampler(
        x.astype("float32"),
        y,
        ways=3,
        shots=2,
        queries=3,
        meta_batch_size=4,
        steps=3,
        seed=0,
    )
    return model, tasks


def _reptile(seed):
    keras.utils.set_random_seed(seed)
    model = metakeras.Reptile(
        mlp(hidden=16, activation="relu"),
        inner_steps=2,
        inner_learning_rate=0.02,
        vectorize_tasks=True,
    )
    model.compile(optimizer=keras.optimizers.SGD(1.0), loss="mse")
    tasks = SinusoidTasks(shots=5, queries=5, meta_batch_size=4, steps=3, seed=1)
    return model, tasks


SCENARIOS = {"maml": _maml, "protonet_bn": _protonet_batchnorm, "reptile": _reptile}


def _train(name, tasks_for_fit_from, seed):
    model, tasks = SCENARIOS[name](seed)
    history = model.fit(
        tasks_for_fit_from(tasks), epochs=EPOCHS, shuffle=False, verbose=0
    )
    return model, history.history


# --------------------------------------------------------- the worker side


def _worker(mode, out):
    """Runs in each torchrun process."""
    # A long timeout in "fail" mode: ending the job must not rely on it.
    assert distributed.initialize(timeout=600 if mode == "fail" else 60)
    rank = distributed.rank()
    if mode == "fail":
        model, tasks = _maml(seed=0)

        class FailOnRankOne(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                if rank == 1 and batch == 1:
                    raise RuntimeError("rank 1 failed on purpose")

        model.fit(
            distributed.shard(tasks),
            epochs=50,
            callbacks=[FailOnRankOne()],
            verbose=0,
        )
        return 0
    for name in SCENARIOS:
        # A different seed per rank: `fit` must start every rank from rank
        # 0's weights.
        model, history = _train(name, distributed.shard, seed=100 + rank)
        np.savez(
            os.path.join(out, f"{name}_rank{rank}.npz"),
            *[np.asarray(w) for w in model.get_weights()],
        )
        with open(os.path.join(out, f"{name}_rank{rank}.json"), "w") as f:
            json.dump({k: [float(v) for v in vs] for k, vs in history.items()}, f)
    # `metakeras train`, each rank in its own working directory with the
    # same relative --output-dir: only rank 0's directory may fill up.
    workdir = os.path.join(out, f"cli_rank{rank}")
    os.makedirs(workdir)
    os.chdir(workdir)
    from metakeras.cli import main

    return main(
        [
            "train",
            "--dataset",
            "sinusoid",
            "--meta-batch-size",
            "4",
            "--epochs",
            "2",
            "--steps-per-epoch",
            "2",
            "--hidden",
            "8",
            "--output-dir",
            "out",
        ]
    )


# --------------------------------------------------------- the test side


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(mode, out, timeout=LAUNCH_TIMEOUT_S, processes=2, backend=None):
    paths = [ROOT, HERE, TESTS] + [p for p in [os.environ.get("PYTHONPATH")] if p]
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        KERAS_BACKEND="torch",
        MPLBACKEND="Agg",
        PYTHONPATH=os.pathsep.join(paths),
    )
    if backend is None and torch.cuda.device_count() < processes:
        # nccl needs one GPU per process; gloo lets processes share one GPU
        # (or run on the CPU).
        backend = "gloo"
    if backend is not None:
        env["METAKERAS_DIST_BACKEND"] = backend
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc-per-node={processes}",
        "--master-addr=127.0.0.1",
        f"--master-port={_free_port()}",
        os.path.abspath(__file__),
        mode,
        str(out),
    ]
    start = time.perf_counter()
    result = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=timeout
    )
    return result, time.perf_counter() - start


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("two_ranks")
    result, seconds = _launch("train", out)
    assert result.returncode == 0, result.stderr[-4000:]
    print(f"two-process launch: {seconds:.1f} s")
    return out, result


def _load(out, name, rank):
    with np.load(os.path.join(out, f"{name}_rank{rank}.npz")) as data:
        weights = [data[f"arr_{i}"] for i in range(len(data.files))]
    with open(os.path.join(out, f"{name}_rank{rank}.json")) as f:
        return weights, json.load(f)


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_two_processes_equal_one_process_on_the_union(two_ranks, name):
    out, _ = two_ranks
    # One process, rank 0's initial weights, the whole meta-batch each step.
    reference, history = _train(name, lambda tasks: tasks, seed=100)
    expected = reference.get_weights()
    for rank in (0, 1):
        weights, logs = _load(out, name, rank)
        assert len(weights) == len(expected)
        for got, want in zip(weights, expected):
            np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
        # The logged loss and metrics cover both ranks' tasks: the numbers
        # one process reports for the union.
        assert set(logs) == set(history)
        for key in history:
            np.testing.assert_allclose(logs[key], history[key], rtol=1e-5, atol=1e-6)


def test_ranks_hold_identical_weights_and_logs(two_ranks):
    out, _ = two_ranks
    for name in SCENARIOS:
        weights0, logs0 = _load(out, name, 0)
        weights1, logs1 = _load(out, name, 1)
        for a, b in zip(weights0, weights1):
            np.testing.assert_array_equal(a, b)
        assert logs0 == logs1
    # BatchNormalization's moving statistics moved, and stayed in sync.
    weights, _ = _load(out, "protonet_bn", 0)
    model, _ = _protonet_batchnorm(seed=100)
    moving = [
        i for i, v in enumerate(model.weights) if "moving" in v.path and v.shape[0]
    ]
    assert len(moving) == 2
    for i in moving:
        assert not np.allclose(weights[i], model.get_weights()[i])


def test_cli_under_torchrun_writes_on_rank_zero_only(two_ranks):
    out, result = two_ranks
    run = os.path.join(out, "cli_rank0", "out")
    for name in ("config.json", "model.keras", "history.csv", "training_curves.png"):
        assert os.path.getsize(os.path.join(run, name)) > 0, name
    assert os.path.isfile(os.path.join(run, "backup", "training_metadata.json"))
    assert os.listdir(os.path.join(out, "cli_rank1")) == []
    with open(os.path.join(run, "history.csv")) as f:
        assert len(f.read().strip().splitlines()) == 1 + 2  # header + 2 epochs
    # Only rank 0 printed: one header, one progress bar, one summary.
    assert result.stdout.count("metakeras train: maml on sinusoid") == 1
    assert result.stdout.count("Epoch 1/2") == 1
    assert result.stdout.count("wall time:") == 1


@requires_cuda
def test_torchrun_with_nccl_on_one_gpu_per_process(tmp_path):
    # As many processes as GPUs (one on a one-GPU machine), with nccl.
    processes = torch.cuda.device_count()
    result, _ = _launch("train", tmp_path, processes=processes, backend="nccl")
    assert result.returncode == 0, result.stderr[-4000:]
    reference, _ = _train("maml", lambda tasks: tasks, seed=100)
    weights, _ = _load(tmp_path, "maml", 0)
    for got, want in zip(weights, reference.get_weights()):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_a_failing_rank_ends_the_job_with_an_error(tmp_path):
    # Rank 0 waits in an all-reduce for rank 1, which has failed: torchrun
    # must end the job long before rank 0's collective timeout (600 s).
    try:
        result, seconds = _launch("fail", tmp_path, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("the job hung after rank 1 failed")
    assert result.returncode != 0
    assert "rank 1 failed on purpose" in result.stderr
    # torchrun's summary names the failed rank.
    assert "ChildFailedError" in result.stderr
    assert "rank      : 1" in result.stderr
    print(f"failed job ended after {seconds:.1f} s")


# ------------------------------------------------------ in-process checks


def test_single_process_helpers_are_no_ops(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    assert not distributed.is_distributed()
    assert distributed.rank() == 0 and distributed.world_size() == 1
    assert distributed.initialize() is False
    tensors = [torch.ones(2), torch.arange(3)]
    assert distributed.all_reduce_mean(tensors) is tensors
    tasks = SinusoidTasks(meta_batch_size=3, seed=0)
    assert distributed.shard(tasks) is tasks


def test_shards_partition_every_meta_batch():
    x = np.random.default_rng(0).normal(size=(60, 4)).astype("float32")
    y = np.repeat(np.arange(6), 10)
    sampler = TaskSampler(
        x, y, ways=3, shots=1, queries=2, meta_batch_size=6, steps=2, seed=3
    )
    shards = [distributed.shard(sampler, rank=r, world_size=3) for r in range(3)]
    assert [len(s) for s in shards] == [2, 2, 2]
    assert shards[0].meta_batch_size == 2
    for index in range(2):
        whole = sampler[index]
        parts = [s[index] for s in shards]
        assert set(parts[0]) == set(whole)  # `classes` is sliced too
        for key in whole:
            np.testing.assert_array_equal(
                np.concatenate([p[key] for p in parts]), whole[key]
            )
    # Epochs advance the shared sampler.
    before = shards[0][0]["support_x"]
    shards[0].on_epoch_end()
    assert sampler.epoch == 1
    assert not np.array_equal(shards[0][0]["support_x"], before)


def test_tuple_batches_are_sliced():
    class Tuples(keras.utils.PyDataset):
        def __len__(self):
            return 1

        def __getitem__(self, index):
            return tuple(np.arange(8).reshape(4, 2) + i for i in range(4))

    part = distributed.shard(Tuples(), rank=1, world_size=2)[0]
    assert isinstance(part, tuple) and len(part) == 4
    np.testing.assert_array_equal(part[0], [[4, 5], [6, 7]])


def test_meta_batch_not_divisible_by_world_size():
    tasks = SinusoidTasks(meta_batch_size=10, seed=0)
    with pytest.raises(ValueError, match=r"meta_batch_size=10, world_size=3.*9 or 12"):
        distributed.shard(tasks, rank=0, world_size=3)


def test_bad_arguments():
    tasks = SinusoidTasks(meta_batch_size=4, seed=0)
    with pytest.raises(ValueError, match=r"`rank` must be an integer in \[0, 2\)"):
        distributed.shard(tasks, rank=2, world_size=2)
    with pytest.raises(ValueError, match="`world_size` must be a positive integer"):
        distributed.shard(tasks, rank=0, world_size=0)
    with pytest.raises(ValueError, match="`tasks` must be a keras.utils.PyDataset"):
        distributed.shard({"support_x": np.zeros((4, 1))}, rank=0, world_size=2)


def test_bad_environment_and_settings(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    with pytest.raises(ValueError, match="not MASTER_ADDR, MASTER_PORT"):
        distributed.initialize()
    # Under torchrun without initialize(), sharding would silently skip
    # the gradient averaging.
    with pytest.raises(ValueError, match="Call metakeras.distributed.initialize"):
        distributed.shard(SinusoidTasks(meta_batch_size=4, seed=0))
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(_free_port()))
    with pytest.raises(
        ValueError, match=r"`backend` must be one of \('gloo', 'nccl'\)"
    ):
        distributed.initialize(backend="tcp")
    with pytest.raises(ValueError, match="`timeout` must be a positive number"):
        distributed.initialize(backend="gloo", timeout=0)
    monkeypatch.setenv("METAKERAS_DIST_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="METAKERAS_DIST_TIMEOUT"):
        distributed.initialize(backend="gloo")


def test_a_missing_process_times_out_with_a_clear_error(monkeypatch):
    # Rank 0 of 2, alone: joining gives up after the timeout.
    for name, value in (("RANK", "0"), ("WORLD_SIZE", "2")):
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(_free_port()))
    start = time.perf_counter()
    with pytest.raises(
        RuntimeError,
        match=r"Process 0 of 2 could not join the gloo process group at "
        r"127\.0\.0\.1:\d+ within 2 s.*Check that every process was started",
    ):
        distributed.initialize(backend="gloo", timeout=2)
    assert time.perf_counter() - start < 30
    assert not distributed.is_distributed()


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1], sys.argv[2]))
