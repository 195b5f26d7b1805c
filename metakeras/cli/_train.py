"""`metakeras train`: meta-train a model from a configuration file and flags.

The configuration comes from `_config.py` (defaults, then `--config`, then
the flags; "auto" values filled in from the dataset and algorithm), the task
source and model from `_build.py`.

Outputs in `output_dir`: `config.json`, `model.keras`, `history.csv` (the
epoch logs, rewritten atomically each epoch), `training_curves.png` and
`backup/` (Keras `BackupAndRestore`, written at the end of every epoch, or
every `backup_every` meta-batches). The backup is kept after training:
rerunning the same command resumes an interrupted run exactly where the
backup left it (`MetaModel.fit` restores the weights, optimizer, sampler
position and random states, so the result equals an uninterrupted run), and
rerunning it with more `epochs` continues training. Delete the output folder
to start over.

Callbacks: `zero_head = true` (`--zero-head`) adds
`metakeras.callbacks.ZeroHead()` (the registry's callback settings). `prune =
0.5` (`--prune 0.5`) adds
`metakeras.callbacks.MagnitudePruning(0.5)` and `quantize = "int8"`
(`--quantize int8`) adds `metakeras.callbacks.Quantization("int8")`, which
quantizes the weights when training ends.

Extension point for more callbacks: add a field to `FIELDS` (`_config.py`)
and its flag (`_parser.py`), then build the callback from the configuration
in `_extra_callbacks`; programmatic callers can also pass ready-made
callbacks to `run_train(config, callbacks=[...])`.
"""

import builtins
import json
import os
import sys
import time

from metakeras._history_log import HistoryLog
from metakeras._io import atomic_path
from metakeras._progress import resolve_verbose
from metakeras.cli._build import build_model, build_tasks
from metakeras.cli._config import default_value, read_config_file, resolve_config
from metakeras.cli._errors import CLIError
from metakeras.models import registry

# Fields whose change makes a backup in the output folder unusable.
_RESUME_FREE = (
    "epochs",
    "output_dir",
    "data_dir",
    "download",
    "verbose",
    "backup_every",
)


def command(args):
    """Runs `metakeras train` with the parsed arguments.

    Args:
        args: the `argparse.Namespace` of the `train` subcommand.

    Returns:
        The exit code: `0`, or `130` when interrupted.

    Raises:
        CLIError: for invalid settings, a missing dataset or a failure while
            training.
    """
    from metakeras import distributed

    # Under torchrun only rank 0 prints; the others train silently.
    print = builtins.print if distributed.rank() == 0 else _silent

    flags = vars(args).copy()
    flags.pop("command")
    config_path = flags.pop("config", None)
    if flags.pop("quiet", False):
        flags["verbose"] = 0
    settings = read_config_file(config_path) if config_path else {}
    config = resolve_config(settings, flags)
    print(_headline(config))
    try:
        result = run_train(config)
    except KeyboardInterrupt:
        print(
            "\nmetakeras train: interrupted. Rerun the same command to resume "
            "from the last completed epoch.",
            file=sys.stderr,
        )
        return 130
    if result["epochs_run"] == 0:
        print(
            f"Nothing to train: {config['epochs']} epoch(s) were already done "
            "(raise --epochs to train further)."
        )
    for name, path in result["paths"].items():
        print(f"{name:>8}: {path}")
    print(f"wall time: {result['seconds']:.0f} s")
    return 0


def _headline(config):
    """What is trained, on what, for how long, and where it goes: one line."""
    return (
        f"metakeras train: {config['algorithm']} on {config['dataset']} "
        + (
            f"({config['ways']}-way {config['shots']}-shot)"
            if config["dataset"] != "sinusoid"
            else f"({config['shots']} shots)"
        )
        + f", {config['epochs']} epochs of {config['steps_per_epoch']} "
        f"meta-batches -> {config['output_dir']}"
    )


def _silent(*args, **kwargs):
    """A `print` or `log` that drops its lines (ranks other than 0)."""


