import os
import zipfile

import h5py
import keras
import numpy as np
import pytest
import torch
from conftest import (
    classification_episodes,
    mlp,
    random_episodes,
    regression_maml,
    sinusoid_tasks,
)

import metakeras
from metakeras.callbacks import (
    FakeQuantization,
    MagnitudePruning,
    PolynomialDecay,
    PruningMask,
    Quantization,
    compression_report,
    quantize_weights,
    strip_pruning,
)
from metakeras.callbacks.quantization import fake_quantize
from metakeras.datasets import digits


def _numpy(x):
    return keras.ops.convert_to_numpy(x)


# ProtoNet models here keep the task loop (`vectorize_tasks=False`, also on
# a GPU): Keras's own quantized layers, which these tests cover, cannot run
# under vmap, where quantize_weights stores the kernels itself instead.


def _protonet(episodes_features=6):
    embedding = mlp(hidden=32, outputs=16, inputs=episodes_features, activation="relu")
    model = metakeras.ProtoNet(embedding, vectorize_tasks=False)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def _max_distinct_per_channel(kernel):
    kernel = np.asarray(kernel).reshape(-1, np.shape(kernel)[-1])
    return max(len(np.unique(kernel[:, c])) for c in range(kernel.shape[1]))


# ---------------------------------------------------------- value grids


@pytest.mark.parametrize(
    "mode, levels, at_least", [("int8", 255, 128), ("int4", 15, 8), ("float8", 256, 64)]
)
def test_fake_quantize_has_few_values_per_channel(mode, levels, at_least):
    weights = np.random.default_rng(0).normal(size=(8, 8, 16, 5)).astype("float32")
    quantized = _numpy(fake_quantize(weights, mode))
    assert quantized.shape == weights.shape
    assert _max_distinct_per_channel(quantized) <= levels
    assert _max_distinct_per_channel(quantized) >= at_least  # not collapsed
    # Quantizing again changes nothing: the values are on the grid.
    np.testing.assert_allclose(
        _numpy(fake_quantize(quantized, mode)), quantized, rtol=1e-6
    )
    error = np.abs(quantized - weights).max()
    assert error <= {"int8": 0.03, "int4": 0.4, "float8": 0.25}[mode]


def test_maml_weights_are_quantized_onto_the_int8_grid():
    model = regression_maml()
    model.fit(
        sinusoid_tasks(steps=3), epochs=1, verbose=0, callbacks=[Quantization("int8")]
    )
    for layer in model.learner.layers:
        kernel = _numpy(layer.kernel)
        assert kernel.dtype == np.float32  # stays differentiable for the inner loop
        assert _max_distinct_per_channel(kernel) <= 256


def test_conv_kernels_get_weight_quantization():
    embedding = keras.Sequential(
        [
            keras.Input((1, 8, 8)),
            keras.layers.Conv2D(6, 3, data_format="channels_first", name="conv"),
            keras.layers.Flatten(),
            keras.layers.Dense(8, name="head"),
        ]
    )
    model = metakeras.ProtoNet(embedding, vectorize_tasks=False)
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x, y = digits.load_data()
    tasks = metakeras.tasks.TaskSampler(
        x, y, ways=3, shots=1, queries=2, meta_batch_size=2, steps=2, seed=0
    )
    callback = Quantization("int8")
    model.fit(tasks, epochs=1, verbose=0, callbacks=[callback])
    assert callback.quantized_layers_ == {"conv": "stored", "head": "keras"}
    conv = _numpy(embedding.get_layer("conv").kernel)
    assert _max_distinct_per_channel(conv) <= 256
    assert embedding.get_layer("head").quantization_mode == "int8"


def test_protonet_dense_layers_are_stored_in_int8_and_the_file_shrinks(tmp_path):
    episodes = classification_episodes(tasks=8, features=6)
    model = _protonet()
    model.fit(episodes, batch_size=4, epochs=2, verbose=0)
    float_copy = strip_pruning(model)
    kinds = quantize_weights(model, "int8")
    assert list(kinds.values()) == ["keras", "keras"]
    for layer in model.learner.layers:
        assert str(layer._kernel.dtype) == "int8"  # at most 256 values
    float_path, int8_path = tmp_path / "float.keras", tmp_path / "int8.keras"
    float_copy.save(float_path)
    model.save(int8_path)
    # (A tiny model: the config and file structure are most of both files.)
    assert os.path.getsize(int8_path) < os.path.getsize(float_path)

    loaded = keras.models.load_model(int8_path)
    assert loaded.learner.layers[0].quantization_mode == "int8"
    sx, sy, qx = episodes["support_x"], episodes["support_y"], episodes["query_x"]
    quantized = model.adapt_and_predict(sx, sy, qx)
    np.testing.assert_allclose(
        loaded.adapt_and_predict(sx, sy, qx), quantized, rtol=1e-5
    )
    # int8 predictions stay close to the float ones and classify the same.
    reference = float_copy.adapt_and_predict(sx, sy, qx)
    agreement = np.mean(reference.argmax(-1) == quantized.argmax(-1))
    assert agreement >= 0.95
    # `adapt` builds the prototype classifier with the int8 embedding.
    classifier = model.adapt(sx[0], sy[0])
    np.testing.assert_allclose(
        classifier.predict(qx[0], verbose=0), quantized[0], rtol=1e-4, atol=1e-4
    )


