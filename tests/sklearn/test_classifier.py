"""Tests of `MetaClassifier` in use: pipelines, adaptation, bad input, state."""

import pickle

import keras
import numpy as np
import pandas as pd
import pytest
from conftest import CUDA, mlp
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn_helpers import (  # tests/sklearn/sklearn_helpers.py
    _digits,
    _few_shot_split,
    _tiny,
)

from metakeras.sklearn import MetaClassifier, MetaRegressor

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
        validation_fraction=None,
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
    model = mlp(hidden=8, outputs=3, inputs=4)
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
    # No held-out classes: the model trained is the one restored.
    unfitted = MetaClassifier(learner=learner, validation_fraction=None, **_tiny())
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
