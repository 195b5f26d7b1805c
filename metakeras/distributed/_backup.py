"""`BackupAndRestore` for multi-process training: every rank reads, rank 0 writes."""

from metakeras import _keras_compat
from metakeras.distributed._process_group import rank


class BackupAndRestore(_keras_compat.BackupAndRestoreHooks):
    """`keras.callbacks.BackupAndRestore` for multi-process training.

    Every process must resume at the same epoch from the same weights, so
    every process *reads* the backup when training starts; only rank 0
    *writes* it (and deletes it at the end when `delete_checkpoint=True`),
    so the processes never race on the files. Put `backup_dir` on a file
    system that every node can read (in a single process this is exactly
    Keras's callback). `metakeras train` uses it.

    Args:
        backup_dir: the folder of the backup, as in Keras.
        save_freq: `"epoch"` or a number of batches, as in Keras. Defaults
            to `"epoch"`.
        double_checkpoint: keep the previous backup too, as in Keras.
            Defaults to `False`.
        delete_checkpoint: delete the backup when training ends. Defaults
            to `True`.

    Example:

    ```python
    model.fit(distributed.shard(tasks), epochs=10, callbacks=[
        distributed.BackupAndRestore("run/backup")])
    ```
    """

    def __init__(
        self,
        backup_dir,
        save_freq="epoch",
        double_checkpoint=False,
        delete_checkpoint=True,
    ):
        super().__init__(
            backup_dir,
            save_freq=save_freq,
            double_checkpoint=double_checkpoint,
            delete_checkpoint=delete_checkpoint,
        )

    def _write_backup(self):
        if rank() == 0:
            super()._write_backup()

    def on_train_end(self, logs=None):
        # Only rank 0 deletes the backup; the rest of the hook runs on all.
        delete = self.delete_checkpoint
        self.delete_checkpoint = delete and rank() == 0
        try:
            super().on_train_end(logs)
        finally:
            self.delete_checkpoint = delete
