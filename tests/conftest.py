"""Shared fixtures and builders for the whole suite.

Layout: tests mirror the package (tests/models/ for metakeras/models/, tests/tasks/
for metakeras/tasks/, ...); tests of root modules (inner.py, config.py, ...) and of
the whole project (docs, tutorials, fuzzing) stay here at the top.

Import mode: pytest's default ("prepend"): a test folder without `__init__.py`
goes on sys.path and its files import as top-level modules. Hence:
(1) test file names are unique across all folders but tests/cli/ (two files
of one name would clash as one module);
(2) the folders have no `__init__.py`: it would make each a package named
after the folder, and tests/sklearn/ would shadow scikit-learn,
tests/datasets/ HuggingFace's `datasets` where that is installed; helpers
beside the tests import by their plain name (`from sklearn_helpers import`);
(3) tests/cli/ is the one package (`cli`, a name nothing installed uses): its
modules are `cli.test_*`, and they import their helper relatively
(`from ._runs import ...`);
(4) this is the one conftest.py, imported as `conftest` from every folder:
builders that more than one test file uses live here (`from conftest import
mlp`), never in a test module that another folder would have to import.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import metakeras  # noqa: E402
from metakeras.tasks import SinusoidTasks  # noqa: E402

# Where Keras puts models and tensors: a GPU when there is one.
DEVICE = keras.ops.convert_to_tensor(0.0).device
CUDA = DEVICE.type == "cuda"
requires_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
cpu_only = pytest.mark.skipif(CUDA, reason="a CPU-only setting")

if CUDA:
    # The tests compare with float32 and float64 references at float32
    # tolerances. TF32 (cuDNN's default for convolutions on Ampere and later)
    # rounds the operands of convolutions and matrix products to 10-bit
    # mantissas, and cuDNN's fastest algorithms may sum in a different order
    # on every call; neither fits those tolerances or the bitwise checks.
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


@pytest.fixture(autouse=True)
def _seeded():
    keras.utils.set_random_seed(0)


def on_device(value):
    """`value` (an array or tensor) as a tensor on Keras's device."""
    return keras.ops.convert_to_tensor(value)


def mlp(hidden=16, outputs=1, inputs=1, activation="tanh", name=None, dropout=None):
    """Input, Dense(hidden), [Dropout(dropout),] Dense(outputs)."""
    layers = [keras.Input((inputs,)), keras.layers.Dense(hidden, activation=activation)]
    if dropout is not None:
        layers.append(keras.layers.Dropout(dropout))
    return keras.Sequential([*layers, keras.layers.Dense(outputs)], name=name)


def classification_episodes(tasks=4, ways=3, shots=2, queries=3, features=4, seed=0):
    """Separable synthetic classification episodes in the episode contract."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(tasks, ways, features)) * 3

    def draw(n):
        y = np.tile(np.arange(ways), (tasks, n))
        x = centers[np.arange(tasks)[:, None], y] + rng.normal(
            size=(tasks, ways * n, features)
        )
        return x.astype("float32"), y.astype("int64")

    sx, sy = draw(shots)
    qx, qy = draw(queries)
    return {"support_x": sx, "support_y": sy, "query_x": qx, "query_y": qy}


def labelled_classes(classes=12, per_class=20, features=8, seed=0):
    """`(x, y)`: separable Gaussian classes `0..classes-1`, float32 features."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, features)) * 3
    y = np.repeat(np.arange(classes), per_class)
    x = centres[y] + rng.normal(size=(len(y), features))
    return x.astype("float32"), y


def assert_adapts_alike_after_saving(model, classifier, episode, task, folder):
    """`model` and `classifier` (its `adapt` on task `task` of `episode`) agree,
    also after a `.keras` round trip each; returns the reloaded model.
    """
    sx, sy, qx = (episode[key] for key in ("support_x", "support_y", "query_x"))
    logits = model.adapt_and_predict(sx, sy, qx)
    predicted = classifier.predict(qx[task], verbose=0)
    np.testing.assert_allclose(predicted, logits[task], rtol=1e-5, atol=1e-5)
    model.save(folder / "model.keras")
    restored = keras.models.load_model(folder / "model.keras")
    np.testing.assert_array_equal(restored.adapt_and_predict(sx, sy, qx), logits)
    classifier.save(folder / "classifier.keras")
    loaded = keras.models.load_model(folder / "classifier.keras")
    np.testing.assert_array_equal(loaded.predict(qx[task], verbose=0), predicted)
    return restored


