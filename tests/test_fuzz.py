"""Malformed inputs at the public entry points raise documented errors only.

Property-based (hypothesis, derandomized): random ranks, shapes, dtypes,
empty arrays, NaN/inf, unknown labels, too few examples per class and bad
sizes must either work or raise `ValueError`/`TypeError` (never an error
from deep inside torch or NumPy), and a failed call changes nothing.
"""

import os

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import metakeras
from metakeras.tasks import SinusoidTasks, TaskSampler

FUZZ = settings(
    derandomize=True,
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    database=None,
)
DOCUMENTED = (ValueError, TypeError)

DTYPES = ["float32", "float64", "int64", "uint8", "bool", "complex64", "str", "object"]


@st.composite
def arrays(draw, min_rank=0, max_rank=4, max_side=4, dtypes=DTYPES):
    rank = draw(st.integers(min_rank, max_rank))
    shape = tuple(draw(st.integers(0, max_side)) for _ in range(rank))
    dtype = draw(st.sampled_from(dtypes))
    size = int(np.prod(shape)) if shape else 1
    values = np.asarray(
        draw(st.lists(st.integers(-3, 3), min_size=size, max_size=size)), "float64"
    )
    special = draw(st.sampled_from([None, np.nan, np.inf, -np.inf]))
    if special is not None and size and dtype.startswith("float"):
        values[draw(st.integers(0, size - 1))] = special
    values = values.reshape(shape)
    if dtype == "str":
        return values.astype(str)
    if dtype == "object":
        return values.astype(object)
    return values.astype(dtype)


sizes = st.sampled_from([-1, 0, 1, 2, 3, 2.5, "2", None, True])


# --------------------------------------------------------------- samplers


@FUZZ
@given(
    x=arrays(max_rank=4, max_side=5),
    y=arrays(max_rank=2, max_side=12, dtypes=["int64", "str", "float32", "object"]),
    ways=sizes,
    shots=sizes,
    queries=sizes,
)
def test_task_sampler_accepts_or_refuses_clearly(x, y, ways, shots, queries):
    try:
        sampler = TaskSampler(
            x, y, ways=ways, shots=shots, queries=queries, meta_batch_size=2, seed=0
        )
    except DOCUMENTED:
        return
    batch = sampler[0]
    assert batch["support_y"].max() < ways and batch["query_x"].dtype == "float32"


@FUZZ
@given(
    labels=st.lists(st.integers(0, 4), min_size=0, max_size=30),
    ways=st.integers(-1, 6),
    shots=st.integers(-1, 4),
    queries=st.integers(-1, 4),
    classes=st.one_of(st.none(), st.lists(st.integers(-1, 6), max_size=5)),
)
def test_task_sampler_class_counts_are_checked(labels, ways, shots, queries, classes):
    y = np.asarray(labels, dtype="int64")
    x = np.arange(len(y) * 2, dtype="float32").reshape(len(y), 2)
    try:
        sampler = TaskSampler(
            x,
            y,
            ways=ways,
            shots=shots,
            queries=queries,
            classes=classes,
            meta_batch_size=2,
            steps=2,
            seed=0,
        )
    except DOCUMENTED:
        return
    batch = sampler[1]
    # Support and query never share an example.
    for support, query in zip(batch["support_x"], batch["query_x"]):
        assert not set(support[:, 0].tolist()) & set(query[:, 0].tolist())


def test_task_sampler_from_dataframe_refuses_bad_frames():
    import pandas as pd

    frame = pd.DataFrame({"a": [1.0, 2.0, np.nan, 4.0], "label": [0, 0, 1, 1]})
    with pytest.raises(ValueError, match="NaN or infinite"):
        TaskSampler.from_dataframe(frame, "label", ways=2, shots=1, queries=1)
    with pytest.raises(ValueError, match="`label_column`='y'"):
        TaskSampler.from_dataframe(frame, "y")
    with pytest.raises(ValueError, match="`dataframe` must be a pandas DataFrame"):
        TaskSampler.from_dataframe(frame.to_numpy(), "label")


