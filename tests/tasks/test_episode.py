import numpy as np
import pytest
from conftest import classification_episodes

from metakeras.tasks import EPISODE_KEYS, unpack_episode, validate_episode


def test_unpack_accepts_dict_tuple_and_keras_wrapping():
    episodes = classification_episodes()
    as_tuple = tuple(episodes[k] for k in EPISODE_KEYS)
    for data in (episodes, as_tuple, (episodes,), [episodes]):
        unpacked = unpack_episode(data)
        for got, want in zip(unpacked, as_tuple):
            assert got is want


def test_unpack_missing_key_names_it():
    episodes = classification_episodes()
    del episodes["query_y"]
    with pytest.raises(ValueError, match=r"missing key\(s\) \['query_y'\]"):
        unpack_episode(episodes)


def test_unpack_rejects_other_structures():
    with pytest.raises(ValueError, match="must be a dict with keys"):
        unpack_episode((np.zeros(3), np.zeros(3)))


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("support_x", np.zeros((5, 6, 4), "float32"), "same number of tasks"),
        ("support_y", np.zeros((4, 5), "int64"), "same number of examples"),
        ("query_x", np.zeros((4, 9, 5), "float32"), "same feature shape"),
        ("query_y", np.zeros((4, 9, 1), "int64"), "same target shape"),
        ("support_x", np.zeros((6,), "float32"), "leading task axis"),
        ("query_x", np.zeros((4, 0, 4), "float32"), "same number of examples"),
    ],
)
def test_validate_shape_errors_name_the_argument(key, value, message):
    episodes = classification_episodes()
    episodes[key] = value
    with pytest.raises(ValueError, match=message) as info:
        validate_episode(*(episodes[k] for k in EPISODE_KEYS))
    assert "`" in str(info.value)


def test_validate_non_finite():
    episodes = classification_episodes()
    episodes["query_x"][1, 2, 0] = np.inf
    with pytest.raises(ValueError, match="`query_x` contains NaN or infinite"):
        validate_episode(*(episodes[k] for k in EPISODE_KEYS))


def test_validate_label_range():
    episodes = classification_episodes(ways=3)
    validate_episode(*(episodes[k] for k in EPISODE_KEYS), num_classes=3)
    episodes["support_y"][0, 0] = 3
    with pytest.raises(
        ValueError, match=r"`support_y` holds labels in \[0, 3\].*\[0, 2\]"
    ):
        validate_episode(*(episodes[k] for k in EPISODE_KEYS), num_classes=3)
    episodes["support_y"][0, 0] = -1
    with pytest.raises(ValueError, match="`support_y`"):
        validate_episode(*(episodes[k] for k in EPISODE_KEYS), num_classes=3)
