"""split_classes: disjoint, reproducible class splits."""

import numpy as np
import pytest

from metakeras.tasks import TaskSampler, split_classes


def test_fraction_splits_are_disjoint_complete_and_sized():
    labels = np.repeat(np.arange(50), 3)  # per-example labels, repeats are fine
    train, val, test = split_classes(labels, fractions=(0.6, 0.2, 0.2), seed=0)
    assert (len(train), len(val), len(test)) == (30, 10, 10)
    assert not set(train) & set(val)
    assert not set(train) & set(test)
    assert not set(val) & set(test)
    assert sorted({*train, *val, *test}) == list(range(50))
    assert all(np.all(np.diff(part) > 0) for part in (train, val, test))


def test_default_fractions_and_partial_use():
    train, val, test = split_classes(range(10))
    assert (len(train), len(val), len(test)) == (6, 2, 2)
    (only,) = split_classes(range(10), fractions=(0.5,))
    assert len(only) == 5


def test_same_seed_same_split_other_seed_differs():
    a = split_classes(range(100), seed=3)
    b = split_classes(range(100), seed=3)
    c = split_classes(range(100), seed=4)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])


def test_string_labels():
    names = [f"alphabet_{i}" for i in range(7)]
    train, test = split_classes(names * 2, fractions=(0.7, 0.3), seed=1)
    assert len(train) == 5 and len(test) == 2
    assert not set(train) & set(test)


def test_explicit_splits_are_checked_and_returned_sorted():
    train, test = split_classes(range(6), splits=([4, 0, 2], [5, 1]))
    assert train.tolist() == [0, 2, 4] and test.tolist() == [1, 5]
    with pytest.raises(
        ValueError, match=r"Class 2 is in both `splits\[0\]` and `splits\[1\]`"
    ):
        split_classes(range(6), splits=([0, 2], [2, 3]))
    with pytest.raises(
        ValueError, match=r"`splits\[1\]` holds class\(es\) not in `labels`: \[9\]"
    ):
        split_classes(range(6), splits=([0], [9]))
    with pytest.raises(ValueError, match=r"`splits\[0\]` repeats class\(es\) \[1\]"):
        split_classes(range(6), splits=([1, 1], [2]))
    with pytest.raises(ValueError, match=r"`splits\[1\]` is empty"):
        split_classes(range(6), splits=([1], []))
    with pytest.raises(ValueError, match="either `fractions` or `splits`"):
        split_classes(range(6), fractions=(0.5, 0.5), splits=([1], [2]))


@pytest.mark.parametrize(
    "fractions, message",
    [
        ((0.6, 0.6), r"sum to at most 1\. Received: \(0\.6, 0\.6\)"),
        ((0.5, 0.0), r"`fractions` must be positive"),
        ((0.5, -0.1), r"`fractions` must be positive"),
        ("abc", r"`fractions` must be a sequence of numbers"),
        ((0.98, 0.01, 0.01), r"of 10 classes leaves split 1 empty"),
    ],
)
def test_bad_fractions(fractions, message):
    with pytest.raises(ValueError, match=message):
        split_classes(range(10), fractions=fractions)


def test_bad_seed_and_empty_labels():
    with pytest.raises(ValueError, match="`seed` must be a non-negative integer"):
        split_classes(range(10), seed=-1)
    with pytest.raises(ValueError, match="no classes"):
        split_classes([])


def test_samplers_on_different_splits_never_share_a_class():
    y = np.repeat(np.arange(20), 5)
    x = np.arange(len(y), dtype="float32")[:, None]
    train, val, test = split_classes(y, seed=0)
    seen = {}
    for name, classes in (("train", train), ("val", val), ("test", test)):
        sampler = TaskSampler(
            x, y, ways=3, shots=1, queries=2, steps=10, classes=classes, seed=0
        )
        drawn = set()
        for index in range(10):
            batch = sampler[index]
            ids = np.concatenate(
                [batch["support_x"].ravel(), batch["query_x"].ravel()]
            ).astype(int)
            drawn |= set(y[ids].tolist())
        assert drawn <= set(classes.tolist())
        seen[name] = drawn
    assert not seen["train"] & seen["val"]
    assert not seen["train"] & seen["test"]
    assert not seen["val"] & seen["test"]
