# %% [markdown]
# # 6. Pruning and quantization of a meta-learned model
#
# A meta-learned model is trained once and then adapted many times, often on
# small devices: a phone that personalises a model from five examples, a
# sensor that calibrates itself on site. There the model must be small, and
# it must still *adapt* well once it is small. That second requirement is
# what makes compressing a meta-learner different from compressing an
# ordinary network: a pruned weight must stay zero not only through
# training but also through every adaptation, and the meta-learned
# initialisation must still be a good starting point after its weights have
# been rounded to 8 bits.
#
# `metakeras.callbacks` does both inside `fit`:
#
# - `MagnitudePruning` zeroes the smallest weights on a schedule
#   (`ConstantSparsity`, `PolynomialDecay`: the names of TensorFlow Model
#   Optimization, whose pruning does not run under Keras 3). The masks are
#   Keras constraints, which the outer optimizer *and* the MAML inner loop
#   apply after every step.
# - `Quantization` rounds the weights to int8 at the end of training (Keras's
#   own int8 layers where the model allows it), optionally after a few
#   quantization-aware epochs.
#
# We meta-train MAML on sinusoid regression, prune it to 80% sparsity,
# quantize it to int8 and compare the three on the same held-out tasks.
#
# Outputs (under `OUTPUT`): `compression_report.csv`.

# %%
import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import metakeras  # noqa: E402
from metakeras import callbacks  # noqa: E402

FAST = os.environ.get("METAKERAS_TUTORIAL_FAST") == "1"
OUTPUT = os.environ.get("METAKERAS_TUTORIAL_OUTPUT", "tutorial_output")
os.makedirs(OUTPUT, exist_ok=True)

# Tiny budgets when the test suite runs the tutorials; about 40 s on 2 cores
# otherwise.
STEPS = 20 if FAST else 2000  # meta-training steps (meta-batches of 25 tasks)
PRUNE_STEPS = 10 if FAST else 1000  # further steps while pruning
EPISODES = 50 if FAST else 600  # evaluation tasks
keras.utils.set_random_seed(0)

# %% [markdown]
# ## Meta-train the float model
#
# The MAML paper's 1-40-40-1 network, one inner step. `vectorize_tasks=True`
# runs the 25 tasks of a meta-batch together.


# %%
def sinusoid(steps, seed):
    return metakeras.tasks.SinusoidTasks(
        shots=5, meta_batch_size=25, steps=steps, seed=seed
    )


