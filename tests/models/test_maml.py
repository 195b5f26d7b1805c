"""MAML through the Keras workflow: fit, evaluate, adapt, callbacks, saving."""

import keras
import numpy as np
import pytest
import torch
from conftest import (
    classification_episodes,
    classifier_maml,
    functional_classifier,
    mlp,
    sinusoid_tasks,
)

import metakeras


def sinusoid_maml(**kwargs):
    kwargs.setdefault("inner_learning_rate", 0.01)
    model = metakeras.MAML(mlp(hidden=32, activation="relu"), **kwargs)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse", metrics=["mae"])
    return model


def test_fit_returns_history_with_query_metrics():
    model = sinusoid_maml(vectorize_tasks=True)
    history = model.fit(
        sinusoid_tasks(),
        epochs=2,
        validation_data=sinusoid_tasks(seed=9, resample=False),
        verbose=0,
    )
    assert set(history.history) == {"loss", "mae", "val_loss", "val_mae"}
    assert len(history.history["loss"]) == 2
    assert all(np.isfinite(v) for v in history.history["val_loss"])


def test_evaluate_reports_query_mse_after_adaptation():
    model = sinusoid_maml(inner_steps=2)
    model.fit(sinusoid_tasks(), epochs=1, verbose=0)
    tasks = sinusoid_tasks(seed=5, steps=2, resample=False)
    result = model.evaluate(tasks, verbose=0, return_dict=True)
    episodes = tasks.as_episodes()
    predictions = model.adapt_and_predict(
        episodes["support_x"], episodes["support_y"], episodes["query_x"]
    )
    expected = float(((predictions - episodes["query_y"]) ** 2).mean())
    assert result["loss"] == pytest.approx(expected, rel=1e-5)
    # The unadapted query MSE is different: evaluate really adapts.
    unadapted = model.adapt_and_predict(
        episodes["support_x"], episodes["support_y"], episodes["query_x"], inner_steps=0
    )
    assert float(((unadapted - episodes["query_y"]) ** 2).mean()) != pytest.approx(
        expected, rel=1e-3
    )


