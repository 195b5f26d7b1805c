"""`metakeras train`: meta-train a model from a configuration file and flags.

The configuration is resolved in three layers, each overriding the one
before: the defaults in `FIELDS`, a TOML or YAML file (`--config`), then the
command-line flags. Values left at `None` ("auto") are then filled in from
the dataset and algorithm (for example `conv4` for image datasets), and the
fully resolved configuration is written to `config.json` so a run can always
be reproduced and evaluated. The algorithms, their settings (the inner loop,
`per_step_bn_statistics`, `transductive_eval`, `zero_head`) and the settings'
defaults per algorithm and task type (an inner learning rate of 0.4 for
classification, as in the MAML paper's Omniglot runs, 0.01 for regression)
come from `metakeras.models.registry`: a setting added there is a field here
and a flag of `metakeras train`.

Outputs in `output_dir`: `config.json`, `model.keras`, `history.csv` (the
epoch logs, rewritten atomically each epoch), `training_curves.png` and `backup/` (Keras `BackupAndRestore`,
written at the end of every epoch, or every `backup_every` meta-batches).
The backup is kept after training: rerunning the same command resumes an
interrupted run exactly where the backup left it (`MetaModel.fit` restores
the weights, optimizer, sampler position and random states, so the result
equals an uninterrupted run), and rerunning it with more `epochs` continues
training. Delete the output folder to start over.

Callbacks: `zero_head = true` (`--zero-head`) adds
`metakeras.callbacks.ZeroHead()` (the registry's callback settings). `prune =
0.5` (`--prune 0.5`) adds
`metakeras.callbacks.MagnitudePruning(0.5)` and `quantize = "int8"`
(`--quantize int8`) adds `metakeras.callbacks.Quantization("int8")`, which
quantizes the weights when training ends.

Extension point for more callbacks: add a field to `FIELDS` (and its flag in
`metakeras/cli.py`), then build the callback from the configuration in
`_extra_callbacks`; programmatic callers can also pass ready-made callbacks
to `run_train(config, callbacks=[...])`.
"""

import json
import math
import os
import time

from metakeras import _cli_data
from metakeras._cli_data import CLIError
from metakeras._history_log import HistoryLog
from metakeras._io import atomic_path
from metakeras._progress import resolve_verbose
from metakeras.models import registry

LEARNERS = ("conv4", "mlp")
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop", "nadam", "adagrad")
COLOR_MODES = ("grayscale", "rgb")
QUANTIZE_MODES = ("int8", "int4", "float8")
# Fields whose change makes a backup in the output folder unusable.
_RESUME_FREE = (
    "epochs",
    "output_dir",
    "data_dir",
    "download",
    "verbose",
    "backup_every",
)


