"""`MetaClassifier` checks its meta-trained model on held-out classes."""

import pickle

import keras
import numpy as np
import pytest
from sklearn.neighbors import NearestCentroid
from sklearn_helpers import _digits, _few_shot_split  # tests/sklearn/sklearn_helpers.py

from metakeras.sklearn import MetaClassifier


def _noisy_classes(classes=12, rows=30, seed=0):
    """Rows whose class lies in 2 of 42 features; the other 40 are noise.

    The nearest class mean of the raw rows drowns in the noise; an embedding
    learned on some classes finds the 2 features for all of them.
    """
    rng = np.random.default_rng(seed)
    angles = rng.permutation(classes) * 2 * np.pi / classes
    centres = 2 * np.stack([np.cos(angles), np.sin(angles)], 1)
    y = np.repeat(np.arange(classes), rows)
    signal = centres[y] + 0.1 * rng.normal(size=(len(y), 2))
    noise = rng.normal(size=(len(y), 40))
    return np.hstack([signal, noise]).astype("float32"), y


def test_defaults_fall_back_to_the_rows_where_meta_training_does_not_help(tmp_path):
    X, y = _digits()
    seen = y < 6
    clf = MetaClassifier(random_state=0).fit(X[seen], y[seen])
    assert len(clf.validation_classes_) == 2
    assert set(clf.validation_classes_) < set(range(6))
    assert set(clf.validation_scores_) == {
        "meta-trained",
        "soft nearest neighbours",
        "soft nearest neighbours, CL2N",
    }
    assert clf.selected_ in ("soft nearest neighbours", "soft nearest neighbours, CL2N")
    # Kept unless the meta-trained model won by 5 points (`_MARGIN`).
    scores = clf.validation_scores_
    assert scores["meta-trained"] < scores[clf.selected_] + 0.05
    # The fallback classifies new classes as a Gaussian kernel over the
    # (transformed) support rows does, its width a tenth of the median squared
    # distance between training rows.
    trained = seen & ~np.isin(y, clf.validation_classes_)
    rows = X.astype("float64")
    if clf.selected_.endswith("CL2N"):
        centred = rows - rows[trained].mean(0)
        rows = centred / np.linalg.norm(centred, axis=1, keepdims=True)
    squared = ((rows[trained][:, None] - rows[trained][None]) ** 2).sum(-1)
    median = np.median(squared[np.triu_indices(int(trained.sum()), 1)])
    np.testing.assert_allclose(clf.model_.scale, 1 / (0.1 * median), rtol=0.05)
    support, others = _few_shot_split(y, [6, 7, 8, 9], 5, np.random.default_rng(0))
    clf.adapt(X[support], y[support])
    distances = ((rows[others][:, None] - rows[support][None]) ** 2).sum(-1)
    kernel = np.exp(-clf.model_.scale * (distances - distances.min(1, keepdims=True)))
    votes = np.stack([kernel[:, y[support] == c].sum(1) for c in range(6, 10)], 1)
    expected = votes.argmax(1) + 6
    np.testing.assert_array_equal(clf.predict(X[others]), expected)
    assert clf.n_outputs_ is None
    restored = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(restored.predict(X[others]), expected)
    path = tmp_path / "rows.keras"
    clf.model_.save(path)
    loaded = keras.models.load_model(path)
    logits = loaded.adapt_and_predict(
        X[support][None].astype("float32"),
        (y[support] - 6)[None],
        X[others][None].astype("float32"),
    )
    np.testing.assert_array_equal(logits[0].argmax(-1) + 6, expected)


def test_meta_trained_model_is_kept_where_it_beats_the_rows():
    X, y = _noisy_classes()
    clf = MetaClassifier(epochs=30, random_state=0).fit(X, y)
    scores = clf.validation_scores_
    assert clf.selected_ == "meta-trained"
    assert scores["meta-trained"] > scores["soft nearest neighbours"] + 0.2
    # The held-out classes were never trained on, yet the model knows them.
    assert len(clf.validation_classes_) == 2
    X_new, y_new = _noisy_classes(seed=1)
    support, others = _few_shot_split(
        y_new, [0, 1, 2, 3, 4], 1, np.random.default_rng(0)
    )
    clf.adapt(X_new[support], y_new[support])
    nearest = NearestCentroid().fit(X_new[support], y_new[support])
    assert (
        clf.score(X_new[others], y_new[others])
        > nearest.score(X_new[others], y_new[others]) + 0.2
    )


def test_without_validation_every_class_trains_and_the_model_is_kept():
    X, y = _noisy_classes(classes=6)
    clf = MetaClassifier(epochs=1, validation_fraction=None, random_state=0).fit(X, y)
    assert clf.selected_ == "meta-trained" and clf.validation_scores_ is None
    assert len(clf.validation_classes_) == 0
    # Too few classes to spare two: nothing is held out either.
    clf = MetaClassifier(epochs=1, random_state=0).fit(X[y < 3], y[y < 3])
    assert len(clf.validation_classes_) == 0 and clf.selected_ == "meta-trained"


def test_a_model_that_fell_back_meta_trains_afresh_on_warm_start():
    X, y = _digits()
    seen = y < 6
    clf = MetaClassifier(random_state=0).fit(X[seen], y[seen])
    assert clf.selected_ != "meta-trained"
    assert len(clf.model_.trainable_variables) == 0  # the rows themselves
    clf.partial_fit(X[seen], y[seen])
    assert clf.selected_ == "meta-trained"  # partial_fit does not hold out
    assert len(clf.history_["loss"]) == 1
    assert len(clf.model_.trainable_variables) > 0


def test_steps_per_epoch_defaults_to_one_pass_over_the_training_rows():
    X, y = _noisy_classes(classes=10, rows=30)

    class Count(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.batches = 0

        def on_train_batch_end(self, batch, logs=None):
            self.batches += 1

    count = Count()
    MetaClassifier(
        ways=4, shots=1, queries=4, meta_batch_size=2, epochs=3, callbacks=[count]
    ).fit(X, y)
    # 8 training classes x 30 rows, 2 episodes of 4 x (1 + 4) rows per batch.
    assert count.batches == 3 * int(np.ceil(8 * 30 / (2 * 4 * 5)))


@pytest.mark.parametrize("fraction", [0, 1, 1.5, -0.2, "0.2", np.nan])
def test_invalid_validation_fraction_is_named(fraction):
    X, y = _noisy_classes(classes=6)
    with pytest.raises(ValueError, match=r"`validation_fraction` must be None or"):
        MetaClassifier(validation_fraction=fraction).fit(X, y)


def test_a_small_held_out_gain_keeps_the_simpler_model():
    # Beyond the CI of 20 tasks but under the 5-point margin: the simpler
    # model stays; a gain past both replaces it.
    from metakeras.sklearn.classifier import _beats

    baseline = np.full(20, 0.90)
    assert not _beats(baseline + 0.03, baseline)
    assert _beats(baseline + 0.06, baseline)
    noisy = baseline + 0.06 + np.tile([0.3, -0.3], 10)
    assert not _beats(noisy, baseline)  # past the margin, not past the CI