def random_episodes(
    shape, tasks=2, ways=3, shots=2, queries=2, seed=0, uniform=False, grouped=False
):
    """Episodes of pure noise inputs `(tasks, ways * n, *shape)`, float32.

    Inputs are standard normal, or uniform on [0, 1) with `uniform`; the
    support is drawn before the queries. Labels run 0, 1, 2, 0, 1, 2, ...
    or, with `grouped`, 0, 0, 1, 1, 2, 2, ...
    """
    rng = np.random.default_rng(seed)

    def draw(n):
        size = (tasks, ways * n, *shape)
        x = rng.random(size) if uniform else rng.normal(size=size)
        labels = (
            np.repeat(np.arange(ways), n) if grouped else np.tile(np.arange(ways), n)
        )
        return x.astype("float32"), np.tile(labels, (tasks, 1))

    sx, sy = draw(shots)
    qx, qy = draw(queries)
    return {"support_x": sx, "support_y": sy, "query_x": qx, "query_y": qy}


def sine_episodes(tasks=4, shots=5, queries=5, seed=0, amplitudes_first=False):
    """Sinusoid regression episodes: `a * sin(x)`, x in [-2, 2), a in [0.5, 2).

    `amplitudes_first` draws the amplitudes before the inputs (a different
    set of episodes for the same seed).
    """
    rng = np.random.default_rng(seed)
    if amplitudes_first:
        a = rng.uniform(0.5, 2.0, size=(tasks, 1, 1))
    x = rng.uniform(-2, 2, size=(tasks, shots + queries, 1)).astype("float32")
    if not amplitudes_first:
        a = rng.uniform(0.5, 2, (tasks, 1, 1))
    y = (np.sin(x) * a).astype("float32")
    return {
        "support_x": x[:, :shots],
        "support_y": y[:, :shots],
        "query_x": x[:, shots:],
        "query_y": y[:, shots:],
    }


def sinusoid_tasks(**kwargs):
    """Small `SinusoidTasks`: 5 shots, 5 queries, 4 tasks a batch, 5 batches."""
    kwargs.setdefault("shots", 5)
    kwargs.setdefault("queries", 5)
    kwargs.setdefault("meta_batch_size", 4)
    kwargs.setdefault("steps", 5)
    kwargs.setdefault("seed", 0)
    return SinusoidTasks(**kwargs)