def _positive_int(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _non_negative_int(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _fraction(value):
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and 0 <= value < 1
    )


def _positive_number(value):
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


# name: (default, check, description of valid values). `None` defaults are
# resolved from the dataset and algorithm by `resolve_config`.
FIELDS = {
    "dataset": ("digits", _cli_data.DATASETS, "a dataset name"),
    "data_dir": (None, str, "a folder path"),
    "download": (False, bool, "true or false"),
    "image_size": (None, _positive_int, "a positive integer"),
    "color_mode": ("rgb", COLOR_MODES, "a color mode"),
    "rotations": (None, bool, "true or false"),
    "algorithm": ("maml", registry.available(), "an algorithm"),
    "learner": (None, LEARNERS, "a learner"),
    "filters": (64, _positive_int, "a positive integer"),
    "hidden": (None, _positive_int, "a positive integer"),
    "ways": (5, _positive_int, "a positive integer"),
    "shots": (None, _positive_int, "a positive integer"),
    "queries": (None, _positive_int, "a positive integer"),
    "meta_batch_size": (None, _positive_int, "a positive integer"),
    # The algorithm settings; `None`: the algorithm's default for the task.
    **{s.name: (None, s.check, s.what) for s in registry.SETTINGS},
    "vectorize_tasks": (None, bool, "true or false"),
    "epochs": (10, _positive_int, "a positive integer"),
    "steps_per_epoch": (100, _positive_int, "a positive integer"),
    "optimizer": ("adam", OPTIMIZERS, "an optimizer"),
    "learning_rate": (1e-3, _positive_number, "a positive number"),
    "seed": (0, _non_negative_int, "an integer >= 0"),
    "backup_every": (None, _positive_int, "a positive number of meta-batches"),
    "prune": (None, _fraction, "a sparsity in [0, 1)"),
    "quantize": (None, QUANTIZE_MODES, "a quantization mode"),
    "output_dir": ("metakeras_output", str, "a folder path"),
    "verbose": ("auto", ("auto", 0, 1, 2), "a Keras verbosity"),
}


def read_config_file(path):
    """Reads a TOML (`.toml`) or YAML (`.yaml`, `.yml`) configuration file.

    Keys are the `FIELDS` names; dashes are accepted for underscores
    (`meta-batch-size`), so a file can use the flags' spelling.

    Args:
        path: the file path.

    Returns:
        A dict of the file's settings, keys normalised to underscores.

    Raises:
        CLIError: if the file is missing, unreadable, of an unknown type, not
            a flat table, or names an unknown key (the valid keys are listed).
    """
    if not os.path.isfile(path):
        raise CLIError(f"config file {path!r} does not exist.", code=1)
    extension = os.path.splitext(path)[1].lower()
    try:
        if extension == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib
            with open(path, "rb") as f:
                data = tomllib.load(f)
        elif extension in (".yaml", ".yml"):
            try:
                import yaml
            except ModuleNotFoundError:
                raise CLIError(
                    "YAML config files need PyYAML: pip install 'metakeras[yaml]' "
                    "(or use a .toml file).",
                    code=1,
                ) from None
            with open(path, encoding="utf-8") as f:
                data = yaml.safe_load(f) or {}
        else:
            raise CLIError(
                f"config file {path!r} must end in .toml, .yaml or .yml; "
                f"received extension {extension or '(none)'!r}."
            )
    except CLIError:
        raise
    except Exception as error:  # tomllib/yaml syntax errors have no common base.
        raise CLIError(f"cannot parse config file {path!r}: {error}", code=2) from None
    if not isinstance(data, dict):
        raise CLIError(
            f"config file {path!r} must hold a table of settings; received "
            f"{type(data).__name__}."
        )
    settings = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if isinstance(value, dict):
            raise CLIError(
                f"config file {path!r}: {key!r} is a table, but settings are "
                f"flat keys; valid keys: {', '.join(FIELDS)}."
            )
        settings[name] = value
    return settings


def resolve_config(file_settings=None, overrides=None):
    """Merges defaults, file settings and flags, checks them, fills in `auto`.

    Args:
        file_settings: dict from `read_config_file`. Defaults to `None`.
        overrides: dict of the flags given on the command line. Defaults to
            `None`.

    Returns:
        The resolved configuration: every key of `FIELDS`, no `None` left
        except where `None` is meaningful (`data_dir`, `image_size`,
        `inner_batch_size`, the inner clipping norms, and the settings the
        algorithm does not take, such as ProtoNet's inner loop).

    Raises:
        CLIError: for an unknown key, an invalid value (echoed with the valid
            choices) or a combination that cannot work.
    """
    given = {}
    for source in (file_settings or {}, overrides or {}):
        for key, value in source.items():
            if key not in FIELDS:
                raise CLIError(
                    f"unknown setting {key!r}; valid settings: {', '.join(FIELDS)}."
                )
            given[key] = value
    for key, value in given.items():
        if value is None:
            continue
        _check_value(key, value)
    config = {key: spec[0] for key, spec in FIELDS.items()}
    config.update({k: v for k, v in given.items() if v is not None})
    _fill_auto(config)
    return config


def _check_value(key, value):
    _, check, what = FIELDS[key]
    if isinstance(check, tuple):
        if value not in check:
            raise CLIError(
                f"invalid {key} {value!r}; valid choices: "
                f"{', '.join(str(c) for c in check)}."
            )
    elif check is bool:
        if not isinstance(value, bool):
            raise CLIError(f"{key} must be true or false; received {value!r}.")
    elif check is str:
        if not isinstance(value, str) or not value:
            raise CLIError(f"{key} must be {what}; received {value!r}.")
    elif not check(value):
        raise CLIError(f"{key} must be {what}; received {value!r}.")


def _fill_auto(config):
    dataset = config["dataset"]
    algorithm = registry.get(config["algorithm"])
    classification = _cli_data.is_classification(dataset)
    task = _task(dataset)
    if config["learner"] is None:
        config["learner"] = "mlp" if dataset in ("digits", "sinusoid") else "conv4"
    if not classification:
        if task not in algorithm.tasks:
            raise CLIError(
                f"{algorithm.name} {algorithm.summary} and needs a classification "
                f"dataset; {dataset!r} is regression. Choose one of "
                f"{', '.join(registry.available(task))}."
            )
        if config["learner"] == "conv4":
            raise CLIError(
                "learner 'conv4' needs images; the sinusoid tasks have one input "
                "feature. Use --learner mlp."
            )
    if config["rotations"] is None:
        config["rotations"] = dataset == "omniglot"
    if config["hidden"] is None:
        config["hidden"] = 40 if not classification else 64
    if config["shots"] is None:
        config["shots"] = 1 if classification else 5
    if config["queries"] is None:
        config["queries"] = 15 if classification else 10
    if config["meta_batch_size"] is None:
        config["meta_batch_size"] = 4 if classification else 25
    settings = {s.name: config[s.name] for s in registry.SETTINGS}
    try:
        config.update(algorithm.resolve(task, **settings))
    except ValueError as error:
        raise CLIError(str(error)) from None


def _task(dataset):
    """The registry's task type of a dataset."""
    return "classification" if _cli_data.is_classification(dataset) else "regression"


# ----------------------------------------------------------------- building


def build_tasks(config, split, steps, seed, resample=True, meta_batch_size=None):
    """The task source (a `keras.utils.PyDataset`) of one split.

    Args:
        config: a resolved configuration.
        split: a split of the configured dataset (`"train"`, `"test"`, ...).
        steps: meta-batches per epoch.
        seed: the sampler's seed.
        resample: draw new episodes every epoch. Defaults to `True`.
        meta_batch_size: episodes per batch. Defaults to `None` (the
            configuration's).

    Returns:
        A `metakeras.tasks.TaskSampler` or `SinusoidTasks`.
    """
    from metakeras.tasks import SinusoidTasks, TaskSampler

    _cli_data.check_split(config["dataset"], split)
    batch = meta_batch_size or config["meta_batch_size"]
    if not _cli_data.is_classification(config["dataset"]):
        offset = 0 if split == "train" else _cli_data.SINUSOID_TEST_SEED_OFFSET
        return SinusoidTasks(
            shots=config["shots"],
            queries=config["queries"],
            meta_batch_size=batch,
            steps=steps,
            seed=seed + offset,
            resample=resample,
        )
    x, y, classes = _cli_data.classification_split(config, split)
    rotations = (0, 90, 180, 270) if config["rotations"] and split == "train" else (0,)
    return TaskSampler(
        x,
        y,
        ways=config["ways"],
        shots=config["shots"],
        queries=config["queries"],
        meta_batch_size=batch,
        steps=steps,
        classes=classes,
        seed=seed,
        resample=resample,
        rotations=rotations,
    )


def build_model(config, input_shape):
    """The compiled meta-learning model the configuration describes.

    Args:
        config: a resolved configuration.
        input_shape: one example's shape, without the batch axis.

    Returns:
        A compiled `metakeras.MetaModel`.
    """
    import keras

    classification = _cli_data.is_classification(config["dataset"])
    algorithm = registry.get(config["algorithm"])
    outputs = None if not algorithm.head else (config["ways"] if classification else 1)
    learner = _learner(config, tuple(input_shape), outputs)
    vectorize = config["vectorize_tasks"]
    if vectorize is None:
        # Small dense learners gain from vmap on the CPU too.
        vectorize = True if config["learner"] == "mlp" else "auto"
    model = algorithm.create(
        learner,
        _task(config["dataset"]),
        vectorize_tasks=vectorize,
        **{name: config[name] for name in algorithm.settings},
    )
    optimizer = keras.optimizers.get(
        {
            "class_name": config["optimizer"],
            "config": {"learning_rate": config["learning_rate"]},
        }
    )
    if classification:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])
    else:
        model.compile(optimizer=optimizer, loss="mse")
    return model


