"""Tests of the scikit-learn estimators `MetaClassifier` and `MetaRegressor`."""

import pickle
import warnings

import keras
import numpy as np
import pandas as pd
import pytest
import sklearn
from conftest import CUDA, requires_cuda
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import metakeras
from metakeras.datasets import digits
from metakeras.sklearn import MetaClassifier, MetaRegressor
from metakeras.tasks import SinusoidTasks

# Tiny budgets: scikit-learn's checks fit these estimators a few hundred times.
FAST = dict(
    hidden_units=(16,),
    meta_batch_size=2,
    queries=2,
    epochs=1,
    steps_per_epoch=2,
    random_state=0,
)

CHECK_ESTIMATORS = [
    MetaClassifier(algorithm="protonet", **FAST),
    MetaClassifier(algorithm="fomaml", adapt_steps=5, **FAST),
    MetaRegressor(
        algorithm="maml", shots=1, inner_learning_rate=0.01, adapt_steps=100, **FAST
    ),
]

# Each entry says why the check does not apply to a meta-learner.
# Checks expected to fail, with the reason each does not apply to a
# meta-learner. None: with random_state fixed, fits are reproducible, and at
# these tiny budgets the estimators still pass the accuracy checks (for
# MetaRegressor thanks to adapt_steps=100 on the training set; at a higher
# inner rate its adaptation diverges on the unscaled multi-output data, which
# `adapt` reports as an error instead of returning non-finite weights).
EXPECTED_FAILED_CHECKS = {}


@parametrize_with_checks(
    CHECK_ESTIMATORS, expected_failed_checks=lambda estimator: EXPECTED_FAILED_CHECKS
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# --------------------------------------------------------------- helpers


def _digits():
    x, y = digits.load_data()
    return x.reshape(len(x), -1), y


def _few_shot_split(y, classes, shots, rng):
    """Indices of `shots` support rows per class and the other rows."""
    support = np.concatenate(
        [rng.choice(np.flatnonzero(y == c), shots, replace=False) for c in classes]
    )
    others = np.setdiff1d(np.flatnonzero(np.isin(y, classes)), support)
    return support, others


# --------------------------------------------------- classification use


def test_pipeline_grid_search_and_cross_val_score_on_digits():
    X, y = _digits()
    rng = np.random.default_rng(0)
    rows = rng.choice(len(X), 600, replace=False)
    X, y = X[rows], y[rows]
    pipe = Pipeline(
        [
            ("scale", StandardScaler()),
            (
                "meta",
                MetaClassifier(
                    ways=5, shots=2, epochs=1, steps_per_epoch=5, random_state=0
                ),
            ),
        ]
    )
    grid = GridSearchCV(
        pipe,
        {"meta__shots": [1, 3], "meta__hidden_units": [(32,)]},
        cv=StratifiedKFold(2, shuffle=True, random_state=0),
    )
    grid.fit(X, y)
    assert set(grid.best_params_) == {"meta__shots", "meta__hidden_units"}
    assert grid.best_score_ > 0.7  # chance is 0.1
    assert grid.score(X, y) > 0.7
    scores = cross_val_score(pipe, X, y, cv=3)
    assert scores.shape == (3,)
    assert scores.mean() > 0.7


def test_adapt_to_unseen_classes_beats_chance():
    X, y = _digits()
    X = StandardScaler().fit_transform(X)
    seen = y < 6
    clf = MetaClassifier(
        ways=5, shots=5, epochs=3, steps_per_epoch=20, random_state=0
    ).fit(X[seen], y[seen])
    np.testing.assert_array_equal(clf.meta_classes_, np.arange(6))
    support, others = _few_shot_split(y, [6, 7, 8, 9], 5, np.random.default_rng(1))
    returned = clf.adapt(X[support], y[support])
    assert returned is clf
    np.testing.assert_array_equal(clf.classes_, [6, 7, 8, 9])
    proba = clf.predict_proba(X[others])
    assert proba.shape == (len(others), 4)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    assert set(np.unique(clf.predict(X[others]))) <= {6, 7, 8, 9}
    # 4-way: chance is 0.25.
    assert clf.score(X[others], y[others]) > 0.8
    # The meta-learned weights are unchanged, so re-adapting to the
    # training classes recovers the training task.
    clf.adapt(X[seen], y[seen])
    assert clf.score(X[seen], y[seen]) > 0.9


def test_gradient_algorithm_adapts_and_refuses_too_many_classes():
    X, y = _digits()
    X = StandardScaler().fit_transform(X)
    seen = y < 4
    clf = MetaClassifier(
        algorithm="fomaml",
        ways=4,
        shots=5,
        inner_steps=3,
        adapt_steps=10,
        inner_learning_rate=0.2,
        epochs=1,
        steps_per_epoch=20,
        vectorize_tasks=True,
        random_state=0,
    ).fit(X[seen], y[seen])
    assert clf.n_outputs_ == 4
    support, others = _few_shot_split(y, [6, 7, 8], 5, np.random.default_rng(0))
    clf.adapt(X[support], y[support])  # 3 classes: fewer than the head's 4
    assert clf.predict_proba(X[others]).shape == (len(others), 3)
    assert clf.score(X[others], y[others]) > 0.6  # chance is 1/3
    support, _ = _few_shot_split(y, [4, 5, 6, 7, 8], 2, np.random.default_rng(0))
    with pytest.raises(ValueError, match="at most 4 classes.*algorithm='protonet'"):
        clf.adapt(X[support], y[support])
    with pytest.raises(ValueError, match="ways >= 10"):
        clone(clf).set_params(epochs=0).fit(X, y)


@pytest.mark.parametrize("algorithm", ["maml", "metasgd", "anil", "reptile"])
def test_every_algorithm_fits_and_predicts(algorithm):
    X, y = _digits()
    keep = y < 3
    clf = MetaClassifier(
        algorithm=algorithm,
        ways=3,
        shots=2,
        epochs=1,
        steps_per_epoch=2,
        random_state=0,
    ).fit(X[keep], y[keep])
    assert clf.predict(X[keep]).shape == (keep.sum(),)
    assert clf.history_["loss"] and np.isfinite(clf.history_["loss"]).all()


def test_fewer_classes_than_ways_and_small_classes():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(12, 3)) + np.repeat(np.arange(3), 4)[:, None] * 3
    y = np.repeat(["a", "b", "c"], 4)
    clf = MetaClassifier(ways=5, shots=2, queries=10, **_tiny()).fit(X, y)
    assert clf.ways_ == 3  # min(ways, number of classes)
    assert clf.queries_ == 2  # 4 rows per class - 2 shots
    np.testing.assert_array_equal(clf.classes_, ["a", "b", "c"])
    assert clf.predict(X).dtype.kind == "U"


