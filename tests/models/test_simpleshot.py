"""SimpleShot: CL2N and the nearest centroid against NumPy, the base mean, saving."""

import keras
import numpy as np
import pytest
import torch
from conftest import LOSS, assert_adapts_alike_after_saving, labelled_classes, mlp

from metakeras.models import (
    SimpleShot,
    SimpleShotClassifier,
    cl2n,
    conv4,
    simpleshot_logits,
)
from metakeras.tasks import TaskSampler


def numpy_simpleshot(query, support, labels, ways, mean):
    """Centre, L2-normalise, average per class, negative squared distance."""

    def transform(v):
        centred = v - mean
        return centred / np.linalg.norm(centred, axis=-1, keepdims=True)

    centroids = np.stack([transform(support)[labels == c].mean(0) for c in range(ways)])
    q = transform(query)
    return -(((q[:, None, :] - centroids[None]) ** 2).sum(-1))


def test_cl2n_nearest_centroid_matches_numpy():
    rng = np.random.default_rng(0)
    query, support = rng.normal(size=(2, 7, 5)), rng.normal(size=(2, 6, 5))
    labels, mean = (
        np.array([[0, 1, 2, 0, 1, 2], [2, 2, 1, 1, 0, 0]]),
        rng.normal(size=5),
    )
    logits = simpleshot_logits(
        *(torch.tensor(a) for a in (query, support, labels)), 3, torch.tensor(mean)
    ).numpy()
    for task in range(2):
        expected = numpy_simpleshot(query[task], support[task], labels[task], 3, mean)
        np.testing.assert_allclose(logits[task], expected, rtol=1e-6)
    transformed = cl2n(torch.tensor(query), torch.tensor(mean)).numpy()
    np.testing.assert_allclose(np.linalg.norm(transformed, axis=-1), 1.0, rtol=1e-6)


def test_base_mean_is_the_running_mean_of_the_training_embeddings():
    model = SimpleShot(mlp(hidden=16, outputs=6, inputs=8), num_classes=4, momentum=0.6)
    # A zero learning rate keeps the embedding fixed, so each batch's mean
    # embedding can be computed by hand.
    model.compile(keras.optimizers.SGD(0.0), LOSS)
    rng = np.random.default_rng(1)
    expected = np.zeros(6)
    for batch in range(1, 5):
        x = rng.normal(size=(10, 8)).astype("float32")
        model.train_on_batch(x, rng.integers(0, 4, 10))
        weight = max(1 / batch, 1 - 0.6)  # the running mean, then the average
        expected += weight * (model.learner.predict(x, verbose=0).mean(0) - expected)
    np.testing.assert_allclose(model.base_mean.numpy(), expected, rtol=1e-5, atol=1e-7)
    assert float(model.base_mean_batches.numpy()) == 4
    assert not model.base_mean.trainable


def test_training_adapting_and_saving(tmp_path):
    x, y = labelled_classes()
    model = SimpleShot(mlp(hidden=16, outputs=6, inputs=8, activation="relu"))
    model.compile("adam", LOSS, metrics=["accuracy"])
    sampler = TaskSampler(x, y, ways=4, shots=2, queries=2, classes=range(8), seed=0)
    history = model.fit(sampler, epochs=3, verbose=0)
    assert model.num_classes == 8
    assert history.history["loss"][-1] < history.history["loss"][0]
    mean = model.base_mean.numpy()
    assert np.abs(mean).sum() > 0
    # 20 tasks: the accuracy of 2 (24 queries) moves by 0.2 with the seed.
    test = TaskSampler(
        x, y, ways=4, shots=2, queries=3, meta_batch_size=20, classes=range(8, 12)
    )[0]
    sx, sy, qx = test["support_x"], test["support_y"], test["query_x"]
    logits = model.adapt_and_predict(sx, sy, qx)
    embed = model.learner.predict
    for task in range(20):
        expected = numpy_simpleshot(
            embed(qx[task], verbose=0), embed(sx[task], verbose=0), sy[task], 4, mean
        )
        np.testing.assert_allclose(logits[task], expected, rtol=1e-4, atol=1e-5)
    assert (logits.argmax(-1) == test["query_y"]).mean() > 0.6  # chance: 0.25
    classifier = model.adapt(sx[0], sy[0])
    assert isinstance(classifier, SimpleShotClassifier)
    restored = assert_adapts_alike_after_saving(model, classifier, test, 0, tmp_path)
    np.testing.assert_array_equal(restored.base_mean.numpy(), mean)
    with pytest.raises(ValueError, match="SimpleShot takes no gradient steps"):
        model.adapt(sx[0], sy[0], inner_steps=3)
    with pytest.raises(ValueError, match=r"`momentum` must lie in \[0, 1\)"):
        SimpleShot(mlp(inputs=8), momentum=1.0)


def test_inference_mode_embeds_many_tasks_in_slices_alike():
    # 2 tasks of 150 images: more than one slice of the CPU's inference
    # batch, so slices cross task boundaries.
    model = SimpleShot(conv4(filters=4, input_shape=(1, 28, 28)), num_classes=3)
    model.compile(keras.optimizers.SGD(0.1), LOSS)
    rng = np.random.default_rng(2)
    x = rng.random((300, 1, 28, 28)).astype("float32")
    model.fit(x[:12], rng.integers(0, 3, 12), batch_size=6, verbose=0)
    weights = [v.value.detach() for v in model.learner.trainable_variables]
    state = [v.value.detach() for v in model.learner.non_trainable_variables]
    tasks = torch.tensor(x).reshape(2, 150, 1, 28, 28)
    embedded = model._embed_tasks(weights, state, tasks, transductive=False)
    expected = model.learner.predict(x, verbose=0).reshape(2, 150, -1)
    np.testing.assert_allclose(embedded.numpy(), expected, rtol=1e-4, atol=1e-5)
