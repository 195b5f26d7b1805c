import csv

import keras
import numpy as np
import pytest
from conftest import classification_episodes, mlp, regression_maml, sinusoid_tasks

import metakeras
from metakeras.callbacks import (
    ConstantSparsity,
    MagnitudePruning,
    PolynomialDecay,
    PruningMask,
    strip_pruning,
)


def _numpy(x):
    return keras.ops.convert_to_numpy(x)


def _kernels(model):
    return [layer.kernel for layer in model.learner.layers]


class _Recorder(keras.callbacks.Callback):
    """Records (step just taken, kernels) after every training batch."""

    def __init__(self):
        super().__init__()
        self.records = []

    def on_train_batch_end(self, batch, logs=None):
        step = int(_numpy(self.model.optimizer.iterations)) - 1
        kernels = [_numpy(k).copy() for k in _kernels(self.model)]
        self.records.append((step, kernels))


# ----------------------------------------------------------------- schedules


def test_polynomial_decay_matches_formula_and_frequency():
    schedule = PolynomialDecay(
        0.1, 0.9, begin_step=10, end_step=30, power=2, frequency=5
    )
    assert schedule(9) == (False, pytest.approx(0.1))
    assert schedule(10) == (True, pytest.approx(0.1))
    assert schedule(12)[0] is False
    should, sparsity = schedule(15)
    assert should and sparsity == pytest.approx(0.9 - 0.8 * (1 - 0.25) ** 2)
    assert schedule(30) == (True, pytest.approx(0.9))
    assert schedule(35)[0] is False  # past end_step: masks stay as they are
    off_grid = PolynomialDecay(0.0, 0.5, begin_step=0, end_step=7, frequency=3)
    assert off_grid(7) == (True, pytest.approx(0.5))  # end step always prunes


def test_constant_sparsity_turns():
    schedule = ConstantSparsity(0.8, begin_step=4, end_step=10, frequency=3)
    turns = [step for step in range(15) if schedule(step)[0]]
    assert turns == [4, 7, 10]
    assert schedule(0)[1] == pytest.approx(0.8)


def test_schedule_config_round_trip():
    for schedule in (
        ConstantSparsity(0.3, begin_step=2, end_step=9, frequency=4),
        PolynomialDecay(0.1, 0.7, begin_step=1, end_step=20, power=1, frequency=3),
    ):
        config = keras.saving.serialize_keras_object(schedule)
        again = keras.saving.deserialize_keras_object(config)
        assert type(again) is type(schedule)
        assert again.get_config() == schedule.get_config()
        assert [again(s) for s in range(25)] == [schedule(s) for s in range(25)]


# ------------------------------------------------------------- bad arguments


@pytest.mark.parametrize("value", [1.0, -0.1, 1.5, True, "0.5"])
def test_sparsity_outside_unit_interval_is_rejected(value):
    with pytest.raises(ValueError, match=r"target_sparsity.*\[0, 1\)"):
        ConstantSparsity(value)
    with pytest.raises(ValueError, match=r"final_sparsity.*\[0, 1\)"):
        PolynomialDecay(0.0, value, begin_step=0, end_step=10)
    with pytest.raises(ValueError, match="pruning_schedule"):
        MagnitudePruning(value)


def test_end_step_before_begin_step_is_rejected():
    with pytest.raises(
        ValueError, match=r"end_step.*begin_step.*end_step=3, begin_step=5"
    ):
        ConstantSparsity(0.5, begin_step=5, end_step=3)
    with pytest.raises(ValueError, match=r"end_step.*greater than.*begin_step"):
        PolynomialDecay(0.0, 0.5, begin_step=5, end_step=5)
    with pytest.raises(ValueError, match="frequency"):
        ConstantSparsity(0.5, frequency=0)


def test_bad_ranking_and_layers_are_rejected():
    with pytest.raises(ValueError, match=r"ranking.*\['layer', 'global'\].*'size'"):
        MagnitudePruning(0.5, ranking="size")
    with pytest.raises(ValueError, match="layers"):
        MagnitudePruning(0.5, layers="dense")


def test_unknown_layer_names_name_the_valid_choices():
    model = regression_maml()
    first, second = (layer.name for layer in model.learner.layers)
    pruning = MagnitudePruning(0.5, layers=[first, "nope"])
    message = (
        rf"`layers` names unknown layer\(s\) \['nope'\]. Valid choices.*'{second}'"
    )
    with pytest.raises(ValueError, match=message):
        model.fit(sinusoid_tasks(steps=1), epochs=1, verbose=0, callbacks=[pruning])


# ---------------------------------------------------------- pruning in fit


