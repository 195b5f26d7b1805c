# %% [markdown]
# # 07 · Saving, loading, and fine-tuning a plain Keras model
#
# A meta-learned model is most useful *outside* the meta-learning code: a
# colleague, a service or an edge device should be able to take the learned
# starting point and fine-tune it on its own few examples with nothing but
# Keras. metakeras separates the two things a run produces:
#
# - the **whole `MetaModel`** (`model.save("maml.keras")`): learner, inner
#   loop settings, optimizer state. Load it to continue meta-training or to
#   evaluate with the same inner loop.
# - the **initialisation alone** (`export_initialization`): the learner with
#   its meta-learned weights, as a plain Keras model. Load it with
#   `keras.models.load_model` and `fit` it like any model, or copy its
#   weights into another learner with `load_initial_weights`.
#
# The question this tutorial answers with a plot: does ordinary Keras
# fine-tuning from the meta-learned initialisation beat the same fine-tuning
# from random weights, when a task has only 10 examples?
#
# Outputs (under `OUTPUT`): `maml.keras`, `initialization.keras`,
# `finetune_curves.png`, `finetune_task.png`.

# %%
import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # metakeras runs on PyTorch

import keras  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import metakeras  # noqa: E402
from metakeras.initializers import export_initialization, load_initial_weights  # noqa: E402

FAST = os.environ.get("METAKERAS_TUTORIAL_FAST") == "1"
OUTPUT = os.environ.get("METAKERAS_TUTORIAL_OUTPUT", "tutorial_output")
os.makedirs(OUTPUT, exist_ok=True)
keras.utils.set_random_seed(0)


def regressor(name):
    return keras.Sequential(
        [
            keras.Input((1,)),
            keras.layers.Dense(40, activation="relu"),
            keras.layers.Dense(40, activation="relu"),
            keras.layers.Dense(1),
        ],
        name=name,
    )


# %% [markdown]
# ## 1. Meta-train and save the whole model
#
# MAML on sinusoid tasks (tutorial 01), with 10 support points per task.
# Plain SGD at the inner learning rate is exactly what fine-tuning will use
# later, so meta-training prepares the weights for that very procedure.

# %%
INNER_LR = 0.01
maml = metakeras.MAML(
    regressor("learner"),
    inner_steps=1,
    inner_learning_rate=INNER_LR,
    vectorize_tasks=True,
)
maml.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
train = metakeras.tasks.SinusoidTasks(shots=10, steps=20 if FAST else 300, seed=0)
maml.fit(train, epochs=1 if FAST else 6, verbose=0)
maml.save(os.path.join(OUTPUT, "maml.keras"))

# %% [markdown]
# Loading the whole model gives back a `MAML` that can keep training: the
# optimizer state is in the file, so a second `fit` continues the same run.

# %%
restored = keras.models.load_model(os.path.join(OUTPUT, "maml.keras"))
print(type(restored).__name__, restored.inner, "optimizer steps:",
      int(restored.optimizer.iterations))  # fmt: skip
restored.fit(train, epochs=1, steps_per_epoch=2, verbose=0)

# %% [markdown]
# ## 2. Export the initialisation, fine-tune with plain Keras
#
# `export_initialization` writes just the learner. The file has nothing of
# metakeras in it, so this part works in any Keras 3 program.

# %%
init_path = export_initialization(maml, os.path.join(OUTPUT, "initialization.keras"))

task = metakeras.tasks.SinusoidTasks(
    shots=10, queries=100, meta_batch_size=1, steps=1, seed=42
).as_episodes()
x_few, y_few = task["support_x"][0], task["support_y"][0]
x_test, y_test = task["query_x"][0], task["query_y"][0]


def finetune(model, epochs):
    """Full-batch SGD on the 10 examples; test MSE after every epoch."""
    model.compile(optimizer=keras.optimizers.SGD(INNER_LR), loss="mse")
    scores = [model.evaluate(x_test, y_test, verbose=0)]
    for _ in range(epochs):
        model.fit(x_few, y_few, batch_size=len(x_few), epochs=1, verbose=0)
        scores.append(model.evaluate(x_test, y_test, verbose=0))
    return scores


EPOCHS = 5 if FAST else 20
from_meta = keras.models.load_model(init_path)  # a plain keras.Sequential
from_random = regressor("random_init")
curves = {
    "meta-learned init": finetune(from_meta, EPOCHS),
    "random init": finetune(from_random, EPOCHS),
}
for name, scores in curves.items():
    print(f"{name:>18}: test MSE {scores[0]:.3f} -> {scores[-1]:.3f}")

# %% [markdown]
# ## 3. Start another learner from the initialisation
#
# `load_initial_weights` copies the weights into a learner you build
# yourself (same architecture; a mismatch is named in the error). Use it to
# start a new meta-training run from a previous one, or to give a fresh
# model the meta-learned starting point.

# %%
fresh = load_initial_weights(regressor("fresh"), init_path)
exported = keras.models.load_model(init_path)
np.testing.assert_allclose(
    fresh.predict(x_test, verbose=0), exported.predict(x_test, verbose=0), atol=1e-6
)
second_run = metakeras.MAML(fresh, inner_learning_rate=INNER_LR)
second_run.compile(optimizer="adam", loss="mse")

# %%
fig = Figure(figsize=(10, 3.5), layout="constrained")
FigureCanvasAgg(fig)
left, right = fig.subplots(1, 2)
for name, scores in curves.items():
    left.plot(range(len(scores)), scores, marker="o", label=name)
left.set_xlabel("fine-tuning epochs (full-batch SGD, 10 examples)")
left.set_ylabel("test MSE")
left.set_yscale("log")
left.legend()
grid = np.linspace(-5, 5, 200, dtype="float32")[:, None]
truth = task["amplitude"][0] * np.sin(grid[:, 0] - task["phase"][0])
right.plot(grid, truth, "k", lw=2, label="true function")
right.plot(grid, from_meta.predict(grid, verbose=0), label="from meta-learned init")
right.plot(grid, from_random.predict(grid, verbose=0), "--", label="from random init")
right.scatter(x_few, y_few, c="red", zorder=5, label="10 examples")
right.legend(fontsize=7)
fig.savefig(os.path.join(OUTPUT, "finetune_curves.png"), dpi=90)

fig = Figure(figsize=(5, 3.5), layout="constrained")
FigureCanvasAgg(fig)
ax = fig.add_subplot()
ax.scatter(x_test, y_test, s=8, c="grey", label="test points")
ax.scatter(x_few, y_few, c="red", label="10 training examples")
ax.legend(fontsize=7)
ax.set_title("the new task")
fig.savefig(os.path.join(OUTPUT, "finetune_task.png"), dpi=90)

# %% [markdown]
# ![fine-tuning curves](tutorial_output/finetune_curves.png)
#
# The meta-learned initialisation starts close to the *average* task and
# moves to this task's curve in a few SGD steps; random weights need many
# more steps and overfit the 10 points on the way. That is the whole value
# of meta-learning, delivered as an ordinary `.keras` file.