def test_adapt_on_a_quantized_maml_adapts_the_dequantized_weights():
    model = regression_maml()
    model.fit(
        sinusoid_tasks(steps=3), epochs=1, verbose=0, callbacks=[Quantization("int8")]
    )
    grid = [_numpy(layer.kernel) for layer in model.learner.layers]
    task = sinusoid_tasks(steps=3, meta_batch_size=1, seed=5)[0]
    adapted = model.adapt(task["support_x"][0], task["support_y"][0], inner_steps=3)
    for layer, start in zip(adapted.layers, grid):
        assert not np.array_equal(_numpy(layer.kernel), start)  # adapted in float
    # The meta-learned (quantized) weights are untouched.
    for layer, start in zip(model.learner.layers, grid):
        np.testing.assert_array_equal(_numpy(layer.kernel), start)
    before = adapted.predict(task["query_x"][0], verbose=0)
    # The adapted task model can be re-quantized for deployment.
    assert set(quantize_weights(adapted, "int8").values()) == {"stored"}
    for layer in adapted.layers:
        assert _max_distinct_per_channel(_numpy(layer.kernel)) <= 256
    after = adapted.predict(task["query_x"][0], verbose=0)
    np.testing.assert_allclose(after, before, atol=0.05 * np.abs(before).max() + 1e-3)


def test_quantization_keeps_pruned_zeros_and_masks_are_saved(tmp_path):
    model = regression_maml()
    model.fit(
        sinusoid_tasks(steps=3),
        epochs=1,
        verbose=0,
        callbacks=[MagnitudePruning(0.5), Quantization("int8")],
    )
    for layer in model.learner.layers:
        mask = _numpy(layer.kernel_constraint.mask)
        assert np.all(_numpy(layer.kernel)[mask == 0] == 0)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    for layer, original in zip(loaded.learner.layers, model.learner.layers):
        kernel = _numpy(layer.kernel)
        # Saved as int8 and a scale: the same grid values, to float32 rounding.
        np.testing.assert_allclose(kernel, _numpy(original.kernel), rtol=1e-5)
        np.testing.assert_array_equal(kernel == 0, _numpy(original.kernel) == 0)


def test_quantization_aware_fine_tuning_fake_quantizes_the_fast_weights():
    model = regression_maml()

    class Spy(keras.callbacks.Callback):
        constraints = {}

        def on_epoch_end(self, epoch, logs=None):
            kernel = self.model.learner.layers[0].kernel
            self.constraints[epoch] = type(kernel.constraint).__name__

    spy = Spy()
    model.fit(
        sinusoid_tasks(steps=2),
        epochs=3,
        verbose=0,
        callbacks=[
            MagnitudePruning(0.5),
            Quantization("int8", fine_tune_epochs=1),
            spy,
        ],
    )
    assert spy.constraints == {
        0: "PruningMask",
        1: "PruningMask",
        2: "FakeQuantization",
    }
    for layer in model.learner.layers:
        # Restored after training, and the weights are on the grid.
        assert type(layer.kernel.constraint).__name__ == "PruningMask"
        assert _max_distinct_per_channel(_numpy(layer.kernel)) <= 256


def test_a_quantization_aware_checkpoint_becomes_the_quantized_model(tmp_path):
    # The README's one call: quantize_weights(load_model(checkpoint)).
    model = regression_maml()
    checkpoint = keras.callbacks.ModelCheckpoint(tmp_path / "qat.keras")
    model.fit(
        sinusoid_tasks(steps=2),
        epochs=2,
        verbose=0,
        callbacks=[
            MagnitudePruning(0.5),
            Quantization("int8", fine_tune_epochs=1),
            checkpoint,
        ],
    )
    restored = keras.models.load_model(tmp_path / "qat.keras")
    # The checkpoint holds the float weights of the last epoch, masks kept.
    assert any(
        not np.array_equal(_numpy(layer.kernel), _numpy(trained.kernel))
        for layer, trained in zip(restored.learner.layers, model.learner.layers)
    )
    for layer in restored.learner.layers:
        assert isinstance(layer.kernel_constraint, PruningMask)
    quantize_weights(restored, "int8")
    for layer, trained in zip(restored.learner.layers, model.learner.layers):
        np.testing.assert_array_equal(_numpy(layer.kernel), _numpy(trained.kernel))


