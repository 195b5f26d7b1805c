"""The sinusoid regression task family of the MAML paper."""

import math

import numpy as np

from metakeras._checks import check_positive_ints, resolve_seed
from metakeras.tasks._seeded import SeededTasks


class SinusoidTasks(SeededTasks):
    """Meta-batches of sinusoid regression tasks, `y = A * sin(x - phase)`.

    Each task draws an amplitude `A ~ U(amplitude_range)` and a phase
    `~ U(phase_range)`; its support and query points are `x ~ U(x_range)`.
    This is the regression benchmark of the MAML paper (Finn et al., 2017,
    section 5.1). Every item is one meta-batch in the episode contract:
    `support_x (T, K, 1)`, `support_y (T, K, 1)`, `query_x (T, Q, 1)`,
    `query_y (T, Q, 1)`.

    Batches are a pure function of `(seed, epoch, index)`, so any worker
    produces the same batch for the same index, and a seeded run repeats
    exactly. With `resample=True` each epoch draws new tasks; with `False`
    every epoch sees the same tasks (a fixed validation or test set).

    Args:
        shots: support points per task (K). Defaults to `5`.
        queries: query points per task (Q). Defaults to `10`.
        meta_batch_size: tasks per batch (T). Defaults to `25`.
        steps: batches per epoch. Defaults to `100`.
        amplitude_range: `(low, high)` of the amplitude. Defaults to
            `(0.1, 5.0)`.
        phase_range: `(low, high)` of the phase. Defaults to `(0, pi)`.
        x_range: `(low, high)` of the inputs. Defaults to `(-5.0, 5.0)`.
        seed: integer seed. Defaults to `None` (a random seed, drawn once).
        resample: draw new tasks every epoch. Defaults to `True`.
        **kwargs: `workers`, `use_multiprocessing`, `max_queue_size` of
            `keras.utils.PyDataset`.

    Example:

    >>> tasks = SinusoidTasks(shots=5, queries=10, meta_batch_size=4, seed=0)
    >>> tasks[0]["support_x"].shape
    (4, 5, 1)
    """

    def __init__(
        self,
        shots=5,
        queries=10,
        meta_batch_size=25,
        steps=100,
        amplitude_range=(0.1, 5.0),
        phase_range=(0.0, math.pi),
        x_range=(-5.0, 5.0),
        seed=None,
        resample=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_positive_ints(
            shots=shots, queries=queries, meta_batch_size=meta_batch_size, steps=steps
        )
        for name, value in (
            ("amplitude_range", amplitude_range),
            ("phase_range", phase_range),
            ("x_range", x_range),
        ):
            if (
                len(value) != 2
                or not all(np.isfinite(v) for v in value)
                or not value[0] <= value[1]
            ):
                raise ValueError(
                    f"`{name}` must be a (low, high) pair of finite numbers with "
                    f"low <= high. Received: {name}={value!r}"
                )
        seed = resolve_seed(seed)
        self.shots = int(shots)
        self.queries = int(queries)
        self.meta_batch_size = int(meta_batch_size)
        self.steps = int(steps)
        self.amplitude_range = tuple(float(v) for v in amplitude_range)
        self.phase_range = tuple(float(v) for v in phase_range)
        self.x_range = tuple(float(v) for v in x_range)
        self.seed = int(seed)
        self.resample = resample
        self.epoch = 0

    def __getitem__(self, index):
        amplitude, phase, x = self._draw(index)
        y = amplitude[:, None, None] * np.sin(x - phase[:, None, None])
        k = self.shots
        return {
            "support_x": x[:, :k],
            "support_y": y[:, :k].astype("float32"),
            "query_x": x[:, k:],
            "query_y": y[:, k:].astype("float32"),
        }

    def task_parameters(self, index):
        """The amplitude and phase of each task of one batch.

        Args:
            index: the batch index, as for `tasks[index]`.

        Returns:
            A tuple `(amplitudes, phases)` of float arrays `(T,)`.
        """
        amplitude, phase, _ = self._draw(index)
        return amplitude, phase

    def as_episodes(self):
        """All batches of the current epoch, concatenated along the task axis.

        Returns:
            A dict in the episode contract with `steps * meta_batch_size`
            tasks, plus `amplitude` and `phase` arrays of shape `(tasks,)`.
        """
        batches = [self[i] for i in range(self.steps)]
        episodes = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
        params = [self.task_parameters(i) for i in range(self.steps)]
        episodes["amplitude"] = np.concatenate([p[0] for p in params])
        episodes["phase"] = np.concatenate([p[1] for p in params])
        return episodes

    def _draw(self, index):
        rng = self._rng(index)
        t = self.meta_batch_size
        amplitude = rng.uniform(*self.amplitude_range, size=t)
        phase = rng.uniform(*self.phase_range, size=t)
        x = rng.uniform(*self.x_range, size=(t, self.shots + self.queries, 1))
        return amplitude, phase, x.astype("float32")