def run_train(config, callbacks=None, log=print):
    """Meta-trains the configured model and writes its outputs.

    Args:
        config: a resolved configuration (`resolve_config`).
        callbacks: extra `keras.callbacks.Callback`s added after the standard
            ones. Defaults to `None`.
        log: where progress lines go. Defaults to `print`.

    Under `torchrun` every process trains its share of each meta-batch
    (`metakeras.distributed`); only rank 0 logs and writes files.

    Returns:
        A dict with `paths` (the files written), `epochs_run` (this call) and
        `history` (the whole `history.csv` as a `pandas.DataFrame`). On ranks
        other than 0, `paths` is empty and `history` is `None`.

    Raises:
        CLIError: for a missing dataset, an output folder holding a run with a
            different configuration, or invalid settings found while building.
    """
    import keras

    from metakeras import distributed

    start = time.perf_counter()
    # Under torchrun: join the process group; rank 0 alone writes and logs.
    try:
        distributed.initialize()
    except (ValueError, RuntimeError) as error:
        raise CLIError(str(error), 1) from None
    main = distributed.rank() == 0
    if not main:
        log = _silent
    paths = _output_paths(config["output_dir"])
    done = _completed_epochs(paths["backup"])
    if done is not None:
        _check_same_run(paths["config"], config)
    keras.utils.set_random_seed(config["seed"])
    model, shard = _build(config)
    if main:
        _write_config(config, paths["config"])
    if done is not None:
        # The backup restores the sampler's position, the weights and the
        # random states (`MetaModel.fit`); the log keeps only the epochs the
        # backup covers, so a redone epoch is not logged twice.
        if main:
            _truncate_history(paths["history"], done)
        log(f"Resuming from {paths['backup']}: {done} epoch(s) already done.")
    standard = _standard_callbacks(config, paths, resumed=bool(done), main=main)
    callbacks = standard + list(callbacks or [])
    history = _fit(model, shard, config, callbacks, main, backup=paths["backup"])
    if not main:
        return _result({}, history, None, start)
    return _result(paths, history, _save_outputs(model, paths), start)


def _output_paths(output_dir):
    """The files and folders `run_train` writes, by name."""
    return {
        "config": os.path.join(output_dir, "config.json"),
        "model": os.path.join(output_dir, "model.keras"),
        "history": os.path.join(output_dir, "history.csv"),
        "curves": os.path.join(output_dir, "training_curves.png"),
        "backup": os.path.join(output_dir, "backup"),
    }


def _build(config):
    """The model and this process's share of the training tasks.

    Returns:
        A tuple `(model, shard)`: the compiled model and the training task
        source of this process (all of it in one process).
    """
    from metakeras import distributed

    try:
        tasks = build_tasks(
            config, "train", steps=config["steps_per_epoch"], seed=config["seed"]
        )
        example = tasks[0]["support_x"]
        model = build_model(config, example.shape[2:])
        return model, distributed.shard(tasks)
    except ValueError as error:
        raise CLIError(str(error)) from None


def _write_config(config, path):
    """Creates the output folder and writes the resolved configuration."""
    output_dir = config["output_dir"]
    try:
        os.makedirs(output_dir, exist_ok=True)
    except OSError as error:
        raise CLIError(
            f"cannot create output folder {output_dir!r}: {error}", 1
        ) from None
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(config, f, indent=2)


def _standard_callbacks(config, paths, resumed, main):
    """The configured callbacks, the history log, the backup and NaN checks.

    Args:
        config: a resolved configuration.
        paths: from `_output_paths`.
        resumed: whether a backup of earlier epochs is restored (the log is
            then appended to).
        main: whether this is rank 0 (the only one writing the log).

    Returns:
        A list of `keras.callbacks.Callback`.
    """
    import keras

    from metakeras import distributed

    try:
        extra = _extra_callbacks(config)
    except ValueError as error:
        raise CLIError(str(error)) from None
    standard = [
        # Every process restores from the backup; only rank 0 writes it.
        *extra,
        HistoryLog(paths["history"], append=resumed),
        # After the logger: an epoch's row is written before its backup.
        distributed.BackupAndRestore(
            paths["backup"],
            save_freq=config.get("backup_every") or "epoch",
            delete_checkpoint=False,
        ),
        keras.callbacks.TerminateOnNaN(),
    ]
    if not main:
        standard = [c for c in standard if not isinstance(c, HistoryLog)]
    return standard