def _tiny():
    return dict(epochs=1, steps_per_epoch=2, meta_batch_size=2, random_state=0)


# ------------------------------------------------------------ bad input


def test_bad_input_raises_sklearn_errors():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 3))
    y = np.repeat([0, 1], 10)
    clf = MetaClassifier(shots=2, **_tiny())
    X_nan = X.copy()
    X_nan[3, 1] = np.nan
    with pytest.raises(ValueError, match="Input X contains NaN"):
        clf.fit(X_nan, y)
    with pytest.raises(ValueError, match="could not convert string to float"):
        clf.fit(np.array([["a", "b", "c"]] * 20, dtype=object), y)
    with pytest.raises(ValueError, match="only one class: 0"):
        clf.fit(X, np.zeros(20, dtype=int))
    y_small = np.array([0] * 18 + [1] * 2)
    with pytest.raises(ValueError, match=r"shots \+ 1 = 3 rows.*1 has 2 samples"):
        clf.fit(X, y_small)
    with pytest.raises(ValueError, match="Unknown label type"):
        clf.fit(X, rng.normal(size=20))
    with pytest.raises(ValueError, match=r"`ways` must be an integer >= 2.*ways=1"):
        MetaClassifier(ways=1).fit(X, y)
    with pytest.raises(
        ValueError, match="must be one of .*'protonet'.*algorithm='knn'"
    ):
        MetaClassifier(algorithm="knn").fit(X, y)
    with pytest.raises(ValueError, match="no regression form"):
        MetaRegressor(algorithm="protonet").fit(X, rng.normal(size=20))
    with pytest.raises(NotFittedError):
        MetaClassifier().predict(X)
    with pytest.raises(NotFittedError):
        MetaClassifier().adapt(X, y)
    fitted = MetaClassifier(shots=2, **_tiny()).fit(X, y)
    with pytest.raises(ValueError, match="X has 2 features"):
        fitted.predict(X[:, :2])
    with pytest.raises(ValueError, match="only one class"):
        fitted.adapt(X[:5], np.zeros(5))


