"""MAML++'s options on the MAML family, and `MAMLPlusPlus`."""

import keras
import numpy as np
import pytest
from conftest import FEATURES, LOSS, WAYS, dense_learner, informative_episodes

import metakeras
from metakeras.models import MAMLPlusPlus, multi_step_loss_weights
from metakeras.models._annealing import EpochTracker

EPISODES = informative_episodes(tasks=3, seed=11)


def bn_learner(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((FEATURES,)),
            keras.layers.Dense(16),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.Dense(WAYS),
        ]
    )


def at_epoch(model, epoch):
    tracker = EpochTracker()
    tracker.set_model(model)
    tracker.on_epoch_begin(epoch)
    return model


def meta_step(model, episodes=EPISODES):
    """`(learner's meta-gradient, logged loss)` of one step (SGD(1) update)."""
    if not model.compiled:
        model.compile(optimizer=keras.optimizers.SGD(1.0), loss=LOSS)
    before = [np.array(w) for w in model.learner.get_weights()]
    logs = model.train_on_batch(episodes, return_dict=True)
    after = model.learner.get_weights()
    return [b - a for b, a in zip(before, after)], logs["loss"]


# ------------------------------------------------------------ multi-step loss


@pytest.mark.parametrize(
    "steps, epoch, epochs, expected",
    [
        (5, 0, 10, [0.2] * 5),
        (5, 5, 10, [0.1] * 4 + [0.6]),
        (5, 9, 10, [0.02] * 4 + [0.92]),
        # The floor 0.03 / steps and the last weight's cap 1 - 4 * floor.
        (5, 99, 100, [0.006] * 4 + [0.976]),
        (5, 10, 10, [0.0] * 4 + [1.0]),
        (1, 0, 3, [1.0]),
    ],
)
def test_multi_step_loss_weights_follow_the_papers_schedule(
    steps, epoch, epochs, expected
):
    weights = multi_step_loss_weights(steps, epoch, epochs)
    np.testing.assert_allclose(weights, expected, atol=1e-12)
    assert sum(weights) == pytest.approx(1.0)


@pytest.mark.parametrize("vectorize_tasks", [False, True])
def test_multi_step_loss_is_the_weighted_sum_of_each_steps_query_loss(
    vectorize_tasks,
):
    # Gradients are linear: the multi-step meta-gradient is the weighted sum
    # of the meta-gradients of MAML stopped after 1, 2 and 3 steps.
    steps, epoch, epochs = 3, 1, 4
    model = metakeras.MAML(
        dense_learner(seed=1),
        inner_steps=steps,
        inner_learning_rate=0.3,
        multi_step_loss_epochs=epochs,
        vectorize_tasks=vectorize_tasks,
    )
    got, loss = meta_step(at_epoch(model, epoch))
    weights = multi_step_loss_weights(steps, epoch, epochs)
    want = [0.0] * len(got)
    want_loss = 0.0
    for s, weight in enumerate(weights, start=1):
        single = metakeras.MAML(
            dense_learner(seed=1), inner_steps=s, inner_learning_rate=0.3
        )
        gradient, single_loss = meta_step(single)
        want = [w + weight * g for w, g in zip(want, gradient)]
        want_loss += weight * single_loss
    assert loss == pytest.approx(want_loss, rel=1e-5)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    # Past its epochs the loss is the last step's alone, and evaluation
    # always scores the last step.
    last, _ = meta_step(
        at_epoch(
            metakeras.MAML(
                dense_learner(seed=1),
                inner_steps=steps,
                inner_learning_rate=0.3,
                multi_step_loss_epochs=epochs,
            ),
            epochs,
        )
    )
    for a, b in zip(last, gradient):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_multi_step_loss_with_per_step_statistics_vectorized_and_looped():
    results = []
    for vectorize_tasks in (False, True):
        model = metakeras.MAML(
            bn_learner(seed=2),
            inner_steps=2,
            inner_learning_rate=0.2,
            multi_step_loss_epochs=3,
            per_step_bn_statistics=True,
            per_step_learning_rates=True,
            vectorize_tasks=vectorize_tasks,
        )
        results.append(meta_step(at_epoch(model, 1)))
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-5)
    for a, b in zip(results[0][0], results[1][0]):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


# ------------------------------------------------- derivative-order annealing


def test_first_order_before_epoch_n_then_second_order():
    first, _ = meta_step(
        metakeras.MAML(dense_learner(seed=3), inner_steps=2, first_order=True)
    )
    second, _ = meta_step(metakeras.MAML(dense_learner(seed=3), inner_steps=2))
    assert max(np.abs(a - b).max() for a, b in zip(first, second)) > 1e-4
    for epoch, want in ((0, first), (1, first), (2, second), (5, second)):
        model = metakeras.MAML(
            dense_learner(seed=3), inner_steps=2, first_order_epochs=2
        )
        got, _ = meta_step(at_epoch(model, epoch))
        for a, b in zip(got, want):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_fit_tells_the_model_its_epoch_also_from_initial_epoch():
    seen = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            seen.append((self.model._epoch, self.model._first_order_now()))

    model = metakeras.MAML(dense_learner(), first_order_epochs=2)
    model.compile(optimizer="adam", loss=LOSS)
    model.fit(EPISODES, batch_size=3, epochs=4, initial_epoch=1, callbacks=[Record()])
    assert seen == [(1, True), (2, False), (3, False)]


