# %% [markdown]
# # 01 · Quickstart: MAML on sinusoids, the Keras way
#
# Meta-learning trains a model on *many small tasks* so that it can learn a
# *new* task from a handful of examples. The classic toy problem (Finn et al.,
# 2017) is sinusoid regression: every task is a curve `y = A sin(x - phase)`
# with its own amplitude and phase, and we only see 5 points of it.
#
# A network trained on the pooled points of all tasks learns the average
# curve, which is flat (phases cancel out). MAML instead learns an
# *initialisation* from which one or a few gradient steps on the 5 points give
# a good fit for that particular curve.
#
# metakeras keeps the Keras workflow you know: `compile` configures the outer
# (meta) update, `fit` takes a task source, callbacks work, `evaluate` reports
# query-set metrics after adaptation, and `.keras` files round-trip.
#
# Outputs (under `OUTPUT`): `history.csv`, `sinusoid_tasks.png`,
# `training_curves.png`, `maml_sinusoid.keras`.

# %%
import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # metakeras runs on PyTorch

import keras  # noqa: E402
import numpy as np  # noqa: E402

import metakeras  # noqa: E402
from metakeras.plots import plot_history  # noqa: E402

FAST = os.environ.get("METAKERAS_TUTORIAL_FAST") == "1"
OUTPUT = os.environ.get("METAKERAS_TUTORIAL_OUTPUT", "tutorial_output")
os.makedirs(OUTPUT, exist_ok=True)
keras.utils.set_random_seed(0)

# %% [markdown]
# ## Tasks
#
# `SinusoidTasks` is a `keras.utils.PyDataset`: every item is one *meta-batch*
# of `meta_batch_size` tasks in the episode contract, a dict of
# `support_x (T, K, 1)`, `support_y`, `query_x (T, Q, 1)`, `query_y`. The
# support set is what the model adapts on; the query set is what it is scored
# on, so the meta-objective is "do well *after* adapting".

# %%
train_tasks = metakeras.tasks.SinusoidTasks(
    shots=5, queries=10, meta_batch_size=25, steps=10 if FAST else 200, seed=0
)
batch = train_tasks[0]
print({key: value.shape for key, value in batch.items()})

# %% [markdown]
# ## Model
#
# The learner is any Keras model; here the paper's 1-40-40-1 ReLU network.
# `MAML` wraps it with the inner loop (one gradient step at 0.01 per task).
# `vectorize_tasks=True` runs the 25 tasks of a meta-batch at once under
# `torch.func.vmap`, much faster for a small dense network.

# %%
learner = keras.Sequential(
    [
        keras.Input((1,)),
        keras.layers.Dense(40, activation="relu"),
        keras.layers.Dense(40, activation="relu"),
        keras.layers.Dense(1),
    ],
    name="sinusoid_mlp",
)
model = metakeras.MAML(
    learner, inner_steps=1, inner_learning_rate=0.01, vectorize_tasks=True
)
model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse", metrics=["mae"])

# %% [markdown]
# ## Meta-training with callbacks
#
# `fit` returns a `History`; the logged `loss` is the query-set MSE *after*
# adaptation. Keras callbacks work unchanged: `CSVLogger` keeps the curve on
# disk, `EarlyStopping` watches the validation loss on a fixed set of tasks
# (`resample=False` draws the same tasks every epoch).

# %%
validation = metakeras.tasks.SinusoidTasks(
    shots=5, queries=10, meta_batch_size=25, steps=2, seed=1, resample=False
)
history = model.fit(
    train_tasks,
    validation_data=validation,
    epochs=2 if FAST else 10,
    callbacks=[
        keras.callbacks.CSVLogger(os.path.join(OUTPUT, "history.csv")),
        keras.callbacks.EarlyStopping(patience=3, restore_best_weights=True),
    ],
    verbose=0 if FAST else "auto",
)
plot_history(history, os.path.join(OUTPUT, "training_curves.png"))
print("final query MSE after adaptation:", history.history["loss"][-1])

# %% [markdown]
# ![training curves](tutorial_output/training_curves.png)
#
# ## Evaluate, adapt, predict
#
# `evaluate` scores held-out tasks after adaptation, exactly like training.
# `adapt` takes one task's support set and returns an ordinary `keras.Model`
# for that task; the meta-learned weights stay untouched, so you can adapt to
# as many tasks as you like.

# %%
test_tasks = metakeras.tasks.SinusoidTasks(
    shots=5, queries=10, meta_batch_size=25, steps=2, seed=2, resample=False
)
print("test:", model.evaluate(test_tasks, verbose=0, return_dict=True))

task = metakeras.tasks.SinusoidTasks(
    shots=5, queries=10, meta_batch_size=3, steps=1, seed=3
).as_episodes()
grid = np.linspace(-5, 5, 100, dtype="float32")[:, None]

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

fig, axes = plt.subplots(1, 3, figsize=(12, 3.2), sharey=True)
for i, ax in enumerate(axes):
    adapted = model.adapt(task["support_x"][i], task["support_y"][i], inner_steps=10)
    truth = task["amplitude"][i] * np.sin(grid[:, 0] - task["phase"][i])
    ax.plot(grid, truth, "k", lw=2, label="true curve")
    ax.plot(grid, model.predict(grid, verbose=0), ":", label="meta-learned init")
    ax.plot(grid, adapted.predict(grid, verbose=0), label="after 10 steps")
    ax.scatter(task["support_x"][i], task["support_y"][i], c="red", label="5 points")
axes[0].legend(fontsize=7)
fig.tight_layout()
fig.savefig(os.path.join(OUTPUT, "sinusoid_tasks.png"), dpi=90)
plt.close(fig)

# %% [markdown]
# ![adapted tasks](tutorial_output/sinusoid_tasks.png)
#
# ## Save and load
#
# A `MetaModel` is a Keras model: `save` writes the learner, the inner-loop
# settings, the optimizer state and the compile settings; `load_model` gives
# back a model that can keep training or adapting.

# %%
path = os.path.join(OUTPUT, "maml_sinusoid.keras")
model.save(path)
restored = keras.models.load_model(path)
same = restored.adapt(task["support_x"][0], task["support_y"][0], inner_steps=10)
original = model.adapt(task["support_x"][0], task["support_y"][0], inner_steps=10)
gap = np.max(np.abs(same.predict(grid, verbose=0) - original.predict(grid, verbose=0)))
print(f"restored vs original, after adapting 10 steps: largest difference {gap:.1e}")
assert gap < 1e-5, gap

# %% [markdown]
# ## What next
#
# - `02_few_shot_omniglot.py`: few-shot image classification.
# - `metakeras train --dataset sinusoid` does all of this from the command
#   line, with resumable training.