def test_vectorized_and_sequential_tasks_train_identically():
    results = []
    for vectorize in (False, True):
        keras.utils.set_random_seed(1)
        model = sinusoid_maml(vectorize_tasks=vectorize, inner_steps=2)
        model.fit(sinusoid_tasks(), epochs=2, verbose=0)
        results.append(model.learner.get_weights())
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_adapt_leaves_meta_weights_and_lowers_support_loss():
    model = sinusoid_maml()
    model.fit(sinusoid_tasks(), epochs=2, verbose=0)
    batch = sinusoid_tasks(seed=3)[0]
    sx, sy = batch["support_x"][0], batch["support_y"][0]
    before = [w.copy() for w in model.learner.get_weights()]
    adapted = model.adapt(sx, sy, inner_steps=20)
    for a, b in zip(before, model.learner.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert adapted is not model.learner
    assert isinstance(adapted, keras.Model)
    loss_before = float(np.mean((model.learner.predict(sx, verbose=0) - sy) ** 2))
    loss_after = float(np.mean((adapted.predict(sx, verbose=0) - sy) ** 2))
    assert loss_after < 0.7 * loss_before
    # adapt and the batched path agree
    batched = model.adapt_and_predict(sx[None], sy[None], sx[None], inner_steps=20)[0]
    np.testing.assert_allclose(adapted.predict(sx, verbose=0), batched, atol=1e-5)


def test_steps_is_the_deprecated_name_of_inner_steps():
    model = sinusoid_maml()
    model.fit(sinusoid_tasks(), epochs=1, verbose=0)
    batch = sinusoid_tasks(seed=3)[0]
    sx, sy = batch["support_x"][:2], batch["support_y"][:2]
    expected = model.adapt_and_predict(sx, sy, sx, inner_steps=3)
    # Positional, as before the rename: the 4th parameter.
    np.testing.assert_array_equal(model.adapt_and_predict(sx, sy, sx, 3), expected)
    with pytest.warns(DeprecationWarning, match=r"`steps` of MAML.adapt_and_predict"):
        old = model.adapt_and_predict(sx, sy, sx, steps=3)
    np.testing.assert_array_equal(old, expected)
    adapted = model.adapt(sx[0], sy[0], inner_steps=3).get_weights()
    with pytest.warns(DeprecationWarning, match=r"Pass inner_steps=3\."):
        renamed = model.adapt(sx[0], sy[0], steps=3).get_weights()
    for a, b in zip(adapted, renamed, strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(TypeError, match=r"both `inner_steps` and .*`steps`"):
        model.adapt(sx[0], sy[0], inner_steps=2, steps=3)
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) \['step'\]"):
        model.adapt(sx[0], sy[0], step=3)
    # Messages name the argument as it is now spelled.
    with pytest.raises(ValueError, match=r"`inner_steps` .*Received: inner_steps=-1"):
        model.adapt_and_predict(sx, sy, sx, inner_steps=-1)


def test_meta_training_beats_pooled_baseline():
    from metakeras.demo import run_demo

    result = run_demo(
        seed=0,
        epochs=1,
        steps_per_epoch=800,
        eval_tasks=200,
        shots=(5,),
        eval_steps=(10,),
        verbose=0,
        write_files=False,
    )
    summary = result["summary"].set_index("model")
    maml, pooled = summary.loc["MAML"], summary.loc["pooled baseline"]
    assert maml["mse"] + maml["ci95"] < pooled["mse"] - pooled["ci95"]
    assert maml["mse"] < 0.6 * pooled["mse"]


def test_save_and_load_round_trip(tmp_path):
    model = sinusoid_maml(inner_steps=3, first_order=True)
    model.fit(sinusoid_tasks(), epochs=1, verbose=0)
    path = tmp_path / "maml.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, metakeras.MAML)
    for key in ("inner_steps", "inner_learning_rate", "first_order", "vectorize_tasks"):
        assert loaded.get_config()[key] == model.get_config()[key]
    assert [layer["class_name"] for layer in loaded.learner.get_config()["layers"]] == [
        layer["class_name"] for layer in model.learner.get_config()["layers"]
    ]
    batch = sinusoid_tasks(seed=4)[0]
    sx, sy, qx = batch["support_x"][0], batch["support_y"][0], batch["query_x"][0]
    np.testing.assert_allclose(
        model.adapt(sx, sy).predict(qx, verbose=0),
        loaded.adapt(sx, sy).predict(qx, verbose=0),
        atol=1e-6,
    )
    # The optimizer state came along: training continues identically.
    # (Keras shuffles the order of a PyDataset's batches unless told not to.)
    model.fit(sinusoid_tasks(seed=7), epochs=1, verbose=0, shuffle=False)
    loaded.fit(sinusoid_tasks(seed=7), epochs=1, verbose=0, shuffle=False)
    for a, b in zip(model.learner.get_weights(), loaded.learner.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_standard_callbacks(tmp_path):
    model = sinusoid_maml()
    csv = tmp_path / "log.csv"
    checkpoint = tmp_path / "best.keras"
    history = model.fit(
        sinusoid_tasks(),
        epochs=20,
        validation_data=sinusoid_tasks(seed=8, resample=False),
        verbose=0,
        callbacks=[
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=0, min_delta=10.0
            ),
            keras.callbacks.ModelCheckpoint(checkpoint, monitor="val_loss"),
            keras.callbacks.CSVLogger(csv),
            keras.callbacks.TerminateOnNaN(),
        ],
    )
    assert len(history.history["loss"]) < 20  # EarlyStopping stopped it
    lines = csv.read_text().strip().splitlines()
    assert lines[0].split(",") == ["epoch", "loss", "mae", "val_loss", "val_mae"]
    assert len(lines) == len(history.history["loss"]) + 1
    restored = keras.models.load_model(checkpoint)
    assert isinstance(restored, metakeras.MAML)


def test_terminate_on_nan_stops_a_diverging_run():
    model = sinusoid_maml(inner_learning_rate=1e6, inner_steps=3)
    # By default a non-finite meta-update stops `fit` with an explanation.
    with pytest.raises(FloatingPointError, match="inner loop of task 0"):
        model.fit(sinusoid_tasks(steps=20), epochs=3, verbose=0)
    # With on_nonfinite="ignore" the update is applied as in plain Keras,
    # and Keras's TerminateOnNaN stops the run.
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3), loss="mse", on_nonfinite="ignore"
    )
    history = model.fit(
        sinusoid_tasks(steps=20),
        epochs=3,
        verbose=0,
        callbacks=[keras.callbacks.TerminateOnNaN()],
    )
    assert len(history.history["loss"]) == 1
    assert not np.isfinite(history.history["loss"][0])


