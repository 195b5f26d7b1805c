import keras
import numpy as np
import pytest
from conftest import mlp

import metakeras
from metakeras.initializers import export_initialization, load_initial_weights
from metakeras.tasks import SinusoidTasks


def trained_maml():
    model = metakeras.MAML(mlp(hidden=8), inner_learning_rate=0.01)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    model.fit(SinusoidTasks(meta_batch_size=4, steps=3, seed=0), verbose=0)
    return model


def assert_same_weights(a, b):
    for x, y in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(x, y)


def test_exported_initialization_is_a_plain_keras_model(tmp_path):
    model = trained_maml()
    path = export_initialization(model, tmp_path / "init.keras")
    plain = keras.models.load_model(path)
    assert type(plain) is keras.Sequential
    assert_same_weights(plain, model.learner)
    plain.compile(optimizer="sgd", loss="mse")
    history = plain.fit(np.zeros((4, 1)), np.ones((4, 1)), epochs=2, verbose=0)
    assert history.history["loss"][1] < history.history["loss"][0]


@pytest.mark.parametrize(
    "kind", ["keras_file", "meta_file", "weights_file", "model", "meta"]
)
def test_load_initial_weights_from_every_source(kind, tmp_path):
    model = trained_maml()
    if kind == "keras_file":
        source = export_initialization(model, tmp_path / "init.keras")
    elif kind == "meta_file":
        source = tmp_path / "maml.keras"
        model.save(source)
    elif kind == "weights_file":
        source = tmp_path / "init.weights.h5"
        model.learner.save_weights(source)
    elif kind == "model":
        source = model.learner
    else:
        source = model
    fresh = mlp(hidden=8)
    assert load_initial_weights(fresh, source) is fresh
    assert_same_weights(fresh, model.learner)
    # a new meta-training run starts from the loaded initialisation
    second = metakeras.MAML(fresh)
    assert_same_weights(second.learner, model.learner)


def test_load_initial_weights_errors(tmp_path):
    with pytest.raises(ValueError, match="weights but the learner has"):
        load_initial_weights(
            mlp(hidden=8), keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
        )
    with pytest.raises(ValueError, match="shape mismatch"):
        load_initial_weights(mlp(hidden=8), mlp(hidden=9))
    with pytest.raises(FileNotFoundError, match="not found"):
        load_initial_weights(mlp(), tmp_path / "missing.keras")
    other = tmp_path / "weights.npz"
    other.write_bytes(b"x")
    with pytest.raises(ValueError, match=r"must be a \.keras or \.weights\.h5"):
        load_initial_weights(mlp(), other)
    with pytest.raises(ValueError, match="must be a built keras.Model"):
        load_initial_weights(keras.Sequential([keras.layers.Dense(2)]), mlp())
    with pytest.raises(ValueError, match="must end in '.keras'"):
        export_initialization(mlp(), tmp_path / "init.h5")