def _extra_callbacks(config):
    """Callbacks the configuration asks for beyond the standard ones.

    The extension point for model-changing callbacks such as pruning or
    quantization: read their settings from `config` (add the fields to
    `FIELDS` in `_config.py` and the flags to `_parser.py`) and return the
    callbacks.

    Args:
        config: a resolved configuration.

    Returns:
        A list of `keras.callbacks.Callback`, run before the history log so
        that the values they log (such as `sparsity`) reach `history.csv`.
    """
    # The registry's callback settings (`zero_head`) first.
    callbacks = registry.get(config["algorithm"]).callbacks(**config)
    if config.get("prune") is not None:
        from metakeras.callbacks import MagnitudePruning

        callbacks.append(MagnitudePruning(config["prune"]))
    if config.get("quantize") is not None:
        from metakeras.callbacks import Quantization

        callbacks.append(Quantization(config["quantize"]))
    return callbacks


def _fit(model, shard, config, callbacks, main, backup):
    """`model.fit` on the shard, its failures as `CLIError`s.

    Args:
        model: the compiled model.
        shard: this process's training task source.
        config: a resolved configuration.
        callbacks: all the callbacks of the run.
        main: whether this is rank 0 (the only one showing progress).
        backup: the backup folder, named when training stops on NaNs.

    Returns:
        The `keras.callbacks.History` of this call.
    """
    try:
        return model.fit(
            shard,
            epochs=config["epochs"],
            callbacks=callbacks,
            verbose=resolve_verbose(config["verbose"]) if main else 0,
        )
    except FloatingPointError as error:
        raise CLIError(
            f"training stopped: {error} The backup in {backup!r} holds "
            "the last good state.",
            1,
        ) from None
    except ValueError as error:  # e.g. a damaged backup folder
        raise CLIError(str(error), 1) from None


def _save_outputs(model, paths):
    """Saves the model and plots the training curves (rank 0).

    Drops `curves` from `paths` when the log holds no epoch to plot.

    Returns:
        The whole `history.csv` as a `pandas.DataFrame`, or `None` if there
        is none.
    """
    import pandas as pd

    from metakeras.plots import plot_history

    with atomic_path(paths["model"]) as tmp:
        model.save(tmp)
    frame = pd.read_csv(paths["history"]) if os.path.exists(paths["history"]) else None
    if frame is not None and len(frame):
        logs = {c: frame[c].tolist() for c in frame.columns if c != "epoch"}
        plot_history(logs, paths["curves"])
    else:
        paths.pop("curves")
    return frame


def _result(paths, history, frame, start):
    """The dict `run_train` returns."""
    return {
        "paths": paths,
        "epochs_run": len(history.epoch),
        "history": frame,
        "seconds": time.perf_counter() - start,
    }


# ------------------------------------------------------------------ resuming


def _truncate_history(path, epochs):
    """Keeps the header and the rows of the first `epochs` epochs of a log.

    A run killed after the history log wrote an epoch's row but before the
    backup covered that epoch redoes the epoch; its row is dropped here so
    it is not logged twice. A line cut short (in a log written by an older
    version, with `CSVLogger`) is dropped too.
    """
    if not os.path.exists(path):
        return
    with open(path, newline="") as f:
        lines = f.read().splitlines()
    if not lines:
        return
    kept = [lines[0]]
    width = lines[0].count(",")
    for line in lines[1:]:
        head = line.split(",", 1)[0]
        if head.isdigit() and int(head) < epochs and line.count(",") == width:
            kept.append(line)
    if len(kept) != len(lines):
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
            f.write("\n".join(kept) + "\n")


def _completed_epochs(backup_dir):
    """The epochs a backup covers, or `None` without a readable backup."""
    path = os.path.join(backup_dir, "training_metadata.json")
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            return int(json.load(f)["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _check_same_run(config_path, config):
    """Raises a `CLIError` if the folder's run has another configuration."""
    if not os.path.exists(config_path):
        return
    try:
        with open(config_path) as f:
            previous = json.load(f)
    except (OSError, ValueError):
        return
    changed = [
        f"{key}: {previous.get(key)!r} -> {value!r}"
        for key, value in config.items()
        if key not in _RESUME_FREE
        and previous.get(key) != value
        # A setting added since that run: it ran with the default.
        and (key in previous or value != default_value(key, config))
    ]
    if changed:
        raise CLIError(
            f"output folder {config['output_dir']!r} holds a run with a different "
            f"configuration ({'; '.join(changed)}), so it cannot be resumed. Use "
            "another --output-dir, or delete that folder to start over."
        )
