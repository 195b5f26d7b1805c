"""The argument parser of the `metakeras` command.

One subparser per subcommand (`demo`, `train`, `evaluate`, `datasets`). The
flags of the algorithm settings (`--inner-steps` to `--zero-head`) are not
written out here: `_add_algorithm_settings` makes one per setting of
`metakeras.models.registry`, with its type, and its help and defaults as the
registry states them. Flag values are checked by the argparse types of
`_checks.py`; combinations are checked later, by `resolve_config`.
"""

import argparse
import sys

from metakeras.cli._checks import (
    parse_bool,
    parse_fraction,
    parse_inner_optimizer,
    parse_non_negative_int,
    parse_non_negative_number,
    parse_positive_int,
    parse_positive_number,
)
from metakeras.cli._config import LEARNERS, OPTIMIZERS, QUANTIZE_MODES
from metakeras.cli._data import DATASETS
from metakeras.models import registry

_DATASETS_HELP = (
    "omniglot (train: background alphabets, test: evaluation alphabets), "
    "digits (scikit-learn 8x8; train: 5 digits, test: the other 5, from "
    "split_classes(fractions=(0.5, 0.5), seed=0)), sinusoid (MAML regression), "
    "image-folder (--data-dir with one sub-folder per class; 60/20/20%% class "
    "split), mini-imagenet (64/16/20 classes from local files)"
)