def test_learner_argument_forms():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 4)) + np.repeat(np.arange(3), 10)[:, None] * 3
    y = np.repeat([0, 1, 2], 10)
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8, activation="tanh"),
            keras.layers.Dense(3),
        ]
    )
    clf = MetaClassifier(algorithm="maml", ways=3, learner=model, **_tiny()).fit(X, y)
    assert clf.model_.learner is not model  # a clone with fresh weights
    assert clone(clf).learner is not model

    calls = []

    def build(n_features_in, n_outputs):
        calls.append((n_features_in, n_outputs))
        return keras.Sequential([keras.Input((n_features_in,)), keras.layers.Dense(6)])

    MetaClassifier(learner=build, **_tiny()).fit(X, y)
    # ProtoNet: an embedding of any width (called once more on a GPU, for
    # initial weights drawn on the CPU).
    assert set(calls) == {(4, None)} and len(calls) == (2 if CUDA else 1)
    with pytest.raises(ValueError, match=r"must output \(batch, 3\)"):
        MetaClassifier(algorithm="maml", ways=3, learner=build, **_tiny()).fit(X, y)
    with pytest.raises(ValueError, match="but X has 5 features"):
        MetaClassifier(learner=model, **_tiny()).fit(np.c_[X, X[:, :1]], y)


# ------------------------------------------ state, pickling, DataFrames


def test_pickle_and_clone_fitted_and_unfitted():
    X, y = _digits()
    keep = y < 4
    X, y = X[keep], y[keep]
    learner = keras.Sequential([keras.Input((64,)), keras.layers.Dense(8)])
    unfitted = MetaClassifier(learner=learner, **_tiny())
    restored = pickle.loads(pickle.dumps(unfitted))
    assert restored.get_params()["epochs"] == 1
    assert isinstance(restored.learner, keras.Model)
    fitted = clone(unfitted).fit(X, y)
    restored = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_allclose(restored.predict_proba(X), fitted.predict_proba(X))
    np.testing.assert_array_equal(restored.classes_, fitted.classes_)
    # The restored meta-model adapts and continues meta-training.
    restored.adapt(X[:40], y[:40])
    restored.partial_fit(X, y)
    assert len(restored.history_["loss"]) == 2
    fresh = clone(fitted)
    assert not hasattr(fresh, "model_")
    assert fresh.get_params()["epochs"] == 1
    regressor = MetaRegressor(shots=2, **_tiny()).fit(X[:, :3], X[:, 4])
    again = pickle.loads(pickle.dumps(regressor))
    np.testing.assert_allclose(again.predict(X[:, :3]), regressor.predict(X[:, :3]))


def test_seeded_fit_is_reproducible_and_restores_global_rng():
    X, y = _digits()
    keep = y < 3
    np.random.seed(123)
    expected_next = np.random.random()
    np.random.seed(123)
    a = MetaClassifier(**_tiny()).fit(X[keep], y[keep])
    assert np.random.random() == expected_next  # the caller's stream is untouched
    b = MetaClassifier(**_tiny()).fit(X[keep], y[keep])
    np.testing.assert_allclose(a.predict_proba(X[keep]), b.predict_proba(X[keep]))


def test_warm_start_and_partial_fit_continue_meta_training():
    X, y = _digits()
    keep = y < 5
    clf = MetaClassifier(warm_start=True, **{**_tiny(), "epochs": 2})
    clf.fit(X[keep], y[keep])
    model = clf.model_
    clf.fit(X[keep], y[keep])
    assert clf.model_ is model
    assert len(clf.history_["loss"]) == 4
    clf.set_params(warm_start=False).fit(X[keep], y[keep])
    assert clf.model_ is not model and len(clf.history_["loss"]) == 2

    first = MetaClassifier(**_tiny()).partial_fit(X[keep], y[keep])
    model = first.model_
    first.partial_fit(X[y >= 5], y[y >= 5])  # other classes: fine for ProtoNet
    assert first.model_ is model and len(first.history_["loss"]) == 2
    np.testing.assert_array_equal(first.classes_, [5, 6, 7, 8, 9])
    with pytest.raises(ValueError, match="X has 10 features"):
        first.partial_fit(X[:, :10], y)
    gradient = MetaClassifier(algorithm="maml", ways=3, **_tiny())
    gradient.partial_fit(X[y < 3], y[y < 3])
    with pytest.raises(ValueError, match="cannot continue meta-training"):
        gradient.partial_fit(X[y < 2], y[y < 2])