def regression_maml(hidden=16, inner_steps=2, inner_learning_rate=0.05, **kwargs):
    """MAML on `mlp(hidden, relu)`, compiled with Adam(1e-2) and the MSE."""
    model = metakeras.MAML(
        mlp(hidden=hidden, activation="relu"),
        inner_steps=inner_steps,
        inner_learning_rate=inner_learning_rate,
        **kwargs,
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    return model


# --------------------------------------- a few-shot family with 2 informative
# features (the algorithm, registry and ZeroHead tests)

WAYS, SHOTS, QUERIES, FEATURES = 3, 2, 5, 16
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def informative_episodes(tasks, seed):
    """Classes differ in 2 of 16 features; the other 14 are loud noise.

    A learner that was never meta-trained mixes the noise into every
    prediction; meta-learning finds the 2 informative features.
    """
    rng = np.random.default_rng(seed)
    centers = np.zeros((tasks, WAYS, FEATURES))
    centers[..., :2] = rng.normal(size=(tasks, WAYS, 2)) * 2.0

    def draw(n):
        y = np.tile(np.arange(WAYS), (tasks, n))
        x = centers[np.arange(tasks)[:, None], y]
        x = x + np.concatenate(
            [
                rng.normal(size=(tasks, WAYS * n, 2)) * 0.5,
                rng.normal(size=(tasks, WAYS * n, FEATURES - 2)) * 3.0,
            ],
            axis=-1,
        )
        return x.astype("float32"), y.astype("int64")

    sx, sy = draw(SHOTS)
    qx, qy = draw(QUERIES)
    return {"support_x": sx, "support_y": sy, "query_x": qx, "query_y": qy}


def dense_learner(outputs=WAYS, seed=0, hidden=32):
    """Dense layers "body" (relu) and "head" on FEATURES inputs, seeded."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((FEATURES,)),
            keras.layers.Dense(hidden, activation="relu", name="body"),
            keras.layers.Dense(outputs, name="head"),
        ]
    )


# ------------------------------------------------------ evaluation builders


def indexed_episodes(tasks, ways=3, shots=2, queries=4, seed=0, regression=False):
    """Episodes whose first support feature is the episode's index.

    Fake models look their prepared predictions up by that index, so they
    answer the same for an episode however the episodes are batched.
    """
    rng = np.random.default_rng(seed)
    support_x = rng.normal(size=(tasks, ways * shots, 2)).astype("float32")
    support_x[:, 0, 0] = np.arange(tasks)
    query_x = rng.normal(size=(tasks, ways * queries, 2)).astype("float32")
    if regression:
        support_y = rng.normal(size=(tasks, ways * shots, 1)).astype("float32")
        query_y = rng.normal(size=(tasks, ways * queries, 1)).astype("float32")
    else:
        support_y = np.tile(np.arange(ways), (tasks, shots)).astype("int64")
        query_y = np.stack(
            [rng.permutation(np.tile(np.arange(ways), queries)) for _ in range(tasks)]
        ).astype("int64")
    return {
        "support_x": support_x,
        "support_y": support_y,
        "query_x": query_x,
        "query_y": query_y,
    }


class PreparedModel:
    """A fake meta-model answering with prepared per-episode predictions.

    `predictions` maps an inner-step setting to an array `(episodes, queries,
    outputs)`; `inner_steps=None` models an algorithm without an inner loop
    (ProtoNet-like), whose predictions are under the key `None`.
    """

    def __init__(self, predictions, inner_steps=None, name="prepared"):
        self.predictions = predictions
        self.name = name
        self.calls = []
        if inner_steps is not None:
            self.inner = metakeras.InnerLoop(steps=inner_steps)

    def adapt_and_predict(self, support_x, support_y, query_x, steps=None, **kwargs):
        ids = np.asarray(support_x)[:, 0, 0].astype(int)
        self.calls.append((steps, np.array(support_x), np.array(query_x)))
        key = steps if steps is not None else getattr(self, "inner", None)
        key = key.steps if isinstance(key, metakeras.InnerLoop) else key
        return self.predictions[key][ids]


class EpisodeSource(keras.utils.PyDataset):
    """A PyDataset of indexed episodes with original class ids.

    Each pass draws new episodes when `resample` is true, like a TaskSampler.
    """

    def __init__(self, batches=2, tasks=3, ways=3, resample=True, seed=0):
        super().__init__()
        self.batches = batches
        self.tasks = tasks
        self.ways = ways
        self.resample = resample
        self.seed = seed
        self.epoch = 0

    def __len__(self):
        return self.batches

    def __getitem__(self, index):
        rng = np.random.default_rng([self.seed, self.epoch, index])
        batch = indexed_episodes(
            self.tasks, ways=self.ways, seed=int(rng.integers(1e6))
        )
        first = (self.epoch * self.batches + index) * self.tasks
        batch["support_x"][:, 0, 0] = first + np.arange(self.tasks)
        batch["classes"] = np.stack(
            [rng.choice(50, self.ways, replace=False) for _ in range(self.tasks)]
        ).astype("int64")
        return batch

    def on_epoch_end(self):
        if self.resample:
            self.epoch += 1


def functional_classifier():
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.Dense(3)(hidden))


def classifier_maml(inner_steps=2, **kwargs):
    """MAML on `functional_classifier()`, compiled for 3-way classification."""
    model = metakeras.MAML(
        functional_classifier(),
        inner_learning_rate=0.5,
        inner_steps=inner_steps,
        vectorize_tasks=True,
        **kwargs,
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def trained_classifier(inner_steps=2, **kwargs):
    model = classifier_maml(inner_steps, **kwargs)
    model.fit(
        classification_episodes(tasks=32, seed=1), batch_size=8, epochs=3, verbose=0
    )
    return model


def trained_regressor(inner_steps=2):
    model = metakeras.MAML(
        mlp(hidden=16, activation="relu"), inner_steps=inner_steps, vectorize_tasks=True
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse", metrics=["mae"])
    model.fit(sinusoid_tasks(), epochs=1, verbose=0)
    return model