def _learner(config, input_shape, outputs):
    import keras

    from metakeras.models import conv4

    if config["learner"] == "conv4":
        if len(input_shape) != 3 or min(input_shape[1:]) < 16:
            raise CLIError(
                f"learner 'conv4' needs images of at least 16x16 (its four 2x2 "
                f"poolings halve the size four times); the {config['dataset']} "
                f"examples have shape {input_shape}. Use --learner mlp or "
                "--image-size 16 (or larger)."
            )
        return conv4(
            input_shape=input_shape, outputs=outputs, filters=config["filters"]
        )
    layers = [keras.Input(input_shape)]
    if len(input_shape) > 1:
        layers.append(keras.layers.Flatten())
    layers += [
        keras.layers.Dense(config["hidden"], activation="relu"),
        keras.layers.Dense(config["hidden"], activation="relu"),
    ]
    if outputs is not None:
        layers.append(keras.layers.Dense(outputs))
    return keras.Sequential(layers, name="mlp")


def _extra_callbacks(config):
    """Callbacks the configuration asks for beyond the standard ones.

    The extension point for model-changing callbacks such as pruning or
    quantization: read their settings from `config` (add the fields to
    `FIELDS` and the flags to `metakeras/cli.py`) and return the callbacks.

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


# ----------------------------------------------------------------- training


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
    import pandas as pd

    from metakeras import distributed
    from metakeras.plots import plot_history

    start = time.perf_counter()
    # Under torchrun: join the process group; rank 0 alone writes and logs.
    try:
        distributed.initialize()
    except (ValueError, RuntimeError) as error:
        raise CLIError(str(error), 1) from None
    main = distributed.rank() == 0
    if not main:
        log = _silent
    output_dir = config["output_dir"]
    paths = {
        "config": os.path.join(output_dir, "config.json"),
        "model": os.path.join(output_dir, "model.keras"),
        "history": os.path.join(output_dir, "history.csv"),
        "curves": os.path.join(output_dir, "training_curves.png"),
        "backup": os.path.join(output_dir, "backup"),
    }
    done = _completed_epochs(paths["backup"])
    if done is not None:
        _check_same_run(paths["config"], config)
    keras.utils.set_random_seed(config["seed"])
    try:
        tasks = build_tasks(
            config, "train", steps=config["steps_per_epoch"], seed=config["seed"]
        )
        example = tasks[0]["support_x"]
        model = build_model(config, example.shape[2:])
        # This process's share of every meta-batch (all of it in one process).
        shard = distributed.shard(tasks)
    except ValueError as error:
        raise CLIError(str(error)) from None
    try:
        if main:
            os.makedirs(output_dir, exist_ok=True)
    except OSError as error:
        raise CLIError(
            f"cannot create output folder {output_dir!r}: {error}", 1
        ) from None
    if main:
        with atomic_path(paths["config"]) as tmp, open(tmp, "w") as f:
            json.dump(config, f, indent=2)
    if done is not None:
        # The backup restores the sampler's position, the weights and the
        # random states (`MetaModel.fit`); the log keeps only the epochs the
        # backup covers, so a redone epoch is not logged twice.
        if main:
            _truncate_history(paths["history"], done)
        log(f"Resuming from {paths['backup']}: {done} epoch(s) already done.")
    try:
        extra = _extra_callbacks(config)
    except ValueError as error:
        raise CLIError(str(error)) from None
    standard = [
        # Every process restores from the backup; only rank 0 writes it.
        *extra,
        HistoryLog(paths["history"], append=bool(done)),
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
    try:
        history = model.fit(
            shard,
            epochs=config["epochs"],
            callbacks=standard + list(callbacks or []),
            verbose=resolve_verbose(config["verbose"]) if main else 0,
        )
    except FloatingPointError as error:
        raise CLIError(
            f"training stopped: {error} The backup in {paths['backup']!r} holds "
            "the last good state.",
            1,
        ) from None
    except ValueError as error:  # e.g. a damaged backup folder
        raise CLIError(str(error), 1) from None
    if not main:
        return {
            "paths": {},
            "epochs_run": len(history.epoch),
            "history": None,
            "seconds": time.perf_counter() - start,
        }
    with atomic_path(paths["model"]) as tmp:
        model.save(tmp)
    frame = pd.read_csv(paths["history"]) if os.path.exists(paths["history"]) else None
    if frame is not None and len(frame):
        logs = {c: frame[c].tolist() for c in frame.columns if c != "epoch"}
        plot_history(logs, paths["curves"])
    else:
        paths.pop("curves")
    return {
        "paths": paths,
        "epochs_run": len(history.epoch),
        "history": frame,
        "seconds": time.perf_counter() - start,
    }


def _silent(*args, **kwargs):
    """A `log` that drops its lines (processes other than rank 0)."""


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
    path = os.path.join(backup_dir, "training_metadata.json")
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            return int(json.load(f)["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _check_same_run(config_path, config):
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
        and (key in previous or value != _default(key, config))
    ]
    if changed:
        raise CLIError(
            f"output folder {config['output_dir']!r} holds a run with a different "
            f"configuration ({'; '.join(changed)}), so it cannot be resumed. Use "
            "another --output-dir, or delete that folder to start over."
        )


def _default(key, config):
    """The value `key` takes when not given, for the configuration's algorithm."""
    if key in {setting.name for setting in registry.SETTINGS}:
        algorithm = registry.get(config["algorithm"])
        return algorithm.resolve(_task(config["dataset"]))[key]
    return FIELDS[key][0]
