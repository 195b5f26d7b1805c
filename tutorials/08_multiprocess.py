# %% [markdown]
# # 08 · Multi-process meta-training with torchrun
#
# A meta-batch is a set of independent tasks, so it splits naturally over
# processes: each process adapts to its share of the tasks, the processes
# average their meta-gradients, and all of them take the same outer step.
# `metakeras.distributed` does this with `torch.distributed`, launched by
# PyTorch's `torchrun`: `gloo` on CPU cores, `nccl` on GPUs, on one machine
# or many.
#
# This tutorial runs `metakeras train` under `torchrun` with two processes
# on this machine (loopback, `gloo`), runs the same configuration in one
# process, and compares them. The union of the two processes' tasks is
# exactly the single-process meta-batch, so the only difference is the order
# in which floating-point numbers are summed: the two runs take the same
# steps to float32 rounding, and we will see what that rounding does over a
# long run. See `docs/distributed.md` for multi-node launches and GPUs.
#
# Outputs (under `OUTPUT`): `two_processes/model.keras`,
# `two_processes/history.csv`, `one_process/model.keras`, `comparison.csv`,
# `loss_curves.png`.

# %%
import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # metakeras runs on PyTorch

import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import keras  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from metakeras.cli import main as metakeras_command  # noqa: E402

FAST = os.environ.get("METAKERAS_TUTORIAL_FAST") == "1"
OUTPUT = os.environ.get("METAKERAS_TUTORIAL_OUTPUT", "tutorial_output")
os.makedirs(OUTPUT, exist_ok=True)

# %% [markdown]
# ## The run
#
# MAML on the MAML paper's sinusoid regression tasks (1-40-40-1 MLP). The
# `--meta-batch-size` is the *global* meta-batch: with 2 processes each one
# adapts to half of every meta-batch, and the averaged meta-gradient is the
# gradient over all of it, so the learning rate stays what it is for one
# process. The meta-batch size must be divisible by the number of
# processes (24 tasks: 12 per process).

# %%
settings = {
    "dataset": "sinusoid",
    "algorithm": "maml",
    "meta_batch_size": 24,
    "epochs": 1 if FAST else 10,
    "steps_per_epoch": 10 if FAST else 100,
    "seed": 0,
}


def as_flags(settings):
    flags = []
    for key, value in settings.items():
        flags += [f"--{key.replace('_', '-')}", str(value)]
    return flags


flags = as_flags(settings)
print("metakeras train", " ".join(flags))

# %% [markdown]
# ## Two processes with torchrun
#
# `torchrun --nproc-per-node=2 -m metakeras train ...` starts two copies of
# the command. `metakeras train` notices the variables `torchrun` sets
# (`RANK`, `WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT`), joins the process
# group, and takes its half of every meta-batch. Only rank 0 prints and
# writes files. We call `torchrun` as `python -m torch.distributed.run`,
# on a free port of the loopback interface, with one thread per process
# (two processes on two cores; `torchrun` would set `OMP_NUM_THREADS=1`
# itself, with a warning).


# %%
def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_train(flags, output_dir):
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node=2",
        "--master-addr=127.0.0.1",
        f"--master-port={free_port()}",
        "-m",
        "metakeras",
        "train",
        *flags,
        "--output-dir",
        output_dir,
        "--quiet",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", KERAS_BACKEND="torch")
    launch = subprocess.run(command, env=env, capture_output=True, text=True)
    print(launch.stdout)
    if launch.returncode != 0:
        raise RuntimeError(f"torchrun failed:\n{launch.stderr[-3000:]}")


two_dir = os.path.join(OUTPUT, "two_processes")
start = time.perf_counter()
torchrun_train(flags, two_dir)
two_seconds = time.perf_counter() - start

# %% [markdown]
# ## The same run in one process
#
# `metakeras.cli.main` is the `metakeras` command as a function; outside
# `torchrun` it trains on the whole meta-batch in this process.

# %%
one_dir = os.path.join(OUTPUT, "one_process")
start = time.perf_counter()
status = metakeras_command(["train", *flags, "--output-dir", one_dir, "--quiet"])
one_seconds = time.perf_counter() - start
assert status == 0

# %% [markdown]
# ## The same steps, to float32 rounding
#
# First a short run, 10 meta-batches, both ways. The processes start from
# rank 0's weights, train on complementary halves of the same meta-batches
# and apply the same averaged step, so every weight matches the
# one-process model to float32 rounding (about 1e-7 here).

# %%
short = as_flags({**settings, "epochs": 1, "steps_per_epoch": 10})
short_two, short_one = two_dir, one_dir  # the fast mode's run was this short
if short != flags:
    short_two = os.path.join(OUTPUT, "short_two")
    short_one = os.path.join(OUTPUT, "short_one")
    torchrun_train(short, short_two)
    command = ["train", *short, "--output-dir", short_one, "--quiet"]
    assert metakeras_command(command) == 0