def test_dataframes_and_feature_names():
    X, y = _digits()
    keep = y < 3
    frame = pd.DataFrame(X[keep], columns=[f"pixel_{i}" for i in range(64)])
    labels = pd.Series(y[keep], name="digit")
    clf = MetaClassifier(**_tiny()).fit(frame, labels)
    np.testing.assert_array_equal(clf.feature_names_in_, frame.columns)
    assert clf.n_features_in_ == 64
    assert isinstance(clf.predict(frame), np.ndarray)
    with pytest.warns(UserWarning, match="does not have valid feature names"):
        clf.predict(X[keep])
    renamed = frame.rename(columns={"pixel_0": "other"})
    with pytest.raises(ValueError, match="feature names should match"):
        clf.predict(renamed)
    with pytest.raises(ValueError, match="feature names should match"):
        clf.adapt(renamed, labels)
    # A scaler that outputs DataFrames hands named columns to the estimator.
    pipe = Pipeline(
        [
            ("scale", StandardScaler().set_output(transform="pandas")),
            ("meta", MetaClassifier(**_tiny())),
        ]
    ).fit(frame, labels)
    np.testing.assert_array_equal(pipe[-1].feature_names_in_, frame.columns)
    assert pipe.score(frame, labels) > 0.8


# -------------------------------------------------------------- regression


def _sinusoid_rows(tasks, rows, seed):
    """Rows of `tasks` sinusoid tasks as (X, y, groups), MAML-paper ranges."""
    data = SinusoidTasks(
        shots=rows, queries=1, meta_batch_size=tasks, steps=1, seed=seed
    )[0]
    X = data["support_x"].reshape(-1, 1)
    y = data["support_y"].reshape(-1)
    groups = np.repeat(np.arange(tasks), rows)
    return X, y, groups


def test_regression_with_groups_beats_no_meta_baseline():
    X, y, groups = _sinusoid_rows(tasks=200, rows=20, seed=0)
    settings = dict(
        shots=10,
        queries=10,
        meta_batch_size=10,
        inner_learning_rate=0.01,
        adapt_steps=10,
        learning_rate=0.003,
        steps_per_epoch=50,
        vectorize_tasks=True,
        random_state=0,
    )
    meta = MetaRegressor(epochs=4, **settings).fit(X, y, groups=groups)
    assert meta.n_groups_ == 200
    assert len(meta.history_["loss"]) == 4
    baseline = MetaRegressor(epochs=0, **settings).fit(X, y)  # no meta-training
    X_new, y_new, g_new = _sinusoid_rows(tasks=15, rows=30, seed=1)
    errors = {"meta": [], "baseline": [], "mean": []}
    for task in range(15):
        rows = np.flatnonzero(g_new == task)
        support, query = rows[:10], rows[10:]
        for name, model in (("meta", meta), ("baseline", baseline)):
            prediction = model.adapt(X_new[support], y_new[support]).predict(
                X_new[query]
            )
            errors[name].append(np.mean((prediction - y_new[query]) ** 2))
        errors["mean"].append(np.mean((y_new[support].mean() - y_new[query]) ** 2))
    meta_mse = np.mean(errors["meta"])
    assert meta_mse < 0.8 * np.mean(errors["baseline"]), errors
    assert meta_mse < 0.8 * np.mean(errors["mean"]), errors


def test_regression_groups_validation_and_shapes():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 2))
    y2 = np.c_[X.sum(1), X[:, 0] - X[:, 1]]
    groups = np.repeat([0, 1, 2], 10)
    reg = MetaRegressor(shots=3, queries=20, **_tiny()).fit(X, y2, groups=groups)
    assert reg.queries_ == 7 and reg.n_outputs_ == 2
    assert reg.predict(X).shape == (30, 2)
    assert reg.adapt(X[:5], y2[:5]).predict(X).shape == (30, 2)
    with pytest.raises(ValueError, match="1 target"):
        reg.adapt(X[:5], y2[:5, 0])
    with pytest.raises(ValueError, match=r"task 'small' has 2 samples"):
        MetaRegressor(shots=3, **_tiny()).fit(
            X, y2[:, 0], groups=np.array(["big"] * 28 + ["small"] * 2)
        )
    with pytest.raises(ValueError, match="one task label per row"):
        MetaRegressor(shots=3, **_tiny()).fit(X, y2[:, 0], groups=groups[:10])
    with pytest.raises(ValueError, match="Input y contains NaN"):
        MetaRegressor(shots=3, **_tiny()).fit(X, np.r_[np.nan, y2[1:, 0]])