def test_sparsity_follows_schedule_at_the_steps_it_names():
    model = regression_maml()
    schedule = PolynomialDecay(
        0.0, 0.75, begin_step=2, end_step=8, power=1, frequency=2
    )
    recorder = _Recorder()
    model.fit(
        sinusoid_tasks(steps=11),
        epochs=1,
        verbose=0,
        shuffle=False,
        callbacks=[MagnitudePruning(schedule), recorder],
    )
    assert [step for step, _ in recorder.records] == list(range(11))
    for step, kernels in recorder.records:
        pruning_steps = [s for s in range(step + 1) if schedule(s)[0]]
        expected = schedule(pruning_steps[-1])[1] if pruning_steps else 0.0
        for kernel in kernels:
            zeros = int(np.count_nonzero(kernel == 0))
            assert zeros == round(expected * kernel.size), (step, expected)


def test_masked_weights_stay_zero_after_every_outer_step():
    model = regression_maml()
    recorder = _Recorder()
    # Masks are computed once, at step 0; every later outer step must keep them.
    pruning = MagnitudePruning(ConstantSparsity(0.6, begin_step=0, frequency=1000))
    model.fit(
        sinusoid_tasks(steps=8), epochs=1, verbose=0, callbacks=[pruning, recorder]
    )
    masks = [_numpy(layer.kernel_constraint.mask) for layer in model.learner.layers]
    for mask in masks:
        assert np.count_nonzero(mask == 0) == round(0.6 * mask.size)
    first = recorder.records[0][1]
    for _, kernels in recorder.records:
        for kernel, mask, start in zip(kernels, masks, first):
            assert np.all(kernel[mask == 0] == 0)
            assert np.all((kernel == 0) == (start == 0))
    # The weights that are kept did train.
    assert not np.allclose(recorder.records[-1][1][0], first[0])


def test_masked_weights_stay_zero_after_adapt_and_in_fast_weights():
    # The task loop: the spy below reads each task's fast weights.
    model = regression_maml(inner_steps=3, vectorize_tasks=False)
    model.fit(
        sinusoid_tasks(steps=3),
        epochs=1,
        verbose=0,
        callbacks=[MagnitudePruning(ConstantSparsity(0.5, begin_step=0))],
    )
    masks = [_numpy(layer.kernel_constraint.mask) for layer in model.learner.layers]
    task = sinusoid_tasks(steps=6, meta_batch_size=3, seed=7)[0]

    adapted = model.adapt(task["support_x"][0], task["support_y"][0], inner_steps=5)
    for layer, mask, original in zip(adapted.layers, masks, _kernels(model)):
        kernel = _numpy(layer.kernel)
        assert np.all(kernel[mask == 0] == 0)
        assert not np.allclose(kernel, _numpy(original))  # it did adapt

    # The fast weights of the batched path: the learner's forward pass sees
    # them, so record every weight list it is called with.
    seen = []
    forward = model._forward

    def spy(weights, state, x, training):
        if not training:  # the query pass, after the inner steps
            seen.append([_numpy(w) for w in weights])
        return forward(weights, state, x, training)

    model._forward = spy
    predictions = model.adapt_and_predict(
        task["support_x"], task["support_y"], task["query_x"], inner_steps=4
    )
    del model._forward
    assert len(seen) == 3  # one query pass per task
    kernel_positions = [0, 2, 4]  # kernel, bias, kernel, bias, ...
    for weights in seen:
        for position, mask in zip(kernel_positions, masks):
            assert np.all(weights[position][mask == 0] == 0)
    # The batched path and `adapt` agree.
    for t in range(3):
        single = model.adapt(task["support_x"][t], task["support_y"][t], inner_steps=4)
        np.testing.assert_allclose(
            single.predict(task["query_x"][t], verbose=0), predictions[t], atol=1e-5
        )


def test_global_ranking_prunes_across_layers():
    model = metakeras.MAML(
        keras.Sequential(
            [
                keras.Input((1,)),
                keras.layers.Dense(4, activation="relu", name="small"),
                keras.layers.Dense(30, activation="relu", name="dense_1"),
                # Weights of magnitude 5-6, beside dense_1's below 0.45 (Glorot):
                # one global threshold prunes dense_1 first, whatever the seed.
                keras.layers.Dense(
                    1,
                    kernel_initializer=keras.initializers.RandomUniform(5.0, 6.0),
                    name="dense_2",
                ),
            ]
        ),
        inner_steps=1,
    )
    model.compile(optimizer="adam", loss="mse")
    pruning = MagnitudePruning(0.7, ranking="global", layers=["dense_1", "dense_2"])
    model.fit(sinusoid_tasks(steps=1), epochs=1, verbose=0, callbacks=[pruning])
    first, second, third = (_numpy(k) for k in _kernels(model))
    assert np.count_nonzero(first == 0) == 0  # not named: untouched
    pruned = np.concatenate([second.ravel(), third.ravel()])
    assert np.count_nonzero(pruned == 0) == round(0.7 * pruned.size)  # 105 of 150
    # Per-layer ranking would prune 84 of dense_1's 120 and 21 of dense_2's 30.
    assert np.count_nonzero(second == 0) == 105
    assert np.count_nonzero(third == 0) == 0