def largest_difference(a_dir, b_dir):
    a = keras.models.load_model(os.path.join(a_dir, "model.keras"))
    b = keras.models.load_model(os.path.join(b_dir, "model.keras"))
    return max(
        float(np.max(np.abs(x - y))) for x, y in zip(a.get_weights(), b.get_weights())
    )


short_difference = largest_difference(short_two, short_one)
print(f"after 10 steps, largest weight difference: {short_difference:.1e}")
assert short_difference < 1e-6, short_difference

# %% [markdown]
# ## Over a long run: same loss, drifting weights
#
# Rounding differences of 1e-7 do not stay that small over hundreds of
# steps. Now and then a ReLU unit's input lies within rounding of zero for
# some task, so the unit is on in one run and off in the other; the
# gradients then differ in earnest, and Adam, which divides each gradient by
# its running size, turns a small difference on a rarely used unit into a
# full-sized step. From there the runs follow nearby but different
# trajectories. This is not the processes disagreeing: one process that
# only sums the tasks of each meta-batch in another order (reversed)
# drifts the same way. With these settings run as one epoch of 1,000 steps
# we measured the first weight difference above 1e-6 after 387 steps with
# two processes and after 378 with one process summing in reverse, both
# ending 0.024 away from the plain one-process weights, with the mean loss
# of the last 100 steps equal to 1e-4. In the full setting below (10 epochs
# of 100 steps) the epoch-10 loss was 1.372 with one process and 1.289 with
# two, while one process with seeds 1, 2 and 3 ended at 1.230, 1.355 and
# 1.169: the two runs differ less than two seeds do.
#
# So the guarantee is: the same steps to float32 rounding, and over a long
# run a model of the same quality, not the same bits. The logged loss
# covers *both* processes' tasks (the metric states are summed over the
# processes), so the curves are directly comparable.

# %%
difference = largest_difference(two_dir, one_dir)
two_history = pd.read_csv(os.path.join(two_dir, "history.csv"))
one_history = pd.read_csv(os.path.join(one_dir, "history.csv"))
comparison = pd.DataFrame(
    {
        "epoch": one_history["epoch"] + 1,
        "loss_one_process": one_history["loss"],
        "loss_two_processes": two_history["loss"],
    }
)
comparison["relative_difference"] = (
    comparison["loss_two_processes"] / comparison["loss_one_process"] - 1
)
comparison["max_weight_difference"] = difference
comparison["seconds_one_process"] = one_seconds
comparison["seconds_two_processes"] = two_seconds
comparison.to_csv(os.path.join(OUTPUT, "comparison.csv"), index=False)
print(comparison.to_string(index=False))
print(f"largest weight difference after the long run: {difference:.2e}")
# Two trajectories of the same training, a few percent apart at most.
np.testing.assert_allclose(
    comparison["loss_two_processes"], comparison["loss_one_process"], rtol=0.15
)

fig, ax = plt.subplots(figsize=(5, 3.2))
ax.plot(comparison["epoch"], comparison["loss_one_process"], "o-", label="1 process")
ax.plot(
    comparison["epoch"],
    comparison["loss_two_processes"],
    "x--",
    label="2 processes (torchrun)",
)
ax.set_xlabel("epoch")
ax.set_ylabel("query MSE after adaptation")
ax.legend()
fig.tight_layout()
fig.savefig(os.path.join(OUTPUT, "loss_curves.png"), dpi=100)
plt.close(fig)

# %% [markdown]
# ![loss curves](tutorial_output/loss_curves.png)
#
# ## Is it faster?
#
# The wall times above include starting the processes (importing PyTorch
# and Keras, several seconds each) and, for so small a network, the
# all-reduce of every step is a large part of the work: splitting pays off
# when each process has enough work per step (conv4 learners, more tasks,
# several inner steps) and cores to itself. `benchmarks/distributed.py`
# measures tasks/s with 1 and 2 processes and the scaling efficiency.
#
# ## In your own script
#
# Three changes turn a training script into a multi-process one, and it
# still runs unchanged as a plain `python train.py`:
#
# ```python
# from metakeras import distributed
#
# distributed.initialize()  # first: joins torchrun's process group
# ...                        # build and compile the model as usual
# model.fit(distributed.shard(tasks), epochs=10,
#           verbose=1 if distributed.rank() == 0 else 0)
# if distributed.rank() == 0:
#     model.save("model.keras")
# ```
#
# ```bash
# torchrun --standalone --nproc-per-node=2 train.py           # 2 CPU processes
# torchrun --standalone --nproc-per-node=4 train.py           # 4 GPUs (nccl)
# torchrun --nnodes=2 --nproc-per-node=8 --rdzv-backend=c10d \
#     --rdzv-endpoint=node0:29400 --rdzv-id=run1 train.py     # 2 machines
# ```
#
# On CPU set `OMP_NUM_THREADS` to cores / processes; on GPUs each process
# takes the GPU of its `LOCAL_RANK` (`nccl` is chosen automatically).
