"""Tests of `metakeras.tasks.GroupedTasks`: regression episodes within groups."""

import keras
import numpy as np
import pytest
from conftest import mlp

import metakeras
from metakeras.tasks import EPISODE_KEYS, GroupedTasks, validate_episode


def _rows(tasks=6, rows=12, features=2, targets=1, seed=0):
    """Rows of `tasks` linear tasks; x[:, 0] holds the row's task id."""
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(tasks), rows)
    x = rng.normal(size=(tasks * rows, features))
    x[:, 0] = groups
    slopes = rng.normal(size=(tasks, targets))
    y = x[:, 1:2] * slopes[groups]
    return x, (y if targets > 1 else y[:, 0]), groups


def test_batches_follow_the_contract_within_one_group():
    x, y, groups = _rows()
    tasks = GroupedTasks(x, y, groups, shots=4, queries=5, meta_batch_size=3, seed=0)
    assert len(tasks) == 100 and tasks.num_groups == 6
    np.testing.assert_array_equal(tasks.group_labels, np.arange(6))
    batch = tasks[7]
    assert batch["support_x"].shape == (3, 4, 2)
    assert batch["support_y"].shape == (3, 4, 1)  # a 1-D y is one target
    assert batch["query_x"].shape == (3, 5, 2)
    assert batch["query_y"].shape == (3, 5, 1)
    assert all(batch[k].dtype == np.float32 for k in EPISODE_KEYS)
    validate_episode(*(batch[k] for k in EPISODE_KEYS))
    for t in range(3):
        support, query = batch["support_x"][t], batch["query_x"][t]
        task_ids = np.unique(np.r_[support[:, 0], query[:, 0]])
        assert task_ids.size == 1  # support and query rows of one group
        rows = np.r_[support[:, 1], query[:, 1]]
        assert np.unique(rows).size == 9  # distinct rows, none in both sets
    # Fewer episodes than groups: every episode of a batch has its own group.
    assert np.unique(batch["support_x"][:, 0, 0]).size == 3


def test_seeded_index_pure_and_resampled_per_epoch():
    x, y, groups = _rows(targets=2)
    a = GroupedTasks(x, y, groups, shots=2, queries=3, steps=4, seed=5)
    b = GroupedTasks(x, y, groups, shots=2, queries=3, steps=4, seed=5)
    for index in (3, 0, 2):
        for key in EPISODE_KEYS:
            np.testing.assert_array_equal(a[index][key], b[index][key])
    assert a[0]["support_y"].shape == (8, 2, 2)
    first = a[0]["support_x"].copy()
    a.on_epoch_end()
    assert not np.array_equal(a[0]["support_x"], first)
    fixed = GroupedTasks(x, y, groups, shots=2, queries=3, seed=5, resample=False)
    fixed.on_epoch_end()
    np.testing.assert_array_equal(fixed[0]["support_x"], first)


def test_queries_lowered_to_the_smallest_group_and_one_task_without_groups():
    x, y, _ = _rows(tasks=2, rows=10)
    groups = np.array(["big"] * 14 + ["small"] * 6)
    tasks = GroupedTasks(x, y, groups, shots=4, queries=10, seed=0)
    assert tasks.queries == 2  # 6 rows - 4 shots
    assert tasks[0]["query_x"].shape[1] == 2
    np.testing.assert_array_equal(tasks.group_labels, ["big", "small"])
    alone = GroupedTasks(x, y, shots=4, queries=10, meta_batch_size=2, seed=0)
    assert alone.num_groups == 1 and alone.queries == 10


def test_meta_trains_a_model():
    x, y, groups = _rows(tasks=8, rows=10)
    tasks = GroupedTasks(x, y, groups, shots=3, queries=4, steps=3, seed=0)
    model = metakeras.MAML(mlp(inputs=2), inner_learning_rate=0.01)
    model.compile(optimizer=keras.optimizers.Adam(0.001), loss="mse")
    history = model.fit(tasks, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


def test_invalid_arguments_are_named():
    x, y, groups = _rows()
    for name, value in (("shots", 0), ("queries", 1.5), ("steps", True)):
        with pytest.raises(ValueError, match=rf"`{name}` must be a positive integer"):
            GroupedTasks(x, y, groups, **{name: value})
    with pytest.raises(ValueError, match="`seed` must be None or a non-negative"):
        GroupedTasks(x, y, groups, seed=-1)
    with pytest.raises(ValueError, match="`resample` must be True or False"):
        GroupedTasks(x, y, groups, resample=1)
    with pytest.raises(ValueError, match=r"len\(x\)=72, len\(y\)=72, len\(groups\)=5"):
        GroupedTasks(x, y, groups[:5])
    with pytest.raises(ValueError, match="`groups` must be a 1-D array"):
        GroupedTasks(x, y, groups[:, None])
    with pytest.raises(ValueError, match=r"`y` must have shape \(rows,\)"):
        GroupedTasks(x, y[:, None, None])
    bad = y.copy()
    bad[3] = np.nan
    with pytest.raises(ValueError, match=r"`y` contains NaN .* at index \[3\]"):
        GroupedTasks(x, bad, groups)
    with pytest.raises(ValueError, match="`x` must be numeric"):
        GroupedTasks(np.array([["a", "b"]] * 72), y, groups)
    small = np.r_[groups[:-3], [9, 9, 9]]
    with pytest.raises(ValueError, match=r"shots \+ 1 = 6 rows.*task 9 has 3 samples"):
        GroupedTasks(x, y, small, shots=5)
    with pytest.raises(IndexError, match=r"out of range \[0, 2\)"):
        GroupedTasks(x, y, groups, steps=2)[2]
