"""The `metakeras` command line."""

import argparse
import builtins
import os
import sys


def _number(convert, valid, expected):
    """An argparse type: `convert(text)`, accepted when `valid(value)`."""

    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not valid(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


_positive_int = _number(int, lambda v: v >= 1, "a positive integer")
_non_negative_int = _number(int, lambda v: v >= 0, "an integer >= 0")
_positive_float = _number(float, lambda v: 0 < v < float("inf"), "a positive number")
_fraction = _number(float, lambda v: 0 <= v < 1, "a number in [0, 1)")


def _boolean(text):
    lowered = text.lower()
    if lowered in ("true", "yes", "1", "on"):
        return True
    if lowered in ("false", "no", "0", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


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
        "--seed", type=_non_negative_int, default=0, help="random seed (default: 0)"
    )
    demo.add_argument(
        "--output-dir",
        default="metakeras_demo",
        help="directory for the CSV tables, model and plot (default: metakeras_demo)",
    )
    demo.add_argument(
        "--epochs",
        type=_positive_int,
        default=6,
        help="meta-training epochs (default: 6)",
    )
    demo.add_argument(
        "--steps-per-epoch",
        type=_positive_int,
        default=1000,
        help="meta-batches of 25 tasks per epoch (default: 1000)",
    )
    demo.add_argument(
        "--eval-tasks",
        type=_positive_int,
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
    from metakeras._cli_data import DATASETS

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
        "--image-size", type=_positive_int, help="resize images to this side"
    )
    data.add_argument(
        "--color-mode",
        choices=("grayscale", "rgb"),
        help="image-folder colours (default: rgb)",
    )
    data.add_argument(
        "--rotations",
        type=_boolean,
        metavar="BOOL",
        help="add rotated copies of training classes (default: true for omniglot)",
    )
    data.add_argument("--ways", type=_positive_int, help="classes per episode (5)")
    data.add_argument(
        "--shots",
        type=_positive_int,
        help="support examples per class (1; sinusoid: 5 points)",
    )
    data.add_argument(
        "--queries",
        type=_positive_int,
        help="query examples per class (15; sinusoid: 10 points)",
    )
    data.add_argument(
        "--meta-batch-size",
        type=_positive_int,
        help="episodes per meta-batch (4; sinusoid: 25)",
    )


def _add_train_model(model):
    from metakeras._cli_train import LEARNERS
    from metakeras.models import registry

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
        "--filters", type=_positive_int, help="conv4 channels (default: 64)"
    )
    model.add_argument(
        "--hidden",
        type=_positive_int,
        help="mlp units per hidden layer (default: 64; sinusoid: 40)",
    )
    model.add_argument(
        "--vectorize-tasks",
        type=_boolean,
        metavar="BOOL",
        help="run the tasks of a meta-batch under torch.func.vmap "
        "(default: true for mlp, else chosen by device: true on GPUs)",
    )


# Flag types and metavars of the registry's setting kinds.
_SETTING_TYPES = {
    "count": (_non_negative_int, "N"),
    "size": (_positive_int, "N"),
    "rate": (_positive_float, "X"),
    "flag": (_boolean, "BOOL"),
}


def _not_taken():
    """Which algorithms take only some of the settings, as a phrase."""
    from metakeras.models import registry

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
    from metakeras.models import registry

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
    from metakeras.models import registry

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
    if value is None:
        return setting.none or "none"
    return str(value).lower() if isinstance(value, bool) else str(value)


def _add_train_fit(fit):
    from metakeras._cli_train import OPTIMIZERS

    fit.add_argument(
        "--epochs", type=_positive_int, help="total epochs, resumed ones included (10)"
    )
    fit.add_argument(
        "--steps-per-epoch", type=_positive_int, help="meta-batches per epoch (100)"
    )
    fit.add_argument(
        "--optimizer",
        choices=OPTIMIZERS,
        metavar="NAME",
        help=f"outer optimizer: {', '.join(OPTIMIZERS)} (default: adam)",
    )
    fit.add_argument(
        "--learning-rate",
        type=_positive_float,
        help="outer learning rate (default: 0.001)",
    )
    fit.add_argument("--seed", type=_non_negative_int, help="random seed (default: 0)")
    fit.add_argument(
        "--backup-every",
        type=_positive_int,
        metavar="N",
        help="back up every N meta-batches, so a killed run loses at most N "
        "(default: at the end of every epoch)",
    )