def test_task_sampler_from_directory_refuses_unreadable_folders(tmp_path):
    # A missing path is a FileNotFoundError, as in Keras's own loaders.
    with pytest.raises(FileNotFoundError, match="does not exist"):
        TaskSampler.from_directory(str(tmp_path / "missing"))
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "broken.png").write_bytes(b"not a png")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(ValueError):
        sampler = TaskSampler.from_directory(
            str(tmp_path), ways=2, shots=1, queries=0, seed=0
        )
        sampler[0]


@FUZZ
@given(
    shots=sizes,
    queries=sizes,
    amplitude=st.sampled_from([(0.1, 5.0), (5.0, 0.1), (0, np.nan), (1,), "ab", 3]),
    seed=st.sampled_from([0, -1, 1.5, "0", None, True]),
)
def test_sinusoid_tasks_accept_or_refuse_clearly(shots, queries, amplitude, seed):
    try:
        tasks = SinusoidTasks(
            shots=shots, queries=queries, amplitude_range=amplitude, seed=seed
        )
    except DOCUMENTED:
        return
    assert np.isfinite(tasks[0]["query_y"]).all()


# ------------------------------------------------------------ meta-models

_MODELS = {}


def model_for(kind):
    """A compiled model per kind, built once: regression or 3-way classes."""
    if kind not in _MODELS:
        keras.utils.set_random_seed(0)
        outputs = 1 if kind == "regression" else 3
        learner = keras.Sequential(
            [keras.Input((2,)), keras.layers.Dense(4), keras.layers.Dense(outputs)]
        )
        model = metakeras.MAML(learner, inner_steps=1, inner_learning_rate=0.01)
        loss = (
            "mse"
            if kind == "regression"
            else keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        )
        model.compile("sgd", loss=loss)
        _MODELS[kind] = model
    return _MODELS[kind]


@st.composite
def episodes(draw):
    """Mostly well-formed episodes with one or two things wrong."""
    tasks = draw(st.sampled_from([1, 2, 2, 0]))
    n, q = draw(st.sampled_from([1, 3, 3, 0])), 2
    shapes = {
        "support_x": (tasks, n, 2),
        "support_y": (tasks, n, 1),
        "query_x": (tasks, q, 2),
        "query_y": (tasks, q, 1),
    }
    episode = {
        k: np.zeros(shape, "float32") + np.arange(shape[-1] if shape else 1)
        for k, shape in shapes.items()
    }
    for _ in range(draw(st.sampled_from([0, 0, 1, 2]))):
        key = draw(st.sampled_from(sorted(episode)))
        episode[key] = draw(arrays(max_rank=4, max_side=3))
    if draw(st.integers(0, 5)) == 0:
        del episode[draw(st.sampled_from(sorted(episode)))]
    return episode


def _weights(model):
    return [np.array(w) for w in model.get_weights()]


@FUZZ
@given(episode=episodes(), kind=st.sampled_from(["regression", "classification"]))
def test_meta_model_training_accepts_or_refuses_clearly(episode, kind):
    model = model_for(kind)
    if kind == "classification" and "support_y" in episode:
        for key in ("support_y", "query_y"):
            if key in episode and episode[key].dtype == "float32":
                episode[key] = episode[key][..., 0].astype("int64")
    before = _weights(model)
    try:
        model.train_on_batch(episode)
    except DOCUMENTED:
        for a, b in zip(before, _weights(model)):
            np.testing.assert_array_equal(a, b)  # no partial update


@FUZZ
@given(
    support_x=arrays(max_rank=3, max_side=4),
    support_y=arrays(max_rank=2, max_side=4),
    steps=st.sampled_from([None, 0, 1, -1, 1.5, "2"]),
    kind=st.sampled_from(["regression", "classification"]),
)
def test_adapt_accepts_or_refuses_clearly(support_x, support_y, steps, kind):
    model = model_for(kind)
    before = _weights(model)
    try:
        adapted = model.adapt(support_x, support_y, inner_steps=steps)
    except DOCUMENTED:
        pass
    else:
        assert isinstance(adapted, keras.Model)
    for a, b in zip(before, _weights(model)):
        np.testing.assert_array_equal(a, b)


