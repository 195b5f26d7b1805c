# %% [markdown]
# # 02 · Few-shot image classification on Omniglot
#
# Omniglot (Lake et al., 2015) is the "MNIST of few-shot learning": 1,623
# handwritten characters from 50 alphabets, 20 drawings each. The protocol is
# to meta-train on the 30 *background* alphabets and test on the 20
# *evaluation* alphabets, so every test character is one the model has never
# seen. A 5-way 1-shot episode shows one drawing of each of 5 new characters
# and asks the model to label more drawings of them.
#
# This tutorial uses the real Omniglot files when it finds them
# (`$METAKERAS_DATA/omniglot` or `../shared/data/omniglot`, holding
# `images_background.zip` and `images_evaluation.zip`), and scikit-learn's
# bundled 8x8 digits otherwise, split by class (5 digits to train on, the
# other 5 to test on). The fast mode used by the test suite always takes the
# digits, so it does not spend half a minute decoding 32,460 PNGs.
#
# Outputs (under `OUTPUT`): `training_curves.png`, `accuracy_distribution.png`,
# `confusion_matrix.png`, `summary.csv`.

# %%
import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # metakeras runs on PyTorch

import keras  # noqa: E402
import numpy as np  # noqa: E402

import metakeras  # noqa: E402
from metakeras import plots  # noqa: E402
from metakeras.evaluation import evaluate_episodes  # noqa: E402
from metakeras.tasks import TaskSampler, split_classes  # noqa: E402

# Budgets: about a minute on 2 CPU cores by default; METAKERAS_TUTORIAL_FULL=1
# for the longer run (5 epochs of 100 meta-batches, 64 filters, 600 test
# episodes); METAKERAS_TUTORIAL_FAST=1 for seconds (the tests).
FAST = os.environ.get("METAKERAS_TUTORIAL_FAST") == "1"
FULL = os.environ.get("METAKERAS_TUTORIAL_FULL") == "1"


def budget(fast, default, full):
    return fast if FAST else full if FULL else default


OUTPUT = os.environ.get("METAKERAS_TUTORIAL_OUTPUT", "tutorial_output")
os.makedirs(OUTPUT, exist_ok=True)
keras.utils.set_random_seed(0)


def find_omniglot():
    """The first folder holding both Omniglot archives (or folders), or None."""
    candidates = [
        os.path.join(os.environ.get("METAKERAS_DATA", ""), "omniglot"),
        os.path.join("..", "shared", "data", "omniglot"),
        os.path.join("..", "..", "shared", "data", "omniglot"),
    ]
    for folder in candidates:
        names = ("images_background", "images_evaluation")
        if all(
            os.path.exists(os.path.join(folder, n + ".zip"))
            or os.path.isdir(os.path.join(folder, n))
            for n in names
        ):
            return folder
    return None


# %% [markdown]
# ## Data and class splits
#
# Few-shot results only mean something on classes unseen in training, so the
# split is over *classes*, never over examples. Omniglot comes with its
# split; for the digits, `split_classes` makes a reproducible one.
#
# The convolutional learner (`conv4`) halves the image size four times, so
# the 8x8 digits are upscaled to 16x16 first.

# %%
folder = None if FAST else find_omniglot()
if folder is not None:
    (x_train, y_train), (x_test, y_test), info = metakeras.datasets.omniglot.load_data(
        folder, image_size=28
    )
    train_classes, test_classes = None, None
    dataset = "Omniglot"
else:
    x, y = metakeras.datasets.digits.load_data()
    x = np.kron(x, np.ones((2, 2), dtype="float32"))  # 8x8 -> 16x16
    train_classes, test_classes = split_classes(y, fractions=(0.5, 0.5), seed=0)
    x_train = x_test = x
    y_train = y_test = y
    dataset = "digits"
print(dataset, "train:", x_train.shape, "test classes:", test_classes)

# %% [markdown]
# ## Episodes with rotations
#
# `TaskSampler` draws N-way K-shot episodes. `rotations=(0, 90, 180, 270)`
# makes each rotated copy of a class a class of its own, the usual Omniglot
# augmentation: four times as many training classes, so the model sees
# more variety of "new" classes. Only the training sampler rotates; the test
# sampler uses `resample=False`, a fixed set of episodes.

# %%
ways, shots, queries = 5, 1, 3 if FAST else 15
train_tasks = TaskSampler(
    x_train,
    y_train,
    ways=ways,
    shots=shots,
    queries=queries,
    meta_batch_size=4,
    steps=budget(4, 40, 100),
    classes=train_classes,
    rotations=(0, 90, 180, 270),
    seed=0,
)
test_tasks = TaskSampler(
    x_test,
    y_test,
    ways=ways,
    shots=shots,
    queries=queries,
    meta_batch_size=10,
    steps=budget(2, 10, 60),
    classes=test_classes,
    seed=1,
    resample=False,
)
episode = train_tasks[0]
print({k: v.shape for k, v in episode.items()})

# %% [markdown]
# ## ProtoNet with a Conv-4 embedding
#
# Prototypical Networks embed every image, average the support embeddings of
# each class into a *prototype*, and label a query by its nearest prototype.
# There is no inner gradient loop, so training is cheap, which is why it is a
# strong choice on a CPU. (Swap in `metakeras.MAML(conv4(outputs=ways))` to
# meta-learn an initialisation instead; see tutorial 04 for a comparison.)

# %%
input_shape = episode["support_x"].shape[2:]
embedding = metakeras.models.conv4(input_shape=input_shape, filters=budget(8, 32, 64))
model = metakeras.ProtoNet(embedding)
model.compile(
    optimizer=keras.optimizers.Adam(1e-3),
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    metrics=["accuracy"],
)
history = model.fit(train_tasks, epochs=budget(1, 3, 5), verbose=0 if FAST else "auto")
plots.plot_history(history, os.path.join(OUTPUT, "training_curves.png"))

# %% [markdown]
# ![training curves](tutorial_output/training_curves.png)
#
# ## Evaluation with confidence intervals
#
# One accuracy number from a handful of episodes is noise. `evaluate_episodes`
# scores each test episode separately and reports the mean with a 95%
# confidence half-width (`1.96 * std / sqrt(episodes)`); papers use 600
# episodes or more (this run scores 100; `METAKERAS_TUTORIAL_FULL=1`, 600).

# %%
results = evaluate_episodes(model, test_tasks, episodes=budget(20, 100, 600))
print(results.to_markdown())
mean, ci = results.mean("accuracy")
print(f"{dataset} {ways}-way {shots}-shot accuracy: {mean:.3f} ± {ci:.3f}")
results.to_csv(os.path.join(OUTPUT, "summary.csv"))
plots.plot_episode_distribution(
    results, os.path.join(OUTPUT, "accuracy_distribution.png")
)
plots.plot_confusion_matrix(
    results, os.path.join(OUTPUT, "confusion_matrix.png"), normalize=True
)

# %% [markdown]
# ![accuracy over episodes](tutorial_output/accuracy_distribution.png)
# ![confusion matrix](tutorial_output/confusion_matrix.png)
#
# The confusion matrix is over in-episode labels `0..N-1`: with random class
# order it should have no structure, and a bright column would reveal a bias
# towards one label position.
#
# The same run from the command line:
#
# ```bash
# metakeras train --dataset omniglot --data-dir ../shared/data --algorithm protonet
# metakeras evaluate metakeras_output/model.keras --episodes 600
# ```
