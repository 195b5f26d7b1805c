import numpy as np
import pytest

from metakeras.tasks import EPISODE_KEYS, SinusoidTasks, validate_episode


def test_batches_follow_the_contract_and_the_task_family():
    tasks = SinusoidTasks(shots=5, queries=7, meta_batch_size=6, steps=3, seed=0)
    assert len(tasks) == 3
    batch = tasks[1]
    assert batch["support_x"].shape == (6, 5, 1)
    assert batch["support_y"].shape == (6, 5, 1)
    assert batch["query_x"].shape == (6, 7, 1)
    assert batch["query_y"].shape == (6, 7, 1)
    validate_episode(*(batch[k] for k in EPISODE_KEYS))
    amplitude, phase = tasks.task_parameters(1)
    assert np.all((amplitude >= 0.1) & (amplitude <= 5.0))
    assert np.all((phase >= 0) & (phase <= np.pi))
    for key_x, key_y in (("support_x", "support_y"), ("query_x", "query_y")):
        x, y = batch[key_x], batch[key_y]
        assert np.all(np.abs(x) <= 5.0)
        expected = amplitude[:, None, None] * np.sin(x - phase[:, None, None])
        np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_seeded_and_index_pure():
    a = SinusoidTasks(seed=3, steps=4)
    b = SinusoidTasks(seed=3, steps=4)
    for index in (3, 0, 2):  # any order, any worker: same batch
        for key in EPISODE_KEYS:
            np.testing.assert_array_equal(a[index][key], b[index][key])
    c = SinusoidTasks(seed=4, steps=4)
    assert not np.array_equal(a[0]["support_x"], c[0]["support_x"])
    assert not np.array_equal(a[0]["support_x"], a[1]["support_x"])


def test_resample_controls_new_tasks_per_epoch():
    fresh = SinusoidTasks(seed=0, steps=2)
    first = fresh[0]["support_x"].copy()
    fresh.on_epoch_end()
    assert not np.array_equal(first, fresh[0]["support_x"])
    fixed = SinusoidTasks(seed=0, steps=2, resample=False)
    fixed.on_epoch_end()
    np.testing.assert_array_equal(first, fixed[0]["support_x"])


def test_as_episodes_concatenates_the_epoch():
    tasks = SinusoidTasks(meta_batch_size=4, steps=3, seed=1, resample=False)
    episodes = tasks.as_episodes()
    assert episodes["support_x"].shape[0] == 12
    np.testing.assert_array_equal(episodes["query_y"][4:8], tasks[1]["query_y"])
    np.testing.assert_array_equal(
        episodes["amplitude"][8:], tasks.task_parameters(2)[0]
    )


def test_unseeded_tasks_still_repeat_within_the_object():
    tasks = SinusoidTasks(steps=1)
    np.testing.assert_array_equal(tasks[0]["support_x"], tasks[0]["support_x"])
    with pytest.raises(IndexError):
        tasks[1]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"shots": 0}, "`shots` must be a positive integer"),
        ({"queries": -1}, "`queries`"),
        ({"meta_batch_size": 2.5}, "`meta_batch_size`"),
        ({"steps": True}, "`steps`"),
        ({"amplitude_range": (5.0, 0.1)}, "`amplitude_range`"),
        ({"x_range": (0, float("inf"))}, "`x_range`"),
        ({"phase_range": (1.0,)}, "`phase_range`"),
        ({"seed": -3}, "`seed`"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SinusoidTasks(**kwargs)
