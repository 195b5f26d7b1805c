"""The settings of `metakeras train`: defaults, config files, resolution.

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
"""

import os

from metakeras._checks import is_choice, is_flag
from metakeras.cli import _checks, _data
from metakeras.cli._errors import CLIError
from metakeras.models import registry

LEARNERS = ("conv4", "mlp")
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop", "nadam", "adagrad")
COLOR_MODES = ("grayscale", "rgb")
QUANTIZE_MODES = ("int8", "int4", "float8")

# name: (default, check, description of valid values). `None` defaults are
# resolved from the dataset and algorithm by `resolve_config`.
FIELDS = {
    "dataset": ("digits", _data.DATASETS, "a dataset name"),
    "data_dir": (None, str, "a folder path"),
    "download": (False, bool, "true or false"),
    "image_size": (None, _checks.positive_int, "a positive integer"),
    "color_mode": ("rgb", COLOR_MODES, "a color mode"),
    "rotations": (None, bool, "true or false"),
    "algorithm": ("maml", registry.available(), "an algorithm"),
    "learner": (None, LEARNERS, "a learner"),
    "filters": (64, _checks.positive_int, "a positive integer"),
    "hidden": (None, _checks.positive_int, "a positive integer"),
    "ways": (5, _checks.positive_int, "a positive integer"),
    "shots": (None, _checks.positive_int, "a positive integer"),
    "queries": (None, _checks.positive_int, "a positive integer"),
    "meta_batch_size": (None, _checks.positive_int, "a positive integer"),
    # The algorithm settings; `None`: the algorithm's default for the task.
    **{s.name: (None, s.check, s.what) for s in registry.SETTINGS},
    "vectorize_tasks": (None, bool, "true or false"),
    "epochs": (10, _checks.positive_int, "a positive integer"),
    "steps_per_epoch": (100, _checks.positive_int, "a positive integer"),
    "optimizer": ("adam", OPTIMIZERS, "an optimizer"),
    "learning_rate": (1e-3, _checks.positive_number, "a positive number"),
    "seed": (0, _checks.non_negative_int, "an integer >= 0"),
    "backup_every": (None, _checks.positive_int, "a positive number of meta-batches"),
    "prune": (None, _checks.fraction, "a sparsity in [0, 1)"),
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
    data = _parse_file(path)
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


def _parse_file(path):
    """The contents of a TOML or YAML file, by its extension.

    Raises:
        CLIError: for another extension, a YAML file without PyYAML
            installed, or a syntax error.
    """
    extension = os.path.splitext(path)[1].lower()
    try:
        if extension == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib
            with open(path, "rb") as f:
                return tomllib.load(f)
        if extension in (".yaml", ".yml"):
            try:
                import yaml
            except ModuleNotFoundError:
                raise CLIError(
                    "YAML config files need PyYAML: pip install 'metakeras[yaml]' "
                    "(or use a .toml file).",
                    code=1,
                ) from None
            with open(path, encoding="utf-8") as f:
                return yaml.safe_load(f) or {}
        raise CLIError(
            f"config file {path!r} must end in .toml, .yaml or .yml; "
            f"received extension {extension or '(none)'!r}."
        )
    except CLIError:
        raise
    except Exception as error:  # tomllib/yaml syntax errors have no common base.
        raise CLIError(f"cannot parse config file {path!r}: {error}", code=2) from None


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
    """Raises a `CLIError` unless `value` is valid for the field `key`."""
    _, check, what = FIELDS[key]
    if isinstance(check, tuple):
        if not is_choice(value, check):
            raise CLIError(
                f"invalid {key} {value!r}; valid choices: "
                f"{', '.join(str(c) for c in check)}."
            )
    elif check is bool:
        if not is_flag(value):
            raise CLIError(f"{key} must be true or false; received {value!r}.")
    elif check is str:
        if not isinstance(value, str) or not value:
            raise CLIError(f"{key} must be {what}; received {value!r}.")
    elif not check(value):
        raise CLIError(f"{key} must be {what}; received {value!r}.")


def _fill_auto(config):
    """Replaces the `None` ("auto") values by the dataset's and algorithm's."""
    dataset = config["dataset"]
    algorithm = registry.get(config["algorithm"])
    classification = _data.is_classification(dataset)
    task = task_type(dataset)
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


def task_type(dataset):
    """The registry's task type of a dataset.

    Args:
        dataset: a name from `metakeras.cli._data.DATASETS`.

    Returns:
        `"classification"` or `"regression"`.
    """
    return "classification" if _data.is_classification(dataset) else "regression"


def default_value(key, config):
    """The value `key` takes when not given, for the configuration's algorithm.

    Args:
        key: a `FIELDS` name.
        config: a resolved configuration (its `algorithm` and `dataset`
            choose the algorithm settings' defaults).

    Returns:
        The default: the registry's for an algorithm setting, else the
        `FIELDS` default.
    """
    if key in {setting.name for setting in registry.SETTINGS}:
        algorithm = registry.get(config["algorithm"])
        return algorithm.resolve(task_type(config["dataset"]))[key]
    return FIELDS[key][0]
