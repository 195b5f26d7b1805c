"""Baseline and Baseline++: the heads against hand computations and torch.optim."""

import math

import keras
import numpy as np
import pytest
import torch
from conftest import LOSS, assert_adapts_alike_after_saving, labelled_classes, mlp

import metakeras
from metakeras.models import (
    Baseline,
    BaselinePlusPlus,
    HeadClassifier,
    cosine_scale,
    fit_head,
    head_logits,
)
from metakeras.tasks import TaskSampler


def embedding():
    return mlp(hidden=16, outputs=6, inputs=8, activation="relu")


def numpy_embedding(model):
    w = [keras.ops.convert_to_numpy(v) for v in model.learner.weights]
    return lambda x: np.maximum(x @ w[0] + w[1], 0) @ w[2] + w[3]


def test_head_logits_are_the_linear_and_the_scaled_cosine_scores():
    rng = np.random.default_rng(0)
    x, w, b = rng.normal(size=(5, 4)), rng.normal(size=(3, 4)), rng.normal(size=3)
    linear = head_logits(*(torch.tensor(a) for a in (x, w, b))).numpy()
    np.testing.assert_allclose(linear, x @ w.T + b, rtol=1e-12)
    cosine = head_logits(
        torch.tensor(x), torch.tensor(w), head="cosine", scale=4.0
    ).numpy()
    expected = np.array(
        [[4 * u @ v / np.linalg.norm(u) / np.linalg.norm(v) for v in w] for u in x]
    )
    np.testing.assert_allclose(cosine, expected, rtol=1e-6)


def test_cosine_scale_grows_with_the_number_of_classes():
    # NormFace's bound log(9 (C - 1)) for a 0.9 probability: 10 is enough for
    # 1,000 classes, not for Omniglot's 3,856 rotated background classes.
    assert [cosine_scale(n) for n in (5, 200, 201, 1000, 1001, 3856)] == [
        2.0,
        2.0,
        10.0,
        10.0,
        30.0,
        30.0,
    ]
    assert math.log(9 * 999) < 10.0 < math.log(9 * 3855) < 30.0
    model = BaselinePlusPlus(embedding(), num_classes=3856)
    assert float(model.head_scale.numpy()) == 30.0
    assert model._task_scale(20) == 2.0
    assert BaselinePlusPlus(embedding(), scale=5.0)._task_scale(20) == 5.0


@pytest.mark.parametrize("head", ["linear", "cosine"])
def test_fit_head_takes_the_steps_of_torch_sgd(head):
    rng = np.random.default_rng(1)
    support = torch.tensor(rng.normal(size=(3, 6, 5)), dtype=torch.float64)
    labels = torch.tensor(np.tile([0, 1, 2], (3, 2)))
    weights, bias = fit_head(
        support, labels, 3, head=head, scale=3.0, steps=20, batch_size=6
    )
    for task in range(3):
        x, y = support[task], labels[task]
        # The paper's fine-tuning optimizer on the same start: zero, or the
        # class means for the cosine head (the batch is the whole set).
        means = torch.stack([x[y == c].mean(0) for c in range(3)])
        kernel = (means if head == "cosine" else torch.zeros(3, 5)).double()
        kernel.requires_grad_()
        offset = torch.zeros(3, dtype=torch.float64, requires_grad=True)
        params = [kernel, offset] if head == "linear" else [kernel]
        sgd = torch.optim.SGD(
            params, lr=0.01, momentum=0.9, dampening=0.9, weight_decay=1e-3
        )
        for _ in range(20):
            sgd.zero_grad()
            if head == "linear":
                logits = x @ kernel.T + offset
            else:
                unit = x / x.norm(dim=1, keepdim=True)
                logits = 3.0 * unit @ (kernel / kernel.norm(dim=1, keepdim=True)).T
            torch.nn.functional.cross_entropy(logits, y).backward()
            sgd.step()
        np.testing.assert_allclose(weights[task], kernel.detach(), rtol=1e-5)
        if head == "linear":
            np.testing.assert_allclose(bias[task], offset.detach(), rtol=1e-5)
        else:
            assert not bias[task].any()
    # One task without a task axis is the same fit.
    alone = fit_head(
        support[1], labels[1], 3, head=head, scale=3.0, steps=20, batch_size=6
    )
    np.testing.assert_allclose(alone[0], weights[1], rtol=1e-12)


