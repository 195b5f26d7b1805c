"""Matching Networks: the attention classifier against a hand computation."""

import keras
import numpy as np
import pytest
import torch

import metakeras
from metakeras.models import MatchingClassifier, MatchingNet, matching_logits

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def embedding(width=6):
    return keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(width),
        ]
    )


def episodes(tasks=2, ways=3, shots=2, queries=3, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(tasks, ways, 4)) * 3
    sy = np.tile(np.repeat(np.arange(ways), shots), (tasks, 1))
    qy = np.tile(np.repeat(np.arange(ways), queries), (tasks, 1))
    noise = lambda n: rng.normal(size=(tasks, n, 4))  # noqa: E731
    return {
        "support_x": (
            np.take_along_axis(centres, sy[..., None], 1) + noise(ways * shots)
        ).astype("float32"),
        "support_y": sy,
        "query_x": (
            np.take_along_axis(centres, qy[..., None], 1) + noise(ways * queries)
        ).astype("float32"),
        "query_y": qy,
    }


def hand_probabilities(query, support, labels, ways, scale, distance="cosine"):
    if distance == "euclidean":
        squared = ((query[:, None] - support[None]) ** 2).sum(-1)
        attention = np.exp(-scale * (squared - squared.min(1, keepdims=True)))
    else:
        q = query / np.linalg.norm(query, axis=1, keepdims=True)
        s = support / np.linalg.norm(support, axis=1, keepdims=True)
        attention = np.exp(scale * q @ s.T)
    attention /= attention.sum(1, keepdims=True)
    return np.stack([attention[:, labels == c].sum(1) for c in range(ways)], 1)


@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
def test_logits_are_the_papers_attention_probabilities(distance):
    rng = np.random.default_rng(0)
    query, support = rng.normal(size=(5, 6)), rng.normal(size=(8, 6))
    labels = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    logits = matching_logits(
        torch.tensor(query),
        torch.tensor(support),
        torch.tensor(labels),
        4,
        scale=0.3,
        distance=distance,
    ).numpy()
    probabilities = np.exp(logits - logits.max(1, keepdims=True))
    probabilities /= probabilities.sum(1, keepdims=True)
    expected = hand_probabilities(query, support, labels, 4, 0.3, distance)
    np.testing.assert_allclose(probabilities, expected, rtol=1e-6)


def test_euclidean_attention_goes_from_class_sizes_to_the_nearest_neighbour():
    rng = np.random.default_rng(1)
    query, support = rng.normal(size=(20, 3)), rng.normal(size=(7, 3))
    labels = np.array([0, 0, 0, 0, 1, 1, 2])
    args = (torch.tensor(query), torch.tensor(support), torch.tensor(labels), 3)
    sharp = matching_logits(*args, scale=1e4, distance="euclidean").numpy()
    nearest = ((query[:, None] - support[None]) ** 2).sum(-1).argmin(1)
    np.testing.assert_array_equal(sharp.argmax(1), labels[nearest])
    flat = matching_logits(*args, scale=1e-9, distance="euclidean").numpy()
    np.testing.assert_allclose(flat - flat[:, :1], np.log([[1, 0.5, 0.25]] * 20))


@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
def test_training_adapting_and_saving(tmp_path, distance):
    keras.utils.set_random_seed(0)
    model = MatchingNet(embedding(), scale=5.0, distance=distance)
    model.compile("adam", LOSS, metrics=["accuracy"])
    batch = episodes()
    first = model.train_on_batch(batch)[0]
    for _ in range(30):
        last = model.train_on_batch(batch)[0]
    assert last < first
    # The episodic path and the classifier adapt gives agree with the math.
    weights = [keras.ops.convert_to_numpy(w) for w in model.learner.weights]

    def embed(x):
        return np.maximum(x @ weights[0] + weights[1], 0) @ weights[2] + weights[3]

    sx, sy, qx = (batch[k][0] for k in ("support_x", "support_y", "query_x"))
    expected = hand_probabilities(embed(qx), embed(sx), sy, 3, 5.0, distance)
    logits = model.adapt_and_predict(sx[None], sy[None], qx[None])[0]
    got = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    classifier = model.adapt(sx, sy)
    assert isinstance(classifier, MatchingClassifier)
    np.testing.assert_allclose(
        classifier.predict(qx, verbose=0), logits, rtol=1e-5, atol=1e-5
    )
    model.save(tmp_path / "m.keras")
    restored = keras.models.load_model(tmp_path / "m.keras")
    assert isinstance(restored, MatchingNet) and restored.scale == 5.0
    assert restored.distance == distance
    np.testing.assert_allclose(
        restored.adapt_and_predict(sx[None], sy[None], qx[None])[0], logits, rtol=1e-5
    )
    classifier.save(tmp_path / "c.keras")
    np.testing.assert_allclose(
        keras.models.load_model(tmp_path / "c.keras").predict(qx, verbose=0),
        classifier.predict(qx, verbose=0),
        rtol=1e-6,
    )


def test_offered_by_the_registry_the_estimators_and_the_command():
    assert metakeras.models.get("matchingnet").cls is MatchingNet
    assert "matchingnet" in metakeras.models.available("classification")
    from sklearn.datasets import load_digits

    from metakeras.sklearn import MetaClassifier

    x, y = load_digits(return_X_y=True)
    estimator = MetaClassifier(
        algorithm="matchingnet", epochs=1, steps_per_epoch=3, random_state=0
    ).fit(x[y < 6] / 16, y[y < 6])
    few = np.concatenate([np.flatnonzero(y == c)[:3] for c in (6, 7, 8)])
    estimator.adapt(x[few] / 16, y[few])
    assert set(estimator.predict(x[y >= 6][:20] / 16)) <= {6, 7, 8}
    from metakeras.cli import build_parser

    args = build_parser().parse_args(["train", "--algorithm", "matchingnet"])
    assert args.algorithm == "matchingnet"
    with pytest.raises(ValueError, match="Unknown"):
        metakeras.models.get("matching")
