"""Mistakes that used to pass silently or fail deep inside PyTorch get a clear error."""

import warnings

import keras
import numpy as np
import pytest
from conftest import mlp, random_episodes

import metakeras

SCE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def learner(outputs=3):
    return mlp(hidden=8, outputs=outputs, inputs=4, activation="relu")


def episodes(**kwargs):
    return random_episodes((4,), grouped=True, **kwargs)


def compiled(model):
    model.compile("adam", SCE, metrics=["accuracy"])
    return model


def test_fractional_classification_labels():
    model = compiled(metakeras.MAML(learner(), inner_learning_rate=0.1))
    batch = episodes()
    batch["query_y"] = batch["query_y"] + 0.5
    with pytest.raises(ValueError, match=r"`query_y` holds the fractional label 0.5"):
        model.train_on_batch(batch)
    whole = episodes()
    whole["support_y"] = whole["support_y"].astype("float32")
    model.train_on_batch(whole)  # whole numbers stored as floats are labels


def test_multi_output_regression_targets_are_not_labels():
    model = metakeras.MAML(learner(2), inner_learning_rate=0.01)
    model.compile("adam", "mse")
    batch = episodes()
    batch["support_y"] = (
        np.random.default_rng(1).normal(size=(2, 6, 2)).astype("float32")
    )
    batch["query_y"] = np.random.default_rng(2).normal(size=(2, 6, 2)).astype("float32")
    model.train_on_batch(batch)


def test_one_way_episodes_and_one_output_classifiers():
    protonet = compiled(metakeras.ProtoNet(learner(8)))
    with pytest.raises(
        ValueError, match="ProtoNet needs at least 2 classes per episode"
    ):
        protonet.train_on_batch(episodes(ways=1))
    maml = compiled(metakeras.MAML(learner(1), inner_learning_rate=0.1))
    with pytest.raises(ValueError, match=r"learner predicts 1 value\(s\) per example"):
        maml.train_on_batch(episodes(ways=1))
    x, y = np.zeros((10, 4), "float32"), np.repeat(np.arange(2), 5)
    with pytest.raises(ValueError, match="`ways` must be at least 2"):
        metakeras.tasks.TaskSampler(x, y, ways=1, shots=1, queries=1)


def test_protonet_query_labels_outside_the_support_classes():
    model = compiled(metakeras.ProtoNet(learner(8)))
    batch = episodes()
    batch["query_y"] = batch["query_y"].copy()
    batch["query_y"][0, 0] = 9
    message = r"`query_y` holds labels in \[0, 9\], but the support sets hold 3"
    with pytest.raises(ValueError, match=message):
        model.train_on_batch(batch)
    with pytest.raises(ValueError, match=message):
        model.evaluate(batch, verbose=0)


def test_predict_on_episodes_points_to_adapt_and_predict():
    model = compiled(metakeras.MAML(learner(), inner_learning_rate=0.1))
    model.train_on_batch(episodes())
    with pytest.raises(ValueError, match="use `model.adapt_and_predict"):
        model.predict(episodes(), verbose=0)
    tasks = metakeras.tasks.SinusoidTasks(steps=2, seed=0)
    with pytest.raises(ValueError, match="received episodes"):
        model.predict(tasks, verbose=0)


def test_fit_on_arrays_with_different_task_counts():
    model = compiled(metakeras.MAML(learner(), inner_learning_rate=0.1))
    batch = episodes(tasks=4)
    batch["query_x"] = batch["query_x"][:3]
    with pytest.raises(ValueError, match="`support_x` has 4 but `query_x` has 3"):
        model.fit(batch, batch_size=2, epochs=1, verbose=0)


@pytest.mark.parametrize(
    "argument, value",
    [
        ("inner_steps", -1),
        ("inner_learning_rate", -1.0),
        ("inner_batch_size", 0),
        ("inner_clipnorm", -1.0),
        ("inner_global_clipnorm", -2.0),
    ],
)
def test_errors_name_the_argument_as_written(argument, value):
    with pytest.raises(ValueError, match=rf"^`{argument}` must .* {argument}={value}$"):
        metakeras.MAML(learner(), **{argument: value})