@FUZZ
@given(
    support_x=arrays(max_rank=4, max_side=3),
    support_y=arrays(max_rank=3, max_side=3),
    query_x=arrays(max_rank=4, max_side=3),
    batch_size=st.sampled_from([1, 32, 0, 2.0]),
    kind=st.sampled_from(["regression", "classification"]),
)
def test_adapt_and_predict_accepts_or_refuses_clearly(
    support_x, support_y, query_x, batch_size, kind
):
    model = model_for(kind)
    try:
        predictions = model.adapt_and_predict(
            support_x, support_y, query_x, batch_size=batch_size
        )
    except DOCUMENTED:
        return
    assert predictions.shape[:2] == query_x.shape[:2]


@FUZZ
@given(episode=episodes(), kind=st.sampled_from(["regression", "classification"]))
def test_evaluation_accepts_or_refuses_clearly(episode, kind):
    try:
        loss = model_for(kind).test_on_batch(episode)
    except DOCUMENTED:
        return
    assert np.isfinite(loss)  # accepted episodes are finite and well-formed


@FUZZ
@given(x=arrays(max_rank=3, max_side=4))
def test_predict_accepts_or_refuses_clearly(x):
    model = model_for("regression")
    try:
        predictions = model.predict(x, verbose=0)
    except DOCUMENTED:
        return
    assert predictions.shape[-1] == 1


# ------------------------------------------------------------- estimators


@settings(FUZZ, max_examples=12)
@given(
    X=arrays(min_rank=1, max_rank=3, max_side=12),
    y=arrays(min_rank=0, max_rank=2, max_side=12, dtypes=["int64", "str", "float64"]),
    ways=st.sampled_from([2, 0, 7, "2"]),
)
def test_meta_classifier_fit_accepts_or_refuses_clearly(X, y, ways):
    from metakeras.sklearn import MetaClassifier

    estimator = MetaClassifier(
        algorithm="protonet",
        ways=ways,
        shots=1,
        queries=1,
        meta_batch_size=2,
        steps_per_epoch=1,
        epochs=1,
        hidden_units=(4,),
        random_state=0,
    )
    try:
        estimator.fit(X, y)
    except DOCUMENTED:
        assert not hasattr(estimator, "model_")  # no half-fitted estimator
        return
    assert estimator.predict(X).shape == (len(X),)


# ------------------------------------------------------ damaged files


def _truncate(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def test_truncated_model_files_are_refused_and_change_nothing(tmp_path):
    from metakeras.initializers import export_initialization, load_initial_weights

    source = model_for("regression")
    keras_file = export_initialization(source, str(tmp_path / "init.keras"))
    weights_file = str(tmp_path / "init.weights.h5")
    source.learner.save_weights(weights_file)
    keras.utils.set_random_seed(1)
    target = keras.models.clone_model(source.learner)
    before = _weights(target)
    for path in (keras_file, weights_file):
        _truncate(path)
        with pytest.raises(ValueError, match="truncated"):
            load_initial_weights(target, path)
        for a, b in zip(before, _weights(target)):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(Exception) as info:
        keras.models.load_model(keras_file)
    assert not isinstance(info.value, (SystemError, MemoryError))


def test_a_truncated_dataset_cache_is_rebuilt_not_used(tmp_path):
    from metakeras.datasets import omniglot

    arrays = {
        omniglot.BACKGROUND: (np.zeros((2, 3, 3), "float32"), np.zeros(2, "int64")),
        omniglot.EVALUATION: (np.ones((2, 3, 3), "float32"), np.ones(2, "int64")),
    }
    path = str(tmp_path / "cache.npz")
    omniglot._write_cache(path, "key", arrays, {"image_size": 3})
    assert omniglot._read_cache(path, "key", verbose=0) is not None
    _truncate(path)
    assert omniglot._read_cache(path, "key", verbose=0) is None
    assert omniglot._read_cache(path, "other key", verbose=0) is None