def test_fit_head_defaults_to_100_passes_of_batches_of_4_and_separates_classes():
    support = torch.tensor([[2.0, 0.0], [0.0, 2.0], [-2.0, -2.0]]).repeat(2, 1)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    weights, bias = fit_head(support, labels, 3)
    same = fit_head(support, labels, 3, steps=100 * math.ceil(6 / 4))
    np.testing.assert_array_equal(weights, same[0])
    longer = fit_head(support, labels, 3, steps=100 * math.ceil(6 / 4) + 1)
    assert not torch.equal(weights, longer[0])
    predicted = head_logits(support, weights, bias).argmax(-1)
    assert predicted.tolist() == labels.tolist()
    # A large support set takes batches of a tenth of it: 1,000 steps.
    many, classes = support.repeat(20, 1), labels.repeat(20)
    np.testing.assert_array_equal(
        fit_head(many, classes, 3, steps=1000, batch_size=12)[0],
        fit_head(many, classes, 3)[0],
    )


def test_pretraining_on_episodes_trains_on_their_base_classes():
    # One step on an episode whose `classes` and `rotations` name the base
    # classes equals one step on the same examples labelled by hand.
    rng = np.random.default_rng(2)
    sx = rng.normal(size=(2, 4, 8)).astype("float32")
    qx = rng.normal(size=(2, 2, 8)).astype("float32")
    sy, qy = np.array([[0, 1, 0, 1], [1, 0, 1, 0]]), np.array([[1, 0], [0, 1]])
    classes, rotations = np.array([[3, 0], [2, 1]]), np.array([[0, 90], [270, 0]])
    episode = dict(
        support_x=sx,
        support_y=sy,
        query_x=qx,
        query_y=qy,
        classes=classes,
        rotations=rotations,
    )

    def base(labels):  # the class id times 4 rotations, plus the rotation
        task = np.arange(2)[:, None]
        return (classes[task, labels] * 4 + rotations[task, labels] // 90).ravel()

    x = np.concatenate([sx.reshape(-1, 8), qx.reshape(-1, 8)])
    y = np.concatenate([base(sy), base(qy)])
    assert y.tolist() == [12, 1, 12, 1, 4, 11, 4, 11, 1, 12, 11, 4]
    weights = []
    for batch in (episode, (x, y)):
        keras.utils.set_random_seed(3)
        model = Baseline(embedding(), num_classes=16)
        model.compile(keras.optimizers.SGD(0.1), LOSS)
        model.train_on_batch(*(batch if isinstance(batch, tuple) else (batch,)))
        weights.append(model.get_weights())
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("cls", [Baseline, BaselinePlusPlus])
def test_training_adapting_and_saving(cls, tmp_path):
    x, y = labelled_classes()
    model = cls(embedding())
    model.compile("adam", LOSS, metrics=["accuracy"])
    history = model.fit(x[y < 8], y[y < 8] * 10, batch_size=32, epochs=8, verbose=0)
    assert model.num_classes == 8  # the labels are mapped to 0..7
    assert history.history["loss"][-1] < history.history["loss"][0]
    # 20 tasks: over 2 tasks (24 queries) the accuracy moved by 0.2 with the
    # initial weights' seed and with the machine's float summation order.
    test = TaskSampler(
        x, y, ways=4, shots=2, queries=3, meta_batch_size=20, classes=range(8, 12)
    )[0]
    sx, sy, qx = test["support_x"], test["support_y"], test["query_x"]
    logits = model.adapt_and_predict(sx, sy, qx)
    # The hand computation: the numpy embedding, a head fitted on its support
    # embeddings, scored as `head_logits`; Baseline++'s task head uses scale 2.
    embed = numpy_embedding(model)
    head = dict(head=model.head, scale=2.0)
    kernel, bias = fit_head(torch.tensor(embed(sx)), torch.tensor(sy), 4, **head)
    expected = head_logits(torch.tensor(embed(qx)), kernel, bias, **head).numpy()
    np.testing.assert_allclose(logits, expected, rtol=1e-3, atol=1e-4)
    # Chance is 0.25; seeds 0-9 gave 0.80-1.00 for both heads.
    assert (logits.argmax(-1) == test["query_y"]).mean() > 0.6
    classifier = model.adapt(sx[1], sy[1])
    assert isinstance(classifier, HeadClassifier)
    restored = assert_adapts_alike_after_saving(model, classifier, test, 1, tmp_path)
    assert isinstance(restored, cls) and restored.num_classes == 8


def test_finetune_trains_a_copy_of_the_embedding_per_task():
    x, y = labelled_classes()
    model = Baseline(embedding(), adapt_steps=6, adapt_learning_rate=0.5, finetune=True)
    model.compile("adam", LOSS)
    model.fit(x[y < 8], y[y < 8], batch_size=32, epochs=2, verbose=0)
    before = model.get_weights()
    test = TaskSampler(
        x, y, ways=3, shots=2, queries=2, meta_batch_size=1, classes=range(8, 12)
    )[0]
    sx, sy, qx = test["support_x"], test["support_y"], test["query_x"]
    logits = model.adapt_and_predict(sx, sy, qx)
    classifier = model.adapt(sx[0], sy[0])
    np.testing.assert_allclose(
        classifier.predict(qx[0], verbose=0), logits[0], rtol=1e-5, atol=1e-5
    )
    tuned = classifier.embedding.get_weights()
    assert not np.allclose(tuned[0], model.learner.get_weights()[0])
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    frozen = Baseline.from_config({**model.get_config(), "finetune": False})
    frozen.set_weights(model.get_weights())
    frozen.compile(loss=LOSS)
    assert not np.allclose(frozen.adapt_and_predict(sx, sy, qx), logits)


def test_errors_name_the_remedy():
    model = Baseline(embedding())
    model.compile("adam", LOSS)
    episodes = metakeras.tasks.TaskSampler(*labelled_classes(), ways=3)[0]
    del episodes["classes"]
    with pytest.raises(ValueError, match="pass `num_classes=`"):
        model.fit(episodes, batch_size=8, verbose=0)
    counted = Baseline(embedding(), num_classes=5)
    counted.compile("adam", LOSS)
    with pytest.raises(ValueError, match="must carry `classes`"):
        counted.train_on_batch(episodes)
    with pytest.raises(ValueError, match="holds 12 base classes, but the model"):
        counted.fit(*labelled_classes(), verbose=0)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\]"):
        counted.train_on_batch(np.zeros((2, 8), "float32"), np.array([0, 7]))
    with pytest.raises(ValueError, match="`y` goes with arrays"):
        counted.fit(episodes, np.zeros(3), verbose=0)
    with pytest.raises(ValueError, match="head is 'linear' .*head='cosine'"):
        Baseline(embedding(), head="cosine")
    with pytest.raises(ValueError, match="num_classes=1"):
        Baseline(embedding(), num_classes=1)
    with pytest.raises(ValueError, match="adapt_batch_size=0"):
        Baseline(embedding(), adapt_batch_size=0)
    with pytest.raises(
        ValueError,
        match="`steps` must be None or a positive integer. Received: steps=0",
    ):
        counted.adapt(np.zeros((2, 8), "float32"), np.array([0, 1]), steps=0)


def test_jit_compile_warns_and_trains_eagerly():
    x, y = labelled_classes()
    model = Baseline(embedding())
    model.compile("adam", LOSS, jit_compile=True)
    with pytest.warns(UserWarning, match="Baseline trains eagerly because its"):
        history = model.fit(x, y, batch_size=64, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
