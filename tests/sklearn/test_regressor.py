"""Tests of `MetaRegressor` (tasks from `groups`) and of device-independent seeds."""

import warnings

import keras
import numpy as np
import pytest
import sklearn
from conftest import requires_cuda
from sklearn.model_selection import GridSearchCV
from sklearn_helpers import (  # tests/sklearn/sklearn_helpers.py
    _sinusoid_rows,
    _tiny,
)

from metakeras.sklearn import MetaRegressor


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
    from metakeras.sklearn._base import _drawn_on_cpu

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