def test_regression_groups_route_through_grid_search():
    X, y, groups = _sinusoid_rows(tasks=12, rows=10, seed=0)
    sklearn.set_config(enable_metadata_routing=True)
    try:
        reg = MetaRegressor(shots=4, **_tiny()).set_fit_request(groups=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            search = GridSearchCV(reg, {"inner_learning_rate": [0.01, 0.05]}, cv=2).fit(
                X, y, groups=groups
            )
        assert search.best_estimator_.n_groups_ == 12
    finally:
        sklearn.set_config(enable_metadata_routing=False)


@requires_cuda
def test_random_state_draws_the_same_initial_weights_on_every_device():
    from metakeras.sklearn import _drawn_on_cpu

    def make():
        return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])

    keras.utils.set_random_seed(0)
    on_gpu = _drawn_on_cpu(make)
    after_gpu = np.random.random()
    keras.utils.set_random_seed(0)
    with keras.device("cpu"):
        on_cpu = make()
    assert np.random.random() == after_gpu  # later draws are unchanged too
    assert on_gpu.weights[0].value.device.type == "cuda"
    for a, b in zip(on_gpu.get_weights(), on_cpu.get_weights()):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------- algorithm settings


def test_settings_default_to_the_registry_per_task():
    X, y = _digits()
    keep = y < 3
    clf = MetaClassifier(algorithm="maml", ways=3, **_tiny()).fit(X[keep], y[keep])
    maml = metakeras.models.get("maml")
    assert clf.model_.inner.learning_rate == maml.default(
        "inner_learning_rate", "classification"
    )
    Xr, yr, groups = _sinusoid_rows(tasks=4, rows=8, seed=0)
    reg = MetaRegressor(algorithm="reptile", shots=3, **_tiny())
    reg.fit(Xr, yr, groups=groups)
    assert reg.model_.inner.learning_rate == 0.01
    assert reg.model_.inner.steps == 5 and reg.model_.inner.first_order
    # fomaml fixes first_order; protonet ignores the inner-loop settings.
    clf = MetaClassifier(algorithm="fomaml", first_order=False, ways=3, **_tiny())
    assert clf.fit(X[keep], y[keep]).model_.inner.first_order is True
    clf = MetaClassifier(inner_steps=4, zero_head=True, ways=3, **_tiny())
    assert isinstance(clf.fit(X[keep], y[keep]).model_, metakeras.ProtoNet)


def test_inner_settings_reach_the_model_and_are_checked_in_fit():
    X, y = _digits()
    keep = y < 3
    clf = MetaClassifier(
        algorithm="metasgd",
        ways=3,
        shots=2,
        inner_steps=2,
        inner_batch_size=4,
        inner_shuffle=False,
        inner_global_clipnorm=2.0,
        **_tiny(),
    ).fit(X[keep], y[keep])
    assert (
        clf.model_.inner.get_config()
        == metakeras.InnerLoop(
            steps=2,
            learning_rate=0.4,
            batch_size=4,
            shuffle=False,
            global_clipnorm=2.0,
        ).get_config()
    )
    for param, value, message in (
        ("inner_clipnorm", -1.0, "`inner_clipnorm` must be None or a positive number"),
        ("inner_shuffle", "no", "`inner_shuffle` must be None or true or false"),
        ("zero_head", 1, "`zero_head` must be None or true or false"),
        ("inner_steps", -1, "`inner_steps` must be None or an integer >= 0"),
    ):
        estimator = MetaClassifier(**{param: value})  # __init__ only stores
        assert estimator.get_params()[param] == value
        with pytest.raises(ValueError, match=message):
            estimator.fit(X[keep], y[keep])