def conv_learner(ways, dropout=0.0):
    return keras.Sequential(
        [
            keras.Input((1, 8, 8)),
            keras.layers.Conv2D(4, 3, padding="same", data_format="channels_first"),
            keras.layers.BatchNormalization(axis=1),
            keras.layers.ReLU(),
            keras.layers.MaxPooling2D(2, data_format="channels_first"),
            keras.layers.Flatten(),
            keras.layers.Dropout(dropout),
            keras.layers.Dense(ways),
        ]
    )


def image_episodes(tasks=4, ways=3, shots=2, queries=3, seed=0):
    episodes = classification_episodes(
        tasks, ways, shots, queries, features=64, seed=seed
    )
    for key in ("support_x", "query_x"):
        episodes[key] = episodes[key].reshape(tasks, -1, 1, 8, 8)
    return episodes


@pytest.mark.parametrize("vectorize", [False, True])
def test_batch_normalization_and_dropout_learner(vectorize):
    model = metakeras.MAML(
        conv_learner(3, dropout=0.2), inner_learning_rate=0.1, vectorize_tasks=vectorize
    )
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    bn = model.learner.layers[1]
    mean_before = keras.ops.convert_to_numpy(bn.moving_mean)
    episodes = image_episodes()
    logs = model.train_on_batch(episodes, return_dict=True)
    assert np.isfinite(logs["loss"]) and 0 <= logs["accuracy"] <= 1
    # Moving statistics follow the query batches (averaged over tasks).
    assert not np.allclose(keras.ops.convert_to_numpy(bn.moving_mean), mean_before)
    result = model.evaluate(episodes, batch_size=2, verbose=0, return_dict=True)
    assert set(result) == {"loss", "accuracy"}
    adapted = model.adapt(episodes["support_x"][0], episodes["support_y"][0])
    assert adapted.predict(episodes["query_x"][0], verbose=0).shape == (9, 3)


def test_batch_normalization_uses_per_task_statistics_in_vectorized_mode():
    # With BatchNormalization in training mode every task is normalised with
    # its own statistics, so the sequential and vectorized paths agree.
    results = []
    for vectorize in (False, True):
        keras.utils.set_random_seed(2)
        model = metakeras.MAML(
            conv_learner(3), inner_learning_rate=0.1, vectorize_tasks=vectorize
        )
        model.compile(
            optimizer="sgd",
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        model.train_on_batch(image_episodes())
        results.append(model.learner.get_weights())
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, atol=1e-5)


