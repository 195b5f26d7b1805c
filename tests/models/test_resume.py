"""Interrupted training resumes exactly (`MetaModel.fit` + BackupAndRestore)."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from conftest import mlp

import metakeras
from metakeras.tasks import SinusoidTasks

EPOCHS, STEPS = 3, 5


def build(dropout=0.1, inner_batch_size=3):
    # Dropout (a Keras seed generator, not in `.weights.h5`) and inner
    # mini-batches (`torch.randperm`) exercise every random state training
    # consumes; Adam has moments that a restore must bring back.
    keras.utils.set_random_seed(0)
    learner = mlp(hidden=16, activation="relu", dropout=dropout)
    model = metakeras.MAML(
        learner,
        inner_steps=2,
        inner_learning_rate=0.01,
        inner_batch_size=inner_batch_size,
    )
    model.compile(keras.optimizers.Adam(1e-2), loss="mse")
    tasks = SinusoidTasks(shots=5, queries=5, meta_batch_size=3, steps=STEPS, seed=0)
    return model, tasks


def state_of(model):
    return [np.array(w) for w in model.get_weights()] + [
        np.array(v) for v in model.optimizer.variables
    ]


class Interrupt(keras.callbacks.Callback):
    """Raises after the `at`-th batch of this `fit` (an in-process kill)."""

    def __init__(self, at):
        super().__init__()
        self.at = at
        self.seen = 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.at:
            raise KeyboardInterrupt


@pytest.fixture(scope="module")
def uninterrupted():
    model, tasks = build()
    history = model.fit(tasks, epochs=EPOCHS, verbose=0)
    return state_of(model), history.history["loss"]


@pytest.mark.parametrize(
    "save_freq, kills",
    [
        (1, [7]),  # mid-epoch, nothing lost
        (3, [4, 6]),  # progress after the backup is lost and redone; twice
        ("epoch", [8]),  # the interrupted epoch is redone from its start
        (2, [5]),  # killed right after the last batch of an epoch
    ],
)
def test_interrupted_fit_ends_with_the_uninterrupted_weights(
    tmp_path, uninterrupted, save_freq, kills
):
    expected, expected_loss = uninterrupted
    backup = str(tmp_path / "backup")
    for at in kills:
        model, tasks = build()
        with pytest.raises(KeyboardInterrupt):
            model.fit(
                tasks,
                epochs=EPOCHS,
                verbose=0,
                callbacks=[
                    keras.callbacks.BackupAndRestore(backup, save_freq=save_freq),
                    Interrupt(at),
                ],
            )
        assert os.path.exists(os.path.join(backup, "training_metadata.json"))
    model, tasks = build()
    history = model.fit(
        tasks,
        epochs=EPOCHS,
        verbose=0,
        callbacks=[keras.callbacks.BackupAndRestore(backup, save_freq=save_freq)],
    )
    for got, want in zip(state_of(model), expected):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    # The resumed epochs log what the uninterrupted run logged.
    resumed = history.history["loss"]
    np.testing.assert_allclose(resumed, expected_loss[-len(resumed) :], rtol=1e-5)
    assert not os.path.exists(backup)  # delete_checkpoint=True, as in Keras


def test_the_backup_records_the_task_source_position(tmp_path):
    model, tasks = build()
    backup = str(tmp_path / "backup")
    with pytest.raises(KeyboardInterrupt):
        model.fit(
            tasks,
            epochs=EPOCHS,
            verbose=0,
            callbacks=[
                keras.callbacks.BackupAndRestore(backup, save_freq=1),
                Interrupt(STEPS + 2),
            ],
        )
    with open(os.path.join(backup, "training_metadata.json")) as f:
        metadata = json.load(f)
    assert (metadata["epoch"], metadata["batches_done"]) == (1, 2)
    assert metadata["task_source_epoch"] == tasks.epoch
    # Only the latest weights/state pair is kept.
    pairs = sorted(n for n in os.listdir(backup) if n.startswith("ckpt-"))
    assert len(pairs) == 2 and pairs[0].split(".")[0] == metadata["checkpoint"]


def test_a_damaged_backup_is_refused_with_a_clear_error(tmp_path):
    model, tasks = build()
    backup = str(tmp_path / "backup")
    with pytest.raises(KeyboardInterrupt):
        model.fit(
            tasks,
            epochs=EPOCHS,
            verbose=0,
            callbacks=[
                keras.callbacks.BackupAndRestore(backup, save_freq=1),
                Interrupt(3),
            ],
        )
    with open(os.path.join(backup, "training_metadata.json")) as f:
        name = json.load(f)["checkpoint"]
    weights = os.path.join(backup, f"{name}.weights.h5")
    with open(weights, "r+b") as f:
        f.truncate(os.path.getsize(weights) // 2)
    model, tasks = build()
    before = state_of(model)
    with pytest.raises(ValueError, match="backup .* is damaged"):
        model.fit(
            tasks,
            epochs=EPOCHS,
            verbose=0,
            callbacks=[keras.callbacks.BackupAndRestore(backup, save_freq=1)],
        )
    for got, want in zip(state_of(model), before):
        np.testing.assert_array_equal(got, want)


def test_a_backup_of_another_task_source_is_refused(tmp_path):
    model, tasks = build()
    backup = str(tmp_path / "backup")
    with pytest.raises(KeyboardInterrupt):
        model.fit(
            tasks,
            epochs=EPOCHS,
            verbose=0,
            callbacks=[
                keras.callbacks.BackupAndRestore(backup, save_freq=1),
                Interrupt(2),
            ],
        )
    model, _ = build()
    other = SinusoidTasks(shots=5, queries=5, meta_batch_size=3, steps=7, seed=0)
    with pytest.raises(ValueError, match="5 batches per epoch, but this `fit` has 7"):
        model.fit(
            other,
            epochs=EPOCHS,
            verbose=0,
            callbacks=[keras.callbacks.BackupAndRestore(backup, save_freq=1)],
        )


_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    sys.path[:0] = {paths!r}  # test_resume and the conftest it imports
    import keras
    from test_resume import build, EPOCHS

    backup, kill_at = sys.argv[1], int(sys.argv[2])

    class Kill(keras.callbacks.Callback):
        seen = 0

        def on_train_batch_end(self, batch, logs=None):
            Kill.seen += 1
            if Kill.seen == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

    model, tasks = build()
    callbacks = [keras.callbacks.BackupAndRestore(backup, save_freq=2), Kill()]
    model.fit(tasks, epochs=EPOCHS, verbose=0, callbacks=callbacks)
    """
)