def test_protonet_outer_steps_keep_zeros():
    episodes = classification_episodes(tasks=8, features=6)
    embedding = mlp(hidden=16, outputs=8, inputs=6, activation="relu")
    model = metakeras.ProtoNet(embedding)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(
        episodes, batch_size=2, epochs=2, verbose=0, callbacks=[MagnitudePruning(0.5)]
    )
    for layer in embedding.layers:
        mask = _numpy(layer.kernel_constraint.mask)
        assert np.all(_numpy(layer.kernel)[mask == 0] == 0)
        assert mask.mean() == pytest.approx(0.5, abs=0.02)


def test_sparsity_is_logged_to_history_and_csv(tmp_path):
    model = regression_maml()
    path = tmp_path / "log.csv"
    history = model.fit(
        sinusoid_tasks(steps=2),
        epochs=2,
        verbose=0,
        callbacks=[MagnitudePruning(0.4), keras.callbacks.CSVLogger(str(path))],
    )
    sizes = [int(np.prod(k.shape)) for k in _kernels(model)]
    expected = sum(round(0.4 * n) for n in sizes) / sum(sizes)
    assert history.history["sparsity"] == pytest.approx([expected] * 2)
    with open(path) as handle:
        rows = list(csv.DictReader(handle))
    assert [float(row["sparsity"]) for row in rows] == pytest.approx([expected] * 2)


def test_callback_instance_is_reusable():
    pruning = MagnitudePruning(0.5)
    first, second = regression_maml(), regression_maml()
    first.fit(sinusoid_tasks(steps=1), epochs=1, verbose=0, callbacks=[pruning])
    second.fit(sinusoid_tasks(steps=1), epochs=1, verbose=0, callbacks=[pruning])
    for model in (first, second):
        for kernel in _kernels(model):
            assert np.mean(_numpy(kernel) == 0) == pytest.approx(0.5, abs=0.02)
    assert pruning.sparsity() == pytest.approx(0.5, abs=0.02)
    config = pruning.get_config()
    again = MagnitudePruning.from_config(config)
    assert again.get_config() == config


# ------------------------------------------------------ saving and stripping


def test_masks_survive_keras_save_and_load(tmp_path):
    model = regression_maml()
    model.fit(
        sinusoid_tasks(steps=2), epochs=1, verbose=0, callbacks=[MagnitudePruning(0.5)]
    )
    path = tmp_path / "pruned.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    for layer, original in zip(loaded.learner.layers, model.learner.layers):
        assert isinstance(layer.kernel_constraint, PruningMask)
        assert layer.kernel.constraint is layer.kernel_constraint
        np.testing.assert_array_equal(
            _numpy(layer.kernel_constraint.mask),
            _numpy(original.kernel_constraint.mask),
        )
        np.testing.assert_array_equal(_numpy(layer.kernel), _numpy(original.kernel))
    # The loaded model keeps the zeros through further meta-training.
    loaded.fit(sinusoid_tasks(steps=2, seed=3), epochs=1, verbose=0)
    for layer in loaded.learner.layers:
        mask = _numpy(layer.kernel_constraint.mask)
        assert np.all(_numpy(layer.kernel)[mask == 0] == 0)


def test_adapted_model_carries_the_meta_models_masks(tmp_path):
    model = regression_maml()
    model.fit(
        sinusoid_tasks(steps=2), epochs=1, verbose=0, callbacks=[MagnitudePruning(0.5)]
    )
    task = sinusoid_tasks(steps=6, meta_batch_size=1, seed=4)[0]
    adapted = model.adapt(task["support_x"][0], task["support_y"][0], inner_steps=2)
    for layer, original in zip(adapted.layers, model.learner.layers):
        assert layer.kernel_constraint is not original.kernel_constraint
        mask = _numpy(layer.kernel_constraint.mask)
        np.testing.assert_array_equal(mask, _numpy(original.kernel_constraint.mask))
        assert 0.4 < np.mean(mask == 0) < 0.6  # not the all-ones mask of a clone
    # Training the task model further keeps its zeros too.
    adapted.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    adapted.fit(task["query_x"][0], task["query_y"][0], epochs=2, verbose=0)
    for layer in adapted.layers:
        mask = _numpy(layer.kernel_constraint.mask)
        assert np.all(_numpy(layer.kernel)[mask == 0] == 0)


