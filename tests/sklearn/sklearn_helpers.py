"""Data and settings shared by the tests of `metakeras.sklearn`."""

import keras
import numpy as np

from metakeras.datasets import digits
from metakeras.tasks import SinusoidTasks


def _digits():
    x, y = digits.load_data()
    return x.reshape(len(x), -1), y


def _few_shot_split(y, classes, shots, rng):
    """Indices of `shots` support rows per class and the other rows."""
    support = np.concatenate(
        [rng.choice(np.flatnonzero(y == c), shots, replace=False) for c in classes]
    )
    others = np.setdiff1d(np.flatnonzero(np.isin(y, classes)), support)
    return support, others


def _tiny():
    return dict(epochs=1, steps_per_epoch=2, meta_batch_size=2, random_state=0)


def _sinusoid_rows(tasks, rows, seed):
    """Rows of `tasks` sinusoid tasks as (X, y, groups), MAML-paper ranges."""
    data = SinusoidTasks(
        shots=rows, queries=1, meta_batch_size=tasks, steps=1, seed=seed
    )[0]
    X = data["support_x"].reshape(-1, 1)
    y = data["support_y"].reshape(-1)
    groups = np.repeat(np.arange(tasks), rows)
    return X, y, groups


def _batch_norm_learner(n_features, n_outputs):
    return keras.Sequential(
        [
            keras.Input((n_features,)),
            keras.layers.Dense(8),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(n_outputs, name="head"),
        ]
    )
