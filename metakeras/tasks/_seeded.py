"""What every task source shares: batches as a function of (seed, epoch, index)."""

import keras
import numpy as np


class SeededTasks(keras.utils.PyDataset):
    """A `PyDataset` whose batch `index` of epoch `epoch` is drawn from its own
    random generator, seeded with `(seed, epoch, index)`.

    So any worker, in any order, draws exactly the batches one process would,
    and a resumed run draws the batches the interrupted one would have.
    Subclasses set `seed`, `steps`, `resample` and `epoch` and draw a batch
    from `self._rng(index)`.
    """

    def __len__(self):
        return self.steps

    def _rng(self, index):
        """The generator of batch `index` of the current epoch."""
        if not 0 <= index < self.steps:
            raise IndexError(f"Batch index {index} out of range [0, {self.steps}).")
        return np.random.default_rng([self.seed, self.epoch, index])

    def on_epoch_end(self):
        if self.resample:
            self.epoch += 1