# ------------------------------------------------------------------ LSLR


def test_learned_step_rates_get_gradients_and_are_saved(tmp_path):
    model = metakeras.MAML(
        dense_learner(seed=4),
        inner_steps=2,
        inner_learning_rate=0.3,
        per_step_learning_rates=True,
    )
    plain = metakeras.MAML(
        dense_learner(seed=4), inner_steps=2, inner_learning_rate=0.3
    )
    got, _ = meta_step(model)
    want, _ = meta_step(plain)
    # The same inner loop at the starting rates: the same learner update...
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    # ...and a gradient for every rate of every step.
    assert len(model.step_rates) == len(model.learner.trainable_variables)
    rates = np.stack([keras.ops.convert_to_numpy(r) for r in model.step_rates])
    assert rates.shape == (4, 2) and (np.abs(rates - 0.3) > 1e-7).all()
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(
        np.stack([keras.ops.convert_to_numpy(r) for r in loaded.step_rates]), rates
    )


def test_each_step_uses_its_own_rate_and_later_steps_the_last():
    model = metakeras.MAML(
        dense_learner(seed=5), inner_steps=2, per_step_learning_rates=True
    )
    model.compile(loss=LOSS)
    for rate in model.step_rates:
        rate.assign([0.5, 0.0])  # step 2 (and any later) does not move
    one_step = metakeras.MAML(dense_learner(seed=5), inner_learning_rate=0.5)
    one_step.compile(loss=LOSS)
    sx, sy = EPISODES["support_x"][0], EPISODES["support_y"][0]
    want = one_step.adapt(sx, sy, inner_steps=1).predict(sx, verbose=0)
    for steps in (2, 4):
        got = model.adapt(sx, sy, inner_steps=steps).predict(sx, verbose=0)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------- cosine annealing


def test_cosine_decay_of_the_outer_rate_through_a_keras_schedule():
    schedule = keras.optimizers.schedules.CosineDecay(1e-2, decay_steps=4, alpha=0.1)
    model = MAMLPlusPlus(dense_learner(), inner_steps=1, first_order_epochs=None)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss=LOSS)
    model.fit(EPISODES, batch_size=1, epochs=1, verbose=0)
    assert int(model.optimizer.iterations) == 3
    rate = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
    assert rate == pytest.approx(float(schedule(3)))
    assert rate < 1e-2


# ---------------------------------------------------------- MAMLPlusPlus


def test_mamlplusplus_switches_on_the_papers_set_and_round_trips(tmp_path):
    dense = MAMLPlusPlus(dense_learner())
    assert (dense.inner.steps, dense.inner.learning_rate) == (5, 0.1)
    assert dense.per_step_learning_rates and not dense.per_step_bn_statistics
    assert (dense.multi_step_loss_epochs, dense.first_order_epochs) == (10, 50)
    model = MAMLPlusPlus(
        bn_learner(), inner_steps=2, multi_step_loss_epochs=2, first_order_epochs=1
    )
    assert model.per_step_bn_statistics and model.step_statistics
    model.compile(optimizer="adam", loss=LOSS, metrics=["accuracy"])
    history = model.fit(EPISODES, batch_size=3, epochs=3, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    rebuilt = MAMLPlusPlus.from_config(model.get_config())
    assert rebuilt.get_config() == model.get_config()
    model.save(tmp_path / "mpp.keras")
    loaded = keras.models.load_model(tmp_path / "mpp.keras")
    assert isinstance(loaded, MAMLPlusPlus)
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "build, message",
    [
        (
            lambda: metakeras.MAML(dense_learner(), multi_step_loss_epochs=-1),
            r"`multi_step_loss_epochs` must be None \(off\) or an integer >= 0",
        ),
        (
            lambda: metakeras.MAML(dense_learner(), first_order_epochs=1.5),
            "Received: first_order_epochs=1.5",
        ),
        (
            lambda: metakeras.MAML(dense_learner(), per_step_learning_rates="yes"),
            "`per_step_learning_rates`",
        ),
        (
            lambda: metakeras.MetaSGD(dense_learner(), per_step_learning_rates=True),
            "MetaSGD learns a rate per weight element already",
        ),
        (
            lambda: metakeras.Reptile(dense_learner(), multi_step_loss_epochs=3),
            "Reptile does not support multi_step_loss_epochs=3",
        ),
    ],
)
def test_bad_maml_plus_plus_options(build, message):
    with pytest.raises(ValueError, match=message):
        build()