def build_parser():
    """Returns the argument parser of the `metakeras` command.

    Returns:
        An `argparse.ArgumentParser` with the subcommands `demo`, `train`,
        `evaluate` and `datasets`.
    """
    parser = argparse.ArgumentParser(
        prog="metakeras",
        description="Meta-learning with the Keras 3 API on the PyTorch backend.",
    )
    parser.add_argument(
        "--version", action="version", version=f"metakeras {_version()}"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    _add_demo(commands)
    _add_train(commands)
    _add_evaluate(commands)
    _add_datasets(commands)
    return parser


def _add_demo(commands):
    demo = commands.add_parser(
        "demo",
        help="meta-train MAML on sinusoid regression (no network needed)",
        description=(
            "Meta-trains MAML (1-40-40-1 ReLU) on sinusoid regression tasks, "
            "then prints the post-adaptation MSE on held-out tasks for 5 and 10 "
            "shots (mean and 95% CI) beside a baseline trained on the pooled "
            "tasks and fine-tuned the same way, and writes a plot of adapted tasks."
        ),
    )
    demo.add_argument(
        "--seed",
        type=parse_non_negative_int,
        default=0,
        help="random seed (default: 0)",
    )
    demo.add_argument(
        "--output-dir",
        default="metakeras_demo",
        help="directory for the CSV tables, model and plot (default: metakeras_demo)",
    )
    demo.add_argument(
        "--epochs",
        type=parse_positive_int,
        default=6,
        help="meta-training epochs (default: 6)",
    )
    demo.add_argument(
        "--steps-per-epoch",
        type=parse_positive_int,
        default=1000,
        help="meta-batches of 25 tasks per epoch (default: 1000)",
    )
    demo.add_argument(
        "--eval-tasks",
        type=parse_positive_int,
        default=600,
        help="held-out tasks (default: 600)",
    )
    demo.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_train(commands):
    train = commands.add_parser(
        "train",
        help="meta-train a model from a TOML/YAML config file and/or flags",
        description=(
            "Meta-trains a model and writes config.json (the full resolved "
            "configuration), model.keras, history.csv and training_curves.png "
            "to --output-dir. Settings come from the defaults, then --config, "
            "then the flags. Rerunning the same command resumes an interrupted "
            "run exactly where its last backup left it (Keras BackupAndRestore, "
            "kept in <output-dir>/backup; every epoch, or every N meta-batches "
            "with --backup-every N); with a larger --epochs it trains further."
        ),
        argument_default=argparse.SUPPRESS,
    )
    train.add_argument(
        "--config", help="a .toml or .yaml file; keys are the option names below"
    )
    _add_train_data(train.add_argument_group("data"))
    _add_train_model(train.add_argument_group("model"))
    _add_algorithm_settings(
        train.add_argument_group(
            f"algorithm settings (metakeras.models.registry; {_not_taken()})"
        )
    )
    fit = train.add_argument_group("training")
    _add_train_fit(fit)
    _add_train_compression(
        train.add_argument_group("compression (metakeras.callbacks)")
    )
    fit.add_argument(
        "--output-dir", help="folder for all outputs (default: metakeras_output)"
    )
    fit.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_train_data(data):
    data.add_argument(
        "--dataset",
        choices=DATASETS,
        metavar="NAME",
        help=f"one of: {', '.join(DATASETS)} (default: digits). {_DATASETS_HELP}",
    )
    data.add_argument("--data-dir", help="folder holding the dataset's files")
    data.add_argument(
        "--download",
        action="store_true",
        help="download Omniglot into ~/.keras/datasets if it is not found",
    )
    data.add_argument(
        "--image-size", type=parse_positive_int, help="resize images to this side"
    )
    data.add_argument(
        "--color-mode",
        choices=("grayscale", "rgb"),
        help="image-folder colours (default: rgb)",
    )
    data.add_argument(
        "--rotations",
        type=parse_bool,
        metavar="BOOL",
        help="add rotated copies of training classes (default: true for omniglot)",
    )
    data.add_argument("--ways", type=parse_positive_int, help="classes per episode (5)")
    data.add_argument(
        "--shots",
        type=parse_positive_int,
        help="support examples per class (1; sinusoid: 5 points)",
    )
    data.add_argument(
        "--queries",
        type=parse_positive_int,
        help="query examples per class (15; sinusoid: 10 points)",
    )
    data.add_argument(
        "--meta-batch-size",
        type=parse_positive_int,
        help="episodes per meta-batch (4; sinusoid: 25)",
    )


def _add_train_model(model):
    algorithms = registry.available()
    model.add_argument(
        "--algorithm",
        choices=algorithms,
        metavar="NAME",
        help=f"one of: {', '.join(algorithms)} (default: maml)",
    )
    model.add_argument(
        "--learner",
        choices=LEARNERS,
        help="conv4 or mlp (default: mlp for digits and sinusoid, else conv4)",
    )
    model.add_argument(
        "--filters", type=parse_positive_int, help="conv4 channels (default: 64)"
    )
    model.add_argument(
        "--hidden",
        type=parse_positive_int,
        help="mlp units per hidden layer (default: 64; sinusoid: 40)",
    )
    model.add_argument(
        "--vectorize-tasks",
        type=parse_bool,
        metavar="BOOL",
        help="run the tasks of a meta-batch under torch.func.vmap "
        "(default: true for mlp, else chosen by device: true on GPUs)",
    )


# Flag types and metavars of the registry's setting kinds.
_SETTING_TYPES = {
    "count": (parse_non_negative_int, "N"),
    "size": (parse_positive_int, "N"),
    "rate": (parse_positive_number, "X"),
    "damping": (parse_non_negative_number, "X"),
    "flag": (parse_bool, "BOOL"),
    "optimizer": (parse_inner_optimizer, "NAME"),
}


def _not_taken():
    """Which algorithms take only some of the settings, as a phrase."""
    notes = []
    for name in registry.available():
        takes = registry.get(name).settings
        flags = [s.flag for s in registry.SETTINGS if s.name in takes]
        others = [s.flag for s in registry.SETTINGS if s.name not in takes]
        if others:
            notes.append(
                f"{name} takes only {', '.join(flags)}"
                if len(flags) < len(others)
                else f"{name} takes all but {', '.join(others)}"
            )
    return "; ".join(notes) or "every algorithm takes them all"


def _add_algorithm_settings(group, settings=None, default=None):
    """One flag per setting of `metakeras.models.registry`.

    A true-or-false setting may be given alone (`--zero-head`) or with a
    value (`--zero-head false`, to override a config file).

    Args:
        group: the argparse group to add them to.
        settings: setting names to add. Defaults to `None` (all).
        default: the help's default text. Defaults to `None` (the
            registry's defaults).
    """
    for setting in registry.SETTINGS:
        if settings is not None and setting.name not in settings:
            continue
        convert, metavar = _SETTING_TYPES[setting.kind]
        kwargs = {"type": convert, "metavar": metavar}
        if setting.kind == "flag":
            kwargs.update(nargs="?", const=True)
        group.add_argument(
            setting.flag,
            help=f"{setting.help} (default: {default or _default_text(setting)})",
            **kwargs,
        )


def _default_text(setting):
    """The registry's defaults of a setting, as one phrase: `"1; reptile: 5"`."""
    texts = {}
    for name in registry.available():
        algorithm = registry.get(name)
        if setting.name not in algorithm.settings:
            continue
        values = {t: algorithm.default(setting.name, t) for t in algorithm.tasks}
        if len(set(values.values())) > 1:
            text = ", ".join(
                f"{_value_text(setting, v)} for {task}" for task, v in values.items()
            )
        else:
            text = _value_text(setting, next(iter(values.values())))
        texts.setdefault(text, []).append(name)
    common = max(texts, key=lambda text: len(texts[text]))
    others = [f"{', '.join(n)}: {t}" for t, n in texts.items() if t != common]
    return "; ".join([common, *others])


def _value_text(setting, value):
    """A setting's value as the help shows it: `none`, `true`, `0.4`."""
    if value is None:
        return setting.none or "none"
    return str(value).lower() if isinstance(value, bool) else str(value)


def _add_train_fit(fit):
    fit.add_argument(
        "--epochs",
        type=parse_positive_int,
        help="total epochs, resumed ones included (10)",
    )
    fit.add_argument(
        "--steps-per-epoch",
        type=parse_positive_int,
        help="meta-batches per epoch (100)",
    )
    fit.add_argument(
        "--optimizer",
        choices=OPTIMIZERS,
        metavar="NAME",
        help=f"outer optimizer: {', '.join(OPTIMIZERS)} (default: adam)",
    )
    fit.add_argument(
        "--learning-rate",
        type=parse_positive_number,
        help="outer learning rate (default: 0.001)",
    )
    fit.add_argument(
        "--seed", type=parse_non_negative_int, help="random seed (default: 0)"
    )
    fit.add_argument(
        "--backup-every",
        type=parse_positive_int,
        metavar="N",
        help="back up every N meta-batches, so a killed run loses at most N "
        "(default: at the end of every epoch)",
    )


def _add_train_compression(compression):
    compression.add_argument(
        "--prune",
        type=parse_fraction,
        metavar="SPARSITY",
        help="prune this fraction of the smallest weights during meta-training "
        "(MagnitudePruning; pruned weights stay zero in the inner loop too)",
    )
    compression.add_argument(
        "--quantize",
        choices=QUANTIZE_MODES,
        help="quantize the weights when training ends: int8, int4 or float8 "
        "(Quantization)",
    )


def _add_evaluate(commands):
    evaluate = commands.add_parser(
        "evaluate",
        help="evaluate a saved model on test episodes (mean and 95%% CI)",
        description=(
            "Adapts a saved model to each of --episodes episodes of a dataset "
            "split and scores its query predictions; prints the summary table "
            "and writes summary.csv, per_episode.csv and plots. The dataset and "
            "episode shape default to the training run's config.json beside "
            "the model."
        ),
        argument_default=argparse.SUPPRESS,
    )
    evaluate.add_argument("model", help="the .keras file (from metakeras train)")
    evaluate.add_argument(
        "--dataset",
        choices=DATASETS,
        metavar="NAME",
        help=f"one of: {', '.join(DATASETS)} (default: the training run's)",
    )
    evaluate.add_argument("--data-dir", help="folder holding the dataset's files")
    evaluate.add_argument(
        "--download", action="store_true", help="download Omniglot if not found"
    )
    evaluate.add_argument(
        "--image-size", type=parse_positive_int, help="resize images to this side"
    )
    evaluate.add_argument(
        "--split", help="train, val or test, as the dataset has them (default: test)"
    )
    evaluate.add_argument(
        "--episodes", type=parse_positive_int, help="episodes to score (default: 600)"
    )
    evaluate.add_argument("--ways", type=parse_positive_int, help="classes per episode")
    evaluate.add_argument(
        "--shots", type=parse_positive_int, help="support examples per class"
    )
    evaluate.add_argument(
        "--queries", type=parse_positive_int, help="query examples per class"
    )
    evaluate.add_argument(
        "--inner-steps",
        dest="steps",
        type=parse_non_negative_int,
        help="inner gradient steps (default: 0..the model's own, as a curve)",
    )
    evaluate.add_argument(
        "--steps",
        dest="steps",
        type=parse_non_negative_int,
        action=_Renamed,
        new_name="--inner-steps",
        help="deprecated name of --inner-steps",
    )
    evaluate.add_argument(
        "--batch-size", type=parse_positive_int, help="episodes adapted together (32)"
    )
    evaluate.add_argument(
        "--seed", type=parse_non_negative_int, help="episode seed (default: 0)"
    )
    _add_algorithm_settings(
        evaluate, settings=("transductive_eval",), default="the model's own"
    )
    evaluate.add_argument(
        "--output-dir",
        help="folder for the CSV and plots (default: <model dir>/evaluation)",
    )
    evaluate.add_argument("--quiet", action="store_true", help="no progress bar")


class _Renamed(argparse.Action):
    """A flag kept under its old name: stores its value, warns on stderr."""

    def __init__(self, option_strings, dest, new_name, **kwargs):
        super().__init__(option_strings, dest, **kwargs)
        self.new_name = new_name

    def __call__(self, parser, namespace, values, option_string=None):
        print(
            f"{parser.prog}: warning: {option_string} is deprecated; use "
            f"{self.new_name} (in metakeras `steps` counts batches, as "
            "--steps-per-epoch does).",
            file=sys.stderr,
        )
        setattr(namespace, self.dest, values)


def _add_datasets(commands):
    datasets = commands.add_parser(
        "datasets",
        help="list the known datasets and whether each is on this machine",
        description=(
            "Lists the datasets train and evaluate know, their splits, and "
            "where each was found: --data-dir, $METAKERAS_DATA, or the Keras "
            "cache (~/.keras/datasets)."
        ),
    )
    datasets.add_argument(
        "--data-dir", default=None, help="also look in this folder (and DIR/<name>)"
    )


def _version():
    """The installed metakeras version, for `--version`."""
    from metakeras import __version__

    return __version__