def test_sigkill_mid_epoch_then_restart_matches_the_uninterrupted_run(
    tmp_path, uninterrupted
):
    script = tmp_path / "child.py"
    here = os.path.dirname(os.path.abspath(__file__))
    script.write_text(_CHILD.format(paths=[here, os.path.dirname(here)]))
    env = dict(os.environ, KERAS_BACKEND="torch", PYTHONHASHSEED="0")
    backup = str(tmp_path / "backup")
    # Killed mid-epoch 1, one batch after a backup (that batch is redone),
    # then restarted (here, in this process) and run to the end.
    killed = subprocess.run(
        [sys.executable, str(script), backup, str(STEPS + 3)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    model, tasks = build()
    epochs = []
    callbacks = [
        keras.callbacks.BackupAndRestore(backup, save_freq=2),
        keras.callbacks.LambdaCallback(on_epoch_begin=lambda e, _: epochs.append(e)),
    ]
    model.fit(tasks, epochs=EPOCHS, verbose=0, callbacks=callbacks)
    assert epochs == [1, 2]  # resumed in epoch 1, from the backup
    expected, _ = uninterrupted
    final = state_of(model)
    assert len(final) == len(expected)
    for got, want in zip(final, expected):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_train_command_resumes_mid_epoch_to_the_same_model(tmp_path):
    from metakeras.cli._config import resolve_config
    from metakeras.cli._train import run_train

    def config(name, **extra):
        return resolve_config(
            None,
            dict(
                dataset="sinusoid",
                epochs=2,
                steps_per_epoch=4,
                meta_batch_size=4,
                backup_every=1,
                verbose=0,
                output_dir=str(tmp_path / name),
                **extra,
            ),
        )

    reference = run_train(config("reference"), log=lambda *a: None)
    with pytest.raises(KeyboardInterrupt):
        run_train(config("resumed"), callbacks=[Interrupt(6)], log=lambda *a: None)
    resumed = run_train(config("resumed"), log=lambda *a: None)
    assert resumed["epochs_run"] == 1
    a = keras.models.load_model(reference["paths"]["model"]).get_weights()
    b = keras.models.load_model(resumed["paths"]["model"]).get_weights()
    for got, want in zip(b, a):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    assert list(resumed["history"]["epoch"]) == [0, 1]
    np.testing.assert_allclose(
        resumed["history"]["loss"], reference["history"]["loss"], rtol=1e-5
    )