class SubclassedLearner(keras.Model):
    def __init__(self, units=8, outputs=3, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.outputs_ = outputs
        self.hidden = keras.layers.Dense(units, activation="relu")
        self.head = keras.layers.Dense(outputs)

    def call(self, x):
        return self.head(self.hidden(x))

    def get_config(self):
        return {**super().get_config(), "units": self.units, "outputs": self.outputs_}


@pytest.mark.parametrize("make", [SubclassedLearner, functional_classifier])
def test_subclassed_and_functional_learners(make):
    model = metakeras.MAML(make(), inner_learning_rate=0.5, inner_steps=2)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    train = classification_episodes(tasks=40, seed=1)
    # Six epochs: after three the loss of one seed (4) was still above its first.
    history = model.fit(train, batch_size=8, epochs=6, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    test = classification_episodes(tasks=1, seed=2)
    adapted = model.adapt(test["support_x"][0], test["support_y"][0])
    predicted = adapted.predict(test["query_x"][0], verbose=0).argmax(-1)
    assert predicted.shape == (9,)
    assert model.predict(test["query_x"][0], verbose=0).shape == (9, 3)


def test_meta_learned_classifier_adapts_to_new_tasks():
    model = classifier_maml(inner_steps=3)
    model.fit(
        classification_episodes(tasks=64, seed=3), batch_size=8, epochs=10, verbose=0
    )
    test = classification_episodes(tasks=32, seed=4)
    result = model.evaluate(test, batch_size=8, verbose=0, return_dict=True)
    # Labels are permuted per task, so without adaptation it is chance (1/3).
    unadapted = model.adapt_and_predict(
        test["support_x"], test["support_y"], test["query_x"], inner_steps=0
    )
    chance = float((unadapted.argmax(-1) == test["query_y"]).mean())
    assert chance < 0.5
    assert result["accuracy"] > 0.75


# ---------------------------------------------------------------- bad input


@pytest.fixture
def classifier():
    model = metakeras.MAML(functional_classifier(), inner_learning_rate=0.1)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


def test_labels_out_of_range(classifier):
    episodes = classification_episodes()
    episodes["query_y"][0, 0] = 7
    with pytest.raises(
        ValueError, match=r"`query_y` holds labels in \[0, 7\].*3 classes"
    ):
        classifier.train_on_batch(episodes)
    with pytest.raises(ValueError, match="`support_y`"):
        classifier.adapt(episodes["support_x"][0], np.full(6, 5))


def test_non_finite_inputs(classifier):
    episodes = classification_episodes()
    episodes["support_x"][1, 0, 0] = np.nan
    with pytest.raises(ValueError, match="`support_x` contains NaN"):
        classifier.fit(episodes, verbose=0)
    with pytest.raises(ValueError, match="`support_x` contains NaN"):
        classifier.adapt(episodes["support_x"][1], episodes["support_y"][1])


def test_mismatched_shapes(classifier):
    episodes = classification_episodes()
    episodes["query_x"] = episodes["query_x"][:, :, :3]
    with pytest.raises(ValueError, match="same feature shape"):
        classifier.train_on_batch(episodes)
    with pytest.raises(ValueError, match="same number of examples"):
        classifier.adapt(np.zeros((6, 4)), np.zeros(5, "int64"))
    episodes = classification_episodes(features=5)
    with pytest.raises(ValueError, match=r"feature shape \(5,\).*\(4,\)"):
        classifier.train_on_batch(episodes)


def test_missing_key(classifier):
    episodes = classification_episodes()
    del episodes["support_y"]
    with pytest.raises(ValueError, match="support_y"):
        classifier.fit(episodes, verbose=0)


def test_non_numeric_input(classifier):
    with pytest.raises(ValueError, match="`support_x` must be a numeric array"):
        classifier.adapt(np.array([["a"] * 4] * 3), np.zeros(3, "int64"))


def test_bad_constructor_and_compile_arguments():
    with pytest.raises(ValueError, match="`learner` must be a keras.Model"):
        metakeras.MAML(lambda x: x)
    with pytest.raises(
        ValueError, match="`inner_steps` must be a non-negative integer"
    ):
        metakeras.MAML(mlp(), inner_steps=-2)
    model = metakeras.MAML(mlp())
    with pytest.raises(RuntimeError, match="compiled"):
        model.adapt(np.zeros((3, 1)), np.zeros((3, 1)))
    with pytest.raises(ValueError, match="needs a `loss`"):
        model.compile(optimizer="adam")
    with pytest.raises(ValueError, match="single task loss"):
        model.compile(optimizer="adam", loss=["mse", "mae"])
    model.compile(optimizer="adam", loss="mse")
    with pytest.raises(
        ValueError, match="`inner_steps` must be None or a non-negative"
    ):
        model.adapt(np.zeros((3, 1)), np.zeros((3, 1)), inner_steps=-1)


def test_custom_loss_function_is_used_in_the_inner_loop():
    def half_squared(y_true, y_pred):
        return 0.5 * torch.square(y_true - y_pred).mean(dim=-1)

    model = metakeras.MAML(mlp(), inner_learning_rate=0.1)
    model.compile(optimizer="adam", loss=half_squared)
    batch = sinusoid_tasks()[0]
    logs = model.train_on_batch(batch, return_dict=True)
    assert np.isfinite(logs["loss"])


def test_keras_constraints_hold_for_fast_weights_too():
    learner = keras.Sequential(
        [
            keras.Input((1,)),
            keras.layers.Dense(
                8, activation="relu", kernel_constraint=keras.constraints.NonNeg()
            ),
            keras.layers.Dense(1),
        ]
    )
    model = metakeras.MAML(learner, inner_steps=3, inner_learning_rate=0.5)
    model.compile(optimizer="sgd", loss="mse")
    batch = sinusoid_tasks()[0]
    adapted = model.adapt(batch["support_x"][0], batch["support_y"][0] * 100)
    assert (adapted.layers[0].get_weights()[0] >= 0).all()
    model.train_on_batch(batch)
    assert (model.learner.layers[0].get_weights()[0] >= 0).all()


def test_adapt_checks_the_feature_shape_like_predict():
    model = metakeras.MAML(mlp())
    model.compile(optimizer="adam", loss="mse")
    wrong = np.zeros((5, 2), "float32")
    with pytest.raises(ValueError, match=r"`support_x` has feature shape \(2,\)"):
        model.adapt(wrong, np.zeros((5, 1), "float32"))
    with pytest.raises(ValueError, match=r"`x` has feature shape \(2,\)"):
        model.predict(wrong)