def test_vectorize_tasks_with_channels_last_convolutions_falls_back():
    def build(vectorize):
        keras.utils.set_random_seed(0)
        conv = keras.Sequential(
            [
                keras.Input((8, 8, 1)),
                keras.layers.Conv2D(4, 3, padding="same", name="conv"),
                keras.layers.Flatten(),
                keras.layers.Dense(3),
            ]
        )
        return compiled(
            metakeras.MAML(conv, inner_learning_rate=0.1, vectorize_tasks=vectorize)
        )

    rng = np.random.default_rng(0)
    batch = episodes()
    for key in ("support_x", "query_x"):
        batch[key] = rng.random((2, 6, 8, 8, 1)).astype("float32")
    looped = build(False)
    looped.train_on_batch(batch)
    vectorized = build(True)
    with pytest.warns(
        UserWarning, match=r"'conv' \(Conv2D\) use data_format='channels_last'"
    ):
        vectorized.train_on_batch(batch)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # warned once, then quietly
        vectorized.train_on_batch(batch)
    looped.train_on_batch(batch)
    for a, b in zip(looped.get_weights(), vectorized.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_multi_input_learners_are_refused_up_front():
    left, right = keras.Input((3,), name="left"), keras.Input((2,), name="right")
    merged = keras.layers.Dense(3)(keras.layers.Concatenate()([left, right]))
    with pytest.raises(
        ValueError, match=r"The learner has 2 inputs \(\['left', 'right'\]\)"
    ):
        metakeras.MAML(keras.Model([left, right], merged))
    features = keras.Input((4,))
    two = keras.Model(
        features, [keras.layers.Dense(3)(features), keras.layers.Dense(1)(features)]
    )
    with pytest.raises(ValueError, match="The learner has 2 outputs"):
        metakeras.ProtoNet(two)


def test_fit_auto_verbosity_is_one_line_per_epoch_off_a_terminal(capsys):
    model = compiled(metakeras.MAML(learner(), inner_learning_rate=0.1))
    source = metakeras.tasks.TaskSampler(
        np.random.default_rng(0).normal(size=(30, 4)).astype("float32"),
        np.repeat(np.arange(3), 10),
        ways=3,
        shots=2,
        queries=2,
        meta_batch_size=2,
        steps=20,
        seed=0,
    )
    model.fit(source, epochs=2)  # verbose="auto", output captured: not a terminal
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(lines) == 4, lines  # "Epoch i/2" and one summary line per epoch
    assert lines[1].startswith("20/20")


@pytest.mark.parametrize("algorithm", ["maml", "protonet"])
def test_conv_learners_refuse_images_without_their_channel_axis(algorithm):
    # Torch would read 6 images of 16x16 as one 6-channel image.
    keras.utils.set_random_seed(0)
    outputs = 3 if algorithm == "maml" else None
    learner = metakeras.models.conv4(
        input_shape=(1, 16, 16), outputs=outputs, filters=4
    )
    model = compiled(metakeras.models.get(algorithm).create(learner, "classification"))
    rng = np.random.default_rng(0)
    batch = {
        "support_x": rng.random((2, 6, 1, 16, 16), dtype="float32"),
        "support_y": np.tile(np.repeat(np.arange(3), 2), (2, 1)),
        "query_x": rng.random((2, 6, 1, 16, 16), dtype="float32"),
        "query_y": np.tile(np.repeat(np.arange(3), 2), (2, 1)),
    }
    model.train_on_batch(batch)
    flat = {k: v[:, :, 0] if k.endswith("_x") else v for k, v in batch.items()}
    message = r"feature shape \(16, 16\), but the learner expects inputs of shape \(1, 16, 16\)"
    with pytest.raises(ValueError, match=message):
        model.adapt(flat["support_x"][0], flat["support_y"][0])
    with pytest.raises(ValueError, match=message):
        model.adapt_and_predict(flat["support_x"], flat["support_y"], flat["query_x"])
    with pytest.raises(ValueError, match=message):
        metakeras.evaluation.evaluate_episodes(model, flat, verbose=0)
    with pytest.raises(ValueError, match=message):
        model.fit(flat, batch_size=2, verbose=0)