def _add_train_compression(compression):
    from metakeras._cli_train import QUANTIZE_MODES

    compression.add_argument(
        "--prune",
        type=_fraction,
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
    from metakeras._cli_data import DATASETS

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
        "--image-size", type=_positive_int, help="resize images to this side"
    )
    evaluate.add_argument(
        "--split", help="train, val or test, as the dataset has them (default: test)"
    )
    evaluate.add_argument(
        "--episodes", type=_positive_int, help="episodes to score (default: 600)"
    )
    evaluate.add_argument("--ways", type=_positive_int, help="classes per episode")
    evaluate.add_argument(
        "--shots", type=_positive_int, help="support examples per class"
    )
    evaluate.add_argument(
        "--queries", type=_positive_int, help="query examples per class"
    )
    evaluate.add_argument(
        "--steps",
        type=_non_negative_int,
        help="inner steps (default: 0..the model's own, as a curve)",
    )
    evaluate.add_argument(
        "--batch-size", type=_positive_int, help="episodes adapted together (32)"
    )
    evaluate.add_argument(
        "--seed", type=_non_negative_int, help="episode seed (default: 0)"
    )
    _add_algorithm_settings(
        evaluate, settings=("transductive_eval",), default="the model's own"
    )
    evaluate.add_argument(
        "--output-dir",
        help="folder for the CSV and plots (default: <model dir>/evaluation)",
    )
    evaluate.add_argument("--quiet", action="store_true", help="no progress bar")


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


def main(argv=None):
    """Runs the `metakeras` command.

    Args:
        argv: the arguments, without the program name. Defaults to `None`
            (`sys.argv[1:]`).

    Returns:
        The exit code: `0` on success, `1` for a missing file or dataset or a
        failure at run time, `2` for invalid options or values (argparse
        itself exits with `2` for unknown options), `130` when interrupted.

    Example:

    ```python
    from metakeras.cli import main
    main(["train", "--dataset", "digits", "--epochs", "1"])
    ```
    """
    from metakeras._cli_data import CLIError

    args = build_parser().parse_args(argv)
    handlers = {
        "demo": _demo,
        "train": _train,
        "evaluate": _evaluate,
        "datasets": _datasets,
    }
    try:
        return handlers[args.command](args)
    except CLIError as error:
        print(f"metakeras {args.command}: error: {error}", file=sys.stderr)
        return error.code
    except BrokenPipeError:
        # The reader went away (`metakeras evaluate ... | head`): stop quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _train(args):
    from metakeras import distributed
    from metakeras._cli_train import read_config_file, resolve_config, run_train

    # Under torchrun only rank 0 prints; the others train silently.
    print = builtins.print if distributed.rank() == 0 else _silent

    flags = vars(args).copy()
    flags.pop("command")
    config_path = flags.pop("config", None)
    if flags.pop("quiet", False):
        flags["verbose"] = 0
    settings = read_config_file(config_path) if config_path else {}
    config = resolve_config(settings, flags)
    print(
        f"metakeras train: {config['algorithm']} on {config['dataset']} "
        + (
            f"({config['ways']}-way {config['shots']}-shot)"
            if config["dataset"] != "sinusoid"
            else f"({config['shots']} shots)"
        )
        + f", {config['epochs']} epochs of {config['steps_per_epoch']} "
        f"meta-batches -> {config['output_dir']}"
    )
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


def _silent(*args, **kwargs):
    """A `print` that prints nothing (ranks other than 0 under torchrun)."""


def _evaluate(args):
    from metakeras._cli_evaluate import resolve_evaluation, run_evaluate

    flags = vars(args).copy()
    flags.pop("command")
    model_path = flags.pop("model")
    settings = resolve_evaluation(model_path, flags)
    result = run_evaluate(model_path, settings)
    for name, path in result["paths"].items():
        print(f"{name:>12}: {path}")
    return 0


def _datasets(args):
    from metakeras._cli_data import DATASETS, SPLITS, is_classification, locate

    rows = []
    for name in DATASETS:
        status, where = locate(name, args.data_dir)
        kind = "classification" if is_classification(name) else "regression"
        rows.append((name, kind, "/".join(SPLITS[name]), status, where))
    headers = ("dataset", "kind", "splits", "status", "location / how to get it")
    widths = [max(len(str(r[i])) for r in rows + [headers]) for i in range(4)]
    for row in [headers, *rows]:
        cells = [str(c).ljust(w) for c, w in zip(row, widths)] + [row[4]]
        print("  ".join(cells))
    return 0


def _demo(args):
    from metakeras.demo import INNER_LEARNING_RATE, format_summary, run_demo

    try:
        result = run_demo(
            seed=args.seed,
            output_dir=args.output_dir,
            epochs=args.epochs,
            steps_per_epoch=args.steps_per_epoch,
            eval_tasks=args.eval_tasks,
            verbose=0 if args.quiet else "auto",
        )
    except (OSError, ValueError) as error:
        print(f"metakeras demo: error: {error}", file=sys.stderr)
        return 1
    print()
    print(
        f"Post-adaptation MSE on {args.eval_tasks} held-out sinusoid tasks "
        f"(mean ± 95% CI; inner learning rate {INNER_LEARNING_RATE}):"
    )
    print(format_summary(result["summary"]))
    print()
    for name, path in result["paths"].items():
        print(f"{name:>9}: {path}")
    print(f"wall time: {result['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())


def _version():
    from metakeras import __version__

    return __version__
