# %% [markdown]
# # 04 · ProtoNet, MAML and Reptile on identical episodes
#
# Three families of few-shot learners, three answers to "how should a model
# use 1 labelled example per class?":
#
# - **ProtoNet** learns an embedding in which a class is the mean of its
#   support embeddings. No gradient steps at test time: adaptation is an
#   average, so it is fast and cannot overfit the support set.
# - **MAML** learns an initialisation of all weights from which a few
#   gradient steps on the support set give a good classifier; its
#   meta-gradient goes *through* those steps (second order).
# - **Reptile** also learns an initialisation, but moves it towards the
#   weights each task's SGD reaches: first order, no query loss, cheap.
#
# Comparing them fairly needs care. Two separate means with overlapping
# confidence intervals say little; scoring every model on the *very same*
# episodes and looking at the per-episode *difference* removes the
# episode-to-episode noise they share. `compare_models` does exactly that.
#
# The data are scikit-learn's 8x8 digits (no download), 5 digits for
# meta-training and the other 5 for testing, as `metakeras train --dataset
# digits` splits them. Outputs (under `OUTPUT`): `comparison_summary.csv`,
# `comparison_differences.csv`, `adaptation_curves.png`,
# `training_curves_maml.png`, `accuracy_distribution_protonet.png`.

# %%
import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # metakeras runs on PyTorch

import keras  # noqa: E402

import metakeras  # noqa: E402
from metakeras import plots  # noqa: E402
from metakeras.evaluation import compare_models, evaluate_episodes  # noqa: E402
from metakeras.tasks import TaskSampler, split_classes  # noqa: E402

# Budgets: about a minute on 2 CPU cores by default; METAKERAS_TUTORIAL_FULL=1
# for the longer run (10 epochs of 100 meta-batches, 600 test episodes);
# METAKERAS_TUTORIAL_FAST=1 for seconds (the tests).
FAST = os.environ.get("METAKERAS_TUTORIAL_FAST") == "1"
FULL = os.environ.get("METAKERAS_TUTORIAL_FULL") == "1"


def budget(fast, default, full):
    return fast if FAST else full if FULL else default


OUTPUT = os.environ.get("METAKERAS_TUTORIAL_OUTPUT", "tutorial_output")
os.makedirs(OUTPUT, exist_ok=True)
keras.utils.set_random_seed(0)

x, y = metakeras.datasets.digits.load_data()
train_classes, test_classes = split_classes(y, fractions=(0.5, 0.5), seed=0)
WAYS, SHOTS, QUERIES = 5, 1, 5
EPOCHS, STEPS = budget((1, 5), (4, 50), (10, 100))


def tasks(classes, seed, shots=SHOTS, steps=STEPS, resample=True, batch=8):
    return TaskSampler(
        x, y, ways=WAYS, shots=shots, queries=QUERIES, meta_batch_size=batch,
        steps=steps, classes=classes, seed=seed, resample=resample,
    )  # fmt: skip


def mlp(outputs=None):
    """The same small network for every algorithm: 64 -> 64 -> 64 (-> 5)."""
    layers = [
        keras.Input((1, 8, 8)),
        keras.layers.Flatten(),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(64, activation="relu"),
    ]
    if outputs:
        layers.append(keras.layers.Dense(outputs))
    return keras.Sequential(layers)


logits_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

# %% [markdown]
# ## Three models, one budget
#
# Each model gets the same number of meta-batches. ProtoNet's learner has no
# head (it outputs embeddings); MAML and Reptile need a 5-way head. Reptile,
# as in its paper, trains with more shots and more inner steps than it is
# tested with, and its outer optimizer moves the initialisation towards the
# adapted weights.

# %%
protonet = metakeras.ProtoNet(mlp(), name="protonet")
protonet.compile(
    optimizer=keras.optimizers.Adam(1e-3), loss=logits_loss, metrics=["accuracy"]
)
protonet.fit(tasks(train_classes, seed=0), epochs=EPOCHS, verbose=0)

maml = metakeras.MAML(
    mlp(WAYS), inner_steps=1, inner_learning_rate=0.4, vectorize_tasks=True, name="maml"
)
maml.compile(
    optimizer=keras.optimizers.Adam(1e-3), loss=logits_loss, metrics=["accuracy"]
)
maml_history = maml.fit(tasks(train_classes, seed=0), epochs=EPOCHS, verbose=0)
plots.plot_history(maml_history, os.path.join(OUTPUT, "training_curves_maml.png"))

reptile = metakeras.Reptile(
    mlp(WAYS),
    inner_steps=5,
    inner_learning_rate=0.1,
    vectorize_tasks=True,
    name="reptile",
)
reptile.compile(
    optimizer=keras.optimizers.Adam(1e-3), loss=logits_loss, metrics=["accuracy"]
)
reptile.fit(tasks(train_classes, seed=0, shots=3), epochs=EPOCHS, verbose=0)

# %% [markdown]
# ![MAML training](tutorial_output/training_curves_maml.png)
#
# ## The comparison
#
# The test source draws a fixed set of episodes (`resample=False`) over the 5
# unseen digits; `compare_models` hands every batch to every model. Each
# model with an inner loop is scored at every number of steps from 0 (its
# meta-learned starting point) up to its own setting, so the curves show how
# much each one gains from adaptation. ProtoNet is scored once.

# %%
test = tasks(test_classes, seed=1, steps=budget(1, 10, 30), resample=False, batch=20)
comparison = compare_models(
    {"protonet": protonet, "maml": maml, "reptile": reptile},
    test,
    episodes=budget(20, 200, 600),
    metrics=["accuracy", "log_loss"],
)
print(comparison.to_markdown())
print(comparison.to_markdown(which="differences"))
comparison.to_csv(os.path.join(OUTPUT, "comparison_summary.csv"))
comparison.to_csv(
    os.path.join(OUTPUT, "comparison_differences.csv"), which="differences"
)

# %% [markdown]
# Read the differences table, not the two intervals: `difference` is the mean
# of `model - protonet` over the same episodes, and `ci95` its own interval.
# If it excludes 0, the gap is real for this budget and these episodes.

# %%
plots.plot_adaptation_curve(comparison, os.path.join(OUTPUT, "adaptation_curves.png"))
plots.plot_episode_distribution(
    comparison.results["protonet"],
    os.path.join(OUTPUT, "accuracy_distribution_protonet.png"),
)

# %% [markdown]
# ![adaptation curves](tutorial_output/adaptation_curves.png)
# ![ProtoNet accuracy](tutorial_output/accuracy_distribution_protonet.png)
#
# ## More inner steps at test time
#
# MAML is trained with one inner step, but nothing stops us from taking more
# at test time; `evaluate_episodes(..., inner_steps=range(6))` shows whether it
# helps or starts to overfit the single support example per class.

# %%
more = evaluate_episodes(
    maml, test, episodes=budget(20, 200, 600), inner_steps=list(range(6))
)
print(more.adaptation("accuracy")[["steps", "mean", "ci95", "change"]])

# %% [markdown]
# What to expect: with a budget this small ProtoNet usually wins, as on the
# real benchmarks (Omniglot 5-way 1-shot: MAML 98.7%, ProtoNet 98.8%, but
# ProtoNet gets there with far fewer tasks). MAML's strength is that it
# works for *any* loss, including the regression of tutorials 01 and 03.
