"""Small `metakeras train` runs, shared by the command-line tests."""

from metakeras.cli import main

# Flags that keep a training run to seconds.
_TINY = ["--steps-per-epoch", "3", "--meta-batch-size", "2", "--quiet"]


def _train(tmp_path, *extra, name="run"):
    """`metakeras train` into `tmp_path / name`; returns `(exit code, folder)`."""
    out = tmp_path / name
    argv = ["train", "--output-dir", str(out), *_TINY, *extra]
    return main(argv), out