def test_fake_quantization_is_straight_through():
    constraint = FakeQuantization("int4")
    w = torch.linspace(-1.0, 1.0, 12).reshape(3, 4).requires_grad_()
    out = constraint(w)  # on Keras's device, as a constraint's output is
    np.testing.assert_allclose(_numpy(out), _numpy(fake_quantize(w.detach(), "int4")))
    (out * torch.arange(12.0, device=out.device).reshape(3, 4)).sum().backward()
    np.testing.assert_allclose(w.grad.numpy(), np.arange(12.0).reshape(3, 4))
    variable = keras.Variable(np.ones((2, 2), "float32") * 0.3)
    assert constraint(variable) is variable  # master weights stay float


# ------------------------------------------------------- conv4 saved in int8


def _saved_kernels(path):
    """dtype and shape of each conv layer's first saved variable (its kernel)."""
    with (
        zipfile.ZipFile(path) as archive,
        archive.open("model.weights.h5") as raw,
        h5py.File(raw, "r") as weights,
    ):
        return {
            name: (
                weights[f"layers/{name}/vars/0"].dtype,
                weights[f"layers/{name}/vars/0"].shape,
            )
            for name in weights["layers"]
            if "conv" in name
        }


@pytest.mark.parametrize("mode, ratio", [("int8", 2.5), ("int4", 3.5)])
def test_conv4_file_stores_int8_kernels_and_shrinks(tmp_path, mode, ratio):
    learner = metakeras.models.conv4(outputs=5)
    x = np.random.default_rng(0).random((4, 1, 28, 28)).astype("float32")
    learner.save(tmp_path / "float.keras")
    kinds = quantize_weights(learner, mode)
    assert kinds == {**{f"conv{i}": "stored" for i in range(4)}, "head": "keras"}
    learner.save(tmp_path / "quantized.keras")
    before = os.path.getsize(tmp_path / "float.keras")
    after = os.path.getsize(tmp_path / "quantized.keras")
    # int8 kernels are a quarter of the bytes (measured: 515 kB -> 184 kB;
    # the rest is the HDF5 structure, BatchNormalization and the config).
    assert before > ratio * after, (before, after)
    for dtype, shape in _saved_kernels(tmp_path / "quantized.keras").values():
        assert dtype == np.int8
        if mode == "int4":
            assert shape[0] < 9 * 64 / 2 + 1  # two values per byte
    loaded = keras.models.load_model(tmp_path / "quantized.keras")
    for layer, original in zip(loaded.layers, learner.layers):
        assert type(layer) is type(original)
        if layer.name.startswith("conv"):
            kernel = _numpy(layer.kernel)
            assert kernel.dtype == np.float32
            assert _max_distinct_per_channel(kernel) <= (256 if mode == "int8" else 16)
            np.testing.assert_allclose(kernel, _numpy(original.kernel), rtol=1e-5)
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0),
        learner.predict(x, verbose=0),
        rtol=1e-4,
        atol=1e-5,
    )


def _image_episodes(tasks=2, ways=3):
    return random_episodes(
        (1, 28, 28), tasks=tasks, ways=ways, shots=1, seed=1, uniform=True
    )


@pytest.mark.parametrize("algorithm", ["maml", "protonet"])
def test_meta_models_with_an_int8_conv4_round_trip_through_keras_files(
    tmp_path, algorithm
):
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    if algorithm == "maml":
        learner = metakeras.models.conv4(outputs=3, filters=8)
        model = metakeras.MAML(learner, inner_steps=2, inner_learning_rate=0.4)
    else:
        model = metakeras.ProtoNet(metakeras.models.conv4(filters=8))
    model.compile(optimizer="adam", loss=loss)
    episodes = _image_episodes()
    model.fit(episodes, batch_size=2, epochs=1, verbose=0)
    kinds = quantize_weights(model, "int8")
    assert {kinds[f"conv{i}"] for i in range(4)} == {"stored"}
    sx, sy, qx = episodes["support_x"], episodes["support_y"], episodes["query_x"]
    expected = model.adapt_and_predict(sx, sy, qx)
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert type(loaded) is type(model)
    assert type(loaded.learner.get_layer("conv0")).__name__.startswith("Quantized")
    np.testing.assert_allclose(
        loaded.adapt_and_predict(sx, sy, qx), expected, rtol=1e-4, atol=1e-5
    )
    assert (
        loaded.adapt_and_predict(sx, sy, qx).argmax(-1) == expected.argmax(-1)
    ).all()


