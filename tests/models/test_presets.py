"""The public training recipes behind the README's Omniglot table."""

import keras
import numpy as np
import pytest

import metakeras
from metakeras.models import presets


def images(classes=8, per_class=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((classes * per_class, 28, 28)).astype("float32")
    return x, np.repeat(np.arange(classes), per_class)


@pytest.mark.parametrize("name", presets.available())
def test_presets_train_and_adapt_to_any_ways(name):
    preset = presets.get(name)
    x, y = images()
    episodes = dict(preset.episodes, ways=4, meta_batch_size=2, shots=1, queries=1)
    small = presets.Preset(**{**preset.__dict__, "episodes": episodes})
    model = small.model()
    assert model.transductive_eval
    history = model.fit(
        small.train_tasks(x, y, steps=2),
        epochs=1,
        verbose=0,
        callbacks=small.callbacks(),
    )
    assert np.isfinite(history.history["loss"]).all()
    wide = small.for_ways(model, 6)
    episode = metakeras.tasks.TaskSampler(
        x, y, ways=6, shots=1, queries=1, meta_batch_size=1, steps=1
    )[0]
    logits = wide.adapt_and_predict(
        episode["support_x"], episode["support_y"], episode["query_x"]
    )
    assert logits.shape == (1, 6, 6)


def test_maml_preset_widens_a_zero_head_and_keeps_the_body():
    preset = presets.get("maml-omniglot")
    assert preset.inner == {"inner_steps": 1, "inner_learning_rate": 0.4}
    assert [type(c) for c in preset.callbacks()] == [metakeras.callbacks.ZeroHead]
    model = preset.model()
    assert model.inner.learning_rate == 0.4 and not model.inner.first_order
    wide = preset.for_ways(model, 20)
    assert wide.learner.output_shape == (None, 20)
    for source, target in zip(model.learner.layers[:-1], wide.learner.layers[:-1]):
        for a, b in zip(source.get_weights(), target.get_weights()):
            np.testing.assert_array_equal(a, b)
    assert not any(np.any(w) for w in wide.learner.layers[-1].get_weights())
    assert preset.for_ways(model, 5) is model


@pytest.mark.parametrize("name", ["simpleshot", "baselinepp"])
def test_pretraining_presets_use_sgd_on_conv4_without_its_final_relu(name):
    preset = presets.get(f"{name}-omniglot")
    model = preset.model()
    assert "relu3" not in [layer.name for layer in model.learner.layers]
    config = model.optimizer.get_config()
    assert isinstance(model.optimizer, keras.optimizers.SGD)
    assert config["momentum"] == 0.9 and config["nesterov"]
    assert config["weight_decay"] == 1e-4
    if name == "simpleshot":
        schedule = keras.optimizers.schedules.deserialize(config["learning_rate"])
        np.testing.assert_allclose(float(schedule(1999)), 0.05)
        np.testing.assert_allclose(float(schedule(2000)), 0.025)
    else:  # Baseline++ keeps its rate constant.
        assert preset.halve_every is None and preset.cosine_decay_steps is None
        np.testing.assert_allclose(config["learning_rate"], 0.05)
    with pytest.raises(ValueError, match=r"`optimizer`.*\['adam', 'sgd'\]"):
        presets.Preset(**{**preset.__dict__, "optimizer": "rmsprop"})
    # Both recipes add a center loss (Baseline++'s on unit-length embeddings).
    assert model.center_loss == {"simpleshot": 0.003, "baselinepp": 10.0}[name]


def test_preset_weight_averaging_ends_training_with_the_averages():
    preset = presets.get("simpleshot-omniglot")
    episodes = dict(preset.episodes, ways=4)
    averaged = presets.Preset(
        **{**preset.__dict__, "episodes": episodes, "ema_momentum": 0.5}
    )
    model = averaged.model()
    assert model.optimizer.use_ema and model.optimizer.ema_momentum == 0.5
    assert not preset.model().optimizer.use_ema
    x, y = images()
    sampler = averaged.train_tasks(x, y, steps=3)
    model.fit(sampler, epochs=1, verbose=0, steps_per_epoch=1)  # builds the weights
    weights = model.trainable_weights
    average = [w.numpy() for w in weights]  # Keras's average starts at step 1
    steps = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            steps.append([w.numpy() for w in weights])

    model.fit(sampler, epochs=1, verbose=0, callbacks=[Record()])
    for step in steps:
        average = [0.5 * a + 0.5 * w for a, w in zip(average, step)]
    assert not np.allclose(steps[-1][0], average[0])
    for weight, expected in zip(weights, average):
        np.testing.assert_allclose(weight.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_baseline_preset_keeps_adam_on_the_standard_conv4():
    model = presets.get("baseline-omniglot").model()
    assert "relu3" in [layer.name for layer in model.learner.layers]
    assert isinstance(model.optimizer, keras.optimizers.Adam)


def test_protonet_preset_schedule_and_errors():
    preset = presets.get("protonet-omniglot")
    assert preset.episodes["ways"] == 60 and preset.episodes["queries"] == 2
    model = preset.model()
    schedule = keras.optimizers.schedules.deserialize(
        model.optimizer.get_config()["learning_rate"]
    )
    np.testing.assert_allclose(float(schedule(999)), 1e-3)
    np.testing.assert_allclose(float(schedule(1000)), 5e-4)
    assert preset.for_ways(model, 20) is model
    no_zeroing = presets.Preset(
        **{**presets.get("maml-omniglot").__dict__, "zero_head": False}
    )
    with pytest.raises(ValueError, match="cannot score 20"):
        no_zeroing.for_ways(no_zeroing.model(), 20)
    with pytest.raises(ValueError, match=r"Unknown preset 'maml'. Valid choices"):
        presets.get("maml")


def test_mamlpp_preset_anneals_its_rate_and_widening_keeps_what_it_learned():
    preset = presets.get("mamlpp-omniglot")
    model = preset.model()
    assert isinstance(model, metakeras.MAMLPlusPlus) and model.per_step_bn_statistics
    assert (model.multi_step_loss_epochs, model.first_order_epochs) == (10, 5)
    assert preset.train_tasks(*images(per_class=16), seed=0).steps == 100
    schedule = keras.optimizers.schedules.deserialize(
        model.optimizer.get_config()["learning_rate"]
    )
    assert isinstance(schedule, keras.optimizers.schedules.CosineDecay)
    np.testing.assert_allclose(float(schedule(0)), 1e-3)
    np.testing.assert_allclose(float(schedule(10_000)), 1e-5)
    for i, rate in enumerate(model.step_rates):
        rate.assign(np.full(5, 0.01 * i, "float32"))
    model.step_statistics[0].assign(np.ones(model.step_statistics[0].shape))
    wide = preset.for_ways(model, 20)
    for name in ("step_rates", "step_statistics"):
        for a, b in zip(getattr(model, name), getattr(wide, name)):
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), b.numpy())
    imaml = presets.get("imaml-omniglot").model()
    assert (imaml.proximal_lambda, imaml.cg_steps, imaml.inner.steps) == (2.0, 5, 10)


def test_metasgd_preset_widening_keeps_the_learned_rates():
    preset = presets.get("metasgd-omniglot")
    model = preset.model()
    rng = np.random.default_rng(0)
    for rate in model.inner_rates:
        rate.assign(rng.random(rate.shape).astype("float32"))
    wide = preset.for_ways(model, 20)
    *body, kernel, bias = [keras.ops.convert_to_numpy(r) for r in model.inner_rates]
    *wide_body, wide_kernel, wide_bias = [
        keras.ops.convert_to_numpy(r) for r in wide.inner_rates
    ]
    for a, b in zip(body, wide_body, strict=True):
        np.testing.assert_array_equal(a, b)
    assert wide_kernel.shape == (kernel.shape[0], 20)
    np.testing.assert_allclose(
        wide_kernel, np.repeat(kernel.mean(-1, keepdims=True), 20, -1), rtol=1e-6
    )
    np.testing.assert_allclose(wide_bias, np.full(20, bias.mean()), rtol=1e-6)