def test_a_pruned_conv4_file_is_not_larger_than_the_unpruned_one(tmp_path):
    rng = np.random.default_rng(0)
    episodes = {
        "support_x": rng.random((4, 6, 1, 16, 16), dtype="float32"),
        "support_y": np.tile(np.repeat(np.arange(3), 2), (4, 1)),
        "query_x": rng.random((4, 6, 1, 16, 16), dtype="float32"),
        "query_y": np.tile(np.repeat(np.arange(3), 2), (4, 1)),
    }
    sizes, models = {}, {}
    for name, callbacks in (("plain", []), ("pruned", [MagnitudePruning(0.5)])):
        keras.utils.set_random_seed(0)
        model = metakeras.ProtoNet(metakeras.models.conv4((1, 16, 16), filters=16))
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(True))
        model.fit(episodes, batch_size=2, epochs=1, verbose=0, callbacks=callbacks)
        model.save(tmp_path / f"{name}.keras")
        sizes[name] = (tmp_path / f"{name}.keras").stat().st_size
        models[name] = model
    # Uncompressed, the masks made it about 7% larger; compressed, the
    # pruned zeros make it about half the size.
    assert sizes["pruned"] < 0.7 * sizes["plain"], sizes
    loaded = keras.models.load_model(tmp_path / "pruned.keras")
    masked = 0
    for layer, original in zip(
        loaded.learner.layers, models["pruned"].learner.layers, strict=True
    ):
        for variable, value in zip(layer.weights, original.weights, strict=True):
            np.testing.assert_array_equal(_numpy(variable), _numpy(value))
        if isinstance(getattr(original, "kernel_constraint", None), PruningMask):
            masked += 1
            assert layer.kernel.constraint is layer.kernel_constraint
            np.testing.assert_array_equal(
                _numpy(layer.kernel_constraint.mask),
                _numpy(original.kernel_constraint.mask),
            )
    assert masked == 4


def test_masks_are_saved_as_bits():
    mask = PruningMask((3, 5))
    values = (np.arange(15).reshape(3, 5) % 3 != 0).astype("uint8")
    mask.mask.assign(values)
    store = {}
    mask.save_own_variables(store)
    assert store["0"].dtype == np.uint8 and store["0"].size == 2  # 15 bits
    again = PruningMask((3, 5))
    again.load_own_variables(store)
    np.testing.assert_array_equal(_numpy(again.mask), values)


def test_strip_pruning_bakes_zeros_and_removes_masks():
    model = regression_maml()
    model.fit(
        sinusoid_tasks(steps=2), epochs=1, verbose=0, callbacks=[MagnitudePruning(0.5)]
    )
    plain = strip_pruning(model)
    assert type(plain) is type(model) and plain is not model
    assert "PruningMask" not in str(keras.saving.serialize_keras_object(plain))
    for layer, original in zip(plain.learner.layers, model.learner.layers):
        assert layer.kernel_constraint is None
        assert layer.kernel.constraint is None
        np.testing.assert_array_equal(_numpy(layer.kernel), _numpy(original.kernel))
        assert np.mean(_numpy(layer.kernel) == 0) == pytest.approx(0.5, abs=0.02)
    assert int(_numpy(plain.optimizer.iterations)) == 2
    # The original keeps its masks.
    assert all(
        isinstance(layer.kernel_constraint, PruningMask)
        for layer in model.learner.layers
    )
    x = np.linspace(-5, 5, 7, dtype="float32")[:, None]
    np.testing.assert_allclose(plain.predict(x, verbose=0), model.predict(x, verbose=0))


def test_existing_constraint_is_kept_under_the_mask():
    learner = keras.Sequential(
        [
            keras.Input((1,)),
            keras.layers.Dense(8, kernel_constraint=keras.constraints.NonNeg()),
            keras.layers.Dense(1),
        ]
    )
    model = metakeras.MAML(learner)
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    model.fit(
        sinusoid_tasks(steps=2), epochs=1, verbose=0, callbacks=[MagnitudePruning(0.5)]
    )
    kernel = _numpy(learner.layers[0].kernel)
    mask = _numpy(learner.layers[0].kernel_constraint.mask)
    assert np.all(kernel >= 0)  # the layer's own constraint still holds
    assert np.mean(mask) == 0.5 and np.all(kernel[mask == 0] == 0)
    plain = strip_pruning(model)
    assert isinstance(
        plain.learner.layers[0].kernel_constraint, keras.constraints.NonNeg
    )