def test_adapt_on_an_int8_conv4_maml_and_the_adapted_file():
    """MAML adapts the grid values in float; the task model saves re-quantized."""
    learner = metakeras.models.conv4(outputs=3, filters=8)
    model = metakeras.MAML(learner, inner_steps=2, inner_learning_rate=0.4)
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    episodes = _image_episodes(tasks=1)
    model.fit(episodes, batch_size=1, epochs=1, verbose=0)
    quantize_weights(model, "int8")
    grid = _numpy(learner.get_layer("conv1").kernel)
    adapted = model.adapt(episodes["support_x"][0], episodes["support_y"][0])
    conv = adapted.get_layer("conv1")
    assert type(conv) is type(learner.get_layer("conv1"))
    assert not np.array_equal(_numpy(conv.kernel), grid)  # adapted in float
    np.testing.assert_array_equal(_numpy(learner.get_layer("conv1").kernel), grid)
    # Saving the task model writes its adapted kernels quantized to int8:
    # loading it gives what quantize_weights(adapted) holds in memory.
    store = {}
    conv.save_own_variables(store)
    assert store["0"].dtype == np.int8
    quantize_weights(adapted, "int8")
    np.testing.assert_allclose(
        store["0"] / store["1"].reshape(1, -1),
        _numpy(conv.kernel).reshape(-1, conv.filters),
        rtol=1e-5,
    )


# ------------------------------------------------------------------ quality


def test_half_pruning_plus_int8_loses_little_few_shot_accuracy(tmp_path):
    x, y = digits.load_data()

    def tasks(classes, seed, steps, batch):
        return metakeras.tasks.TaskSampler(
            x,
            y,
            ways=5,
            shots=1,
            queries=5,
            meta_batch_size=batch,
            steps=steps,
            classes=classes,
            seed=seed,
        )

    def train(callbacks):
        keras.utils.set_random_seed(0)
        embedding = keras.Sequential(
            [
                keras.Input((1, 8, 8)),
                keras.layers.Flatten(),
                keras.layers.Dense(64, activation="relu"),
                keras.layers.Dense(32),
            ]
        )
        model = metakeras.ProtoNet(embedding, vectorize_tasks=False)
        model.compile(
            optimizer=keras.optimizers.Adam(3e-3),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        model.fit(tasks(range(5), 0, 40, 8), epochs=1, verbose=0, callbacks=callbacks)
        return model

    reference = train([])
    compressed = train(
        [
            MagnitudePruning(
                PolynomialDecay(0.0, 0.5, begin_step=10, end_step=25, frequency=5)
            ),
            Quantization("int8"),
        ]
    )
    report = compression_report(
        {"float": reference, "pruned50_int8": compressed},
        tasks(range(5, 10), 1, 4, 50),
        episodes=200,
        directory=tmp_path,
    )
    float_row, small_row = report.iloc[0], report.iloc[1]
    assert small_row["sparsity"] > 0.45
    assert small_row["file_bytes"] < 0.6 * float_row["file_bytes"]
    assert float_row["mean"] > 0.4  # well above chance (0.2): it learned
    # Measured: about -2 points (0.51 -> 0.49) with a paired 95% CI of ~1 point.
    assert small_row["difference"] > -0.05, report.to_string()


# ------------------------------------------------------------ bad arguments


def test_unsupported_mode_names_the_valid_choices():
    for make in (
        Quantization,
        FakeQuantization,
        lambda mode: quantize_weights(regression_maml(), mode),
    ):
        with pytest.raises(
            ValueError,
            match=r"`mode` must be one of \['int8', 'int4', 'float8'\].*'int2'",
        ):
            make("int2")


def test_bad_quantization_arguments():
    with pytest.raises(ValueError, match=r"fine_tune_epochs.*-1"):
        Quantization("int8", fine_tune_epochs=-1)
    with pytest.raises(ValueError, match="layers"):
        Quantization("int8", layers="dense")
    model = _protonet()
    episodes = classification_episodes(tasks=4, features=6)
    with pytest.raises(ValueError, match=r"fine_tune_epochs.*inner loop"):
        model.fit(
            episodes,
            batch_size=2,
            epochs=1,
            verbose=0,
            callbacks=[Quantization("int8", fine_tune_epochs=1)],
        )
    maml = regression_maml()
    with pytest.raises(ValueError, match=r"unknown layer\(s\) \['nope'\]"):
        maml.fit(
            sinusoid_tasks(steps=1),
            epochs=1,
            verbose=0,
            callbacks=[Quantization("int8", layers=["nope"])],
        )
    config = Quantization("int4", fine_tune_epochs=2, layers=["dense"]).get_config()
    assert Quantization(**config).get_config() == config
