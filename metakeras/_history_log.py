"""`history.csv` of `metakeras train`: one row per epoch, written atomically."""

import os

import keras
import numpy as np
import pandas as pd

from metakeras._io import atomic_path


class HistoryLog(keras.callbacks.Callback):
    """Writes the epoch logs to a CSV file, rewritten atomically every epoch.

    Unlike `keras.callbacks.CSVLogger`, it writes only the values that were
    logged (no empty `val_` columns without validation) and never leaves a
    half-written line: each epoch rewrites the whole file through a
    temporary file. With `append=True` the rows already in the file are
    kept (a resumed run continues its log).

    Args:
        path: the CSV file.
        append: keep the rows of an existing file. Defaults to `False`.
    """

    def __init__(self, path, append=False):
        super().__init__()
        self.path = path
        self.append = append

    def on_train_begin(self, logs=None):
        self._rows = []
        if self.append and os.path.exists(self.path):
            previous = pd.read_csv(self.path)
            self._rows = previous.to_dict("records")

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch}
        for key in sorted(logs or {}):
            value = np.asarray(keras.ops.convert_to_numpy(logs[key]))
            row[key] = float(value) if value.size == 1 else str(value.tolist())
        self._rows.append(row)
        with atomic_path(self.path) as tmp:
            pd.DataFrame(self._rows).to_csv(tmp, index=False)