def test_inner_clipnorm_bounds_the_adaptation_step():
    # Targets far from the untrained predictions: large inner gradients.
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 2)).astype("float32")
    y = 100.0 + 50.0 * X[:, 0]
    moved = {}
    for clip in (None, 0.5):
        reg = MetaRegressor(
            inner_learning_rate=0.01,
            inner_clipnorm=clip,
            adapt_steps=1,
            epochs=0,
            random_state=0,
        ).fit(X, y)
        start = reg.model_.learner.get_weights()
        adapted = reg.adapted_model_.get_weights()
        moved[clip] = [np.linalg.norm(a - s) for a, s in zip(adapted, start)]
    # One step of lr * clipped gradient: each weight moves at most 0.01 * 0.5.
    assert max(moved[0.5]) <= 0.01 * 0.5 * (1 + 1e-5)
    assert max(moved[0.5]) > 0.9 * 0.01 * 0.5
    assert max(moved[None]) > 10 * 0.01 * 0.5


def test_zero_head_zeroes_the_head_during_meta_training():
    X, y = _digits()
    keep = y < 3
    for zero_head in (False, True):
        clf = MetaClassifier(
            algorithm="maml", ways=3, zero_head=zero_head, **_tiny()
        ).fit(X[keep], y[keep])
        kernel, bias = clf.model_.learner.get_layer("head").get_weights()
        zeroed = bool(np.abs(kernel).max() == 0.0 and np.abs(bias).max() == 0.0)
        assert zeroed is zero_head
        # The adapted head is not zero: one inner step moved it.
        assert np.abs(clf.adapted_model_.get_layer("head").get_weights()[0]).max() > 0
    # ZeroHead runs before the estimator's own callbacks.
    seen = []

    class Probe(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            head = self.model.learner.get_layer("head").get_weights()[0]
            seen.append(float(np.abs(head).max()))

    MetaClassifier(
        algorithm="anil", ways=3, zero_head=True, callbacks=[Probe()], **_tiny()
    ).fit(X[keep], y[keep])
    assert seen == [0.0, 0.0]


def _batch_norm_learner(n_features, n_outputs):
    return keras.Sequential(
        [
            keras.Input((n_features,)),
            keras.layers.Dense(8),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(n_outputs, name="head"),
        ]
    )


def test_transductive_eval_predicts_with_the_rows_batch_statistics():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 3))
    y = X.sum(1) + np.repeat([0.0, 1.0, 2.0], 10)
    groups = np.repeat([0, 1, 2], 10)
    predictions = {}
    for transductive in (False, True):
        reg = MetaRegressor(
            learner=_batch_norm_learner,
            shots=3,
            transductive_eval=transductive,
            **_tiny(),
        ).fit(X, y, groups=groups)
        assert reg.model_.transductive_eval is transductive
        state = [w.copy() for w in reg.adapted_model_.get_weights()]
        together = reg.predict(X)
        alone = reg.predict(X[:5])
        predictions[transductive] = together
        # Predicting leaves the adapted model's moving statistics alone.
        for before, after in zip(state, reg.adapted_model_.get_weights()):
            np.testing.assert_array_equal(before, after)
        # With batch statistics a row's prediction depends on the other rows.
        same = bool(np.allclose(together[:5], alone, atol=1e-6))
        assert same is not transductive
    assert not np.allclose(predictions[False], predictions[True])


def test_per_step_bn_statistics_reach_the_model():
    X, y = _digits()
    keep = y < 3
    clf = MetaClassifier(
        algorithm="maml",
        learner=_batch_norm_learner,
        ways=3,
        inner_steps=2,
        per_step_bn_statistics=True,
        **_tiny(),
    ).fit(X[keep], y[keep])
    assert clf.model_.per_step_bn_statistics
    assert [tuple(v.shape)[0] for v in clf.model_.step_statistics] == [3, 3]
    with pytest.raises(ValueError, match="needs a learner with BatchNormalization"):
        MetaClassifier(
            algorithm="maml", ways=3, per_step_bn_statistics=True, **_tiny()
        ).fit(X[keep], y[keep])
    # Reptile does not take the setting: the estimator ignores it.
    reptile = MetaClassifier(
        algorithm="reptile", ways=3, per_step_bn_statistics=True, **_tiny()
    ).fit(X[keep], y[keep])
    assert not reptile.model_.per_step_bn_statistics
