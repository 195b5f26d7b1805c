"""What every task source shares: batches as a function of (seed, epoch, index)."""

import keras
import numpy as np


class SeededTasks(keras.utils.PyDataset):
    """A `PyDataset` whose batch `index` of epoch `epoch` is drawn from its own
    random generator, seeded with `(seed, epoch, index)`.

    So any worker, in any order, draws exactly the batches one process would,
    and a resumed run draws the batches the interrupted one would have.
    Subclasses set `seed`, `steps`, `resample` and `epoch` and draw a batch
    from `self._rng(index)`; randomness applied after the draw (transforms,
    augmentation) comes from `self._rng(index, stream)`, so adding it leaves
    the drawn episodes unchanged.
    """

    def __len__(self):
        return self.steps

    def _rng(self, index, stream=0):
        """The generator of batch `index` of the current epoch.

        `stream` numbers independent generators of the same batch: 0 draws
        the episodes, 1 the `transform`, 2 the `augmentation`.
        """
        if not 0 <= index < self.steps:
            raise IndexError(f"Batch index {index} out of range [0, {self.steps}).")
        key = [self.seed, self.epoch, index] + ([stream] if stream else [])
        return np.random.default_rng(key)

    def on_epoch_end(self):
        if self.resample:
            self.epoch += 1
