"""Tests of the algorithm settings (registry defaults, inner loop, BN, zero head)."""

import keras
import numpy as np
import pytest
from sklearn_helpers import (  # tests/sklearn/sklearn_helpers.py
    _batch_norm_learner,
    _digits,
    _sinusoid_rows,
    _tiny,
)

import metakeras
from metakeras.sklearn import MetaClassifier, MetaRegressor


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