def make_model():
    learner = keras.Sequential(
        [
            keras.Input((1,)),
            keras.layers.Dense(40, activation="relu"),
            keras.layers.Dense(40, activation="relu"),
            keras.layers.Dense(1),
        ]
    )
    model = metakeras.MAML(
        learner, inner_steps=1, inner_learning_rate=0.01, vectorize_tasks=True
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    return model


model = make_model()
model.fit(sinusoid(STEPS, seed=0), epochs=1, verbose=0)
# `strip_pruning` returns a full copy (weights, compile settings, optimizer
# state); on a model without masks it is simply a copy. Keep the float model.
float_model = callbacks.strip_pruning(model)

# %% [markdown]
# ## Prune to 80% sparsity, gradually
#
# Removing 80% of the weights at once would destroy what was learned;
# `PolynomialDecay` raises the sparsity from 0 to 80% over the first half of
# the pruning phase (fast at first, then levelling off) so the remaining
# weights can take over, then trains on at 80%. Masks are recomputed every
# `frequency` steps. The step counter is the outer optimizer's, so the
# schedule starts where meta-training stopped.
#
# The callback writes the achieved sparsity into the logs each epoch.

# %%
start = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
schedule = callbacks.PolynomialDecay(
    initial_sparsity=0.0,
    final_sparsity=0.8,
    begin_step=start,
    end_step=start + PRUNE_STEPS // 2,
    frequency=max(1, PRUNE_STEPS // 50),
)
pruning = callbacks.MagnitudePruning(schedule)
history = model.fit(
    sinusoid(PRUNE_STEPS, seed=1), epochs=1, verbose=0, callbacks=[pruning]
)
print("sparsity after pruning:", round(history.history["sparsity"][-1], 3))

# %% [markdown]
# The pruned weights are zero, and adaptation keeps them at zero: the inner
# loop applies each kernel's constraint (here its `PruningMask`) after every
# inner step, exactly as the optimizer does after every outer step.

# %%
task = sinusoid(1, seed=99)[0]
adapted = model.adapt(task["support_x"][0], task["support_y"][0], inner_steps=10)
for layer, meta_layer in zip(adapted.layers, model.learner.layers):
    mask = keras.ops.convert_to_numpy(meta_layer.kernel_constraint.mask)
    kernel = keras.ops.convert_to_numpy(layer.kernel)
    print(
        f"{layer.name}: {np.mean(mask == 0):.0%} pruned, "
        f"non-zero after adapt where pruned: {np.count_nonzero(kernel[mask == 0])}"
    )

# %% [markdown]
# For deployment, `strip_pruning` bakes the zeros into a plain copy without
# the masks. Keep the masks on a model you will adapt further if its adapted
# weights must stay sparse: a stripped model's inner loop may move the zeros.

# %%
pruned_model = callbacks.strip_pruning(model)

# %% [markdown]
# ## Quantize to int8
#
# `quantize_weights` (the `Quantization` callback calls it at the end of
# training) rounds every kernel to 255 levels per output channel with
# `keras.quantizers.abs_max_quantize`. For models that adapt without
# gradients (ProtoNet) Keras's own int8 layers store and compute Dense
# layers in int8. MAML differentiates through the learner with `torch.func`,
# which Keras's int8 layers do not support, so its kernels (and every
# convolution, which Keras cannot quantize) stay float32 in memory with
# values on the int8 grid, adapted in float by the inner loop, and are
# written to the `.keras` file as int8 plus one scale per output channel
# (a conv4 learner's file is about 2.8x smaller). An adapted task model can
# be re-quantized with `quantize_weights(adapted)`.
#
# Pruned zeros stay zero: zero is on every grid.

# %%
quantized_model = callbacks.strip_pruning(model)
callbacks.quantize_weights(quantized_model, "int8")
kernel = keras.ops.convert_to_numpy(quantized_model.learner.layers[1].kernel)
print(
    "distinct values in one output channel:",
    len(np.unique(kernel[:, 0])),
    "(at most 255)",
)

# %% [markdown]
# ## Compare on identical tasks
#
# `compression_report` adapts every model to the same held-out tasks
# (`compare_models`), so the differences are paired and their confidence
# intervals narrow, and reports parameters, non-zeros and the size of the
# saved `.keras` file. The MSE is after 5 inner steps.

# %%
report = callbacks.compression_report(
    {"float": float_model, "pruned 80%": pruned_model, "80% + int8": quantized_model},
    sinusoid(max(1, EPISODES // 25), seed=2),
    episodes=EPISODES,
    inner_steps=5,
    directory=OUTPUT,
)
report.to_csv(os.path.join(OUTPUT, "compression_report.csv"), index=False)
print(
    report[
        [
            "model",
            "nonzero",
            "sparsity",
            "file_bytes",
            "learner_bytes",
            "mean",
            "ci95",
            "difference",
        ]
    ].to_string(index=False)
)

# %% [markdown]
# What to read in the table:
#
# - **Quality.** The pruned models had extra training steps, so compare them
#   with care; the point is that an 80%-sparse, int8 initialisation still
#   adapts to new sinusoids from five points.
# - **Size.** The non-zero count falls by the sparsity; int8 kernels take a
#   quarter of the bytes in the file. `file_bytes` includes the optimizer's
#   state (Adam keeps two float32 values per weight, which quantization does
#   not shrink); `learner_bytes` is the network alone. Pruning zeros shrink
#   a file only once it is compressed (zip), which packs long runs of zeros.
#
# Doing both inside `fit` looks like this (the masks stay in force during
# the quantization-aware epochs):
#
# ```python
# model.fit(tasks, epochs=10, callbacks=[
#     callbacks.MagnitudePruning(callbacks.PolynomialDecay(0.0, 0.8, 0, 5000)),
#     callbacks.Quantization("int8", fine_tune_epochs=2),
# ])
# ```
