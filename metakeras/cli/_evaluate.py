"""`metakeras evaluate`: score a saved model on test episodes.

The dataset and episode shape default to those of the run that trained the
model (the `config.json` that `metakeras train` writes beside `model.keras`),
so `metakeras evaluate out/model.keras` needs no other argument. Every
setting can be overridden with a flag; `--transductive-eval BOOL` overrides
the model's own `transductive_eval` (saved with it by `metakeras train`).

Outputs in the output folder (default: `<model folder>/evaluation`):
`summary.csv`, `per_episode.csv`, `episode_distribution.png` and, for models
with an inner loop, `adaptation_curve.png`; for classification also
`confusion_matrix.png`.
"""

import json
import os

from metakeras.cli import _data
from metakeras.cli._build import build_tasks
from metakeras.cli._config import resolve_config
from metakeras.cli._errors import CLIError

# Settings `evaluate` takes from the training run's config.json.
_INHERITED = (
    "dataset",
    "data_dir",
    "image_size",
    "color_mode",
    "ways",
    "shots",
    "queries",
)


def command(args):
    """Runs `metakeras evaluate` with the parsed arguments.

    Args:
        args: the `argparse.Namespace` of the `evaluate` subcommand.

    Returns:
        The exit code, `0`.

    Raises:
        CLIError: for a missing or foreign model file, or invalid settings.
    """
    flags = vars(args).copy()
    flags.pop("command")
    model_path = flags.pop("model")
    settings = resolve_evaluation(model_path, flags)
    result = run_evaluate(model_path, settings)
    for name, path in result["paths"].items():
        print(f"{name:>12}: {path}")
    return 0


def resolve_evaluation(model_path, overrides):
    """The evaluation settings: training config, then flags.

    Args:
        model_path: the `.keras` file.
        overrides: dict of the flags given (`dataset`, `data_dir`, `split`,
            `episodes`, `ways`, `shots`, `queries`, `steps`, `batch_size`,
            `seed`, `output_dir`, `download`, `image_size`,
            `transductive_eval`, `quiet`).

    Returns:
        The resolved settings dict.

    Raises:
        CLIError: for a missing model file or invalid values.
    """
    if not os.path.isfile(model_path):
        raise CLIError(f"model file {model_path!r} does not exist.", code=1)
    if not model_path.endswith(".keras"):
        raise CLIError(f"model file must end in .keras; received {model_path!r}.")
    folder = os.path.dirname(os.path.abspath(model_path))
    trained = _training_config(folder)
    base = {k: trained[k] for k in _INHERITED if k in trained}
    flags = {k: v for k, v in overrides.items() if k in _INHERITED or k == "download"}
    settings = resolve_config(base, flags)
    settings.update(
        split=overrides.get("split", "test"),
        episodes=overrides.get("episodes", 600),
        steps=overrides.get("steps"),
        batch_size=overrides.get("batch_size", 32),
        seed=overrides.get("seed", 0),
        # None: the model's own setting, saved with it.
        transductive_eval=overrides.get("transductive_eval"),
        output_dir=overrides.get("output_dir") or os.path.join(folder, "evaluation"),
        rotations=False,
        verbose=0 if overrides.get("quiet") else "auto",
    )
    _data.check_split(settings["dataset"], settings["split"])
    return settings


def _training_config(folder):
    """The `config.json` of the run that trained the model, or `{}`."""
    config_path = os.path.join(folder, "config.json")
    if not os.path.exists(config_path):
        return {}
    try:
        with open(config_path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def run_evaluate(model_path, settings, log=print):
    """Evaluates a saved model on `settings["episodes"]` episodes.

    Args:
        model_path: the `.keras` file.
        settings: from `resolve_evaluation`.
        log: where the summary table goes. Defaults to `print`.

    Returns:
        A dict with `results` (`EpisodeResults`) and `paths`.

    Raises:
        CLIError: if the model cannot be loaded or does not fit the episodes.
    """
    model = _load_model(model_path)
    _override_settings(model, settings)
    _check_heads(model, settings)
    results = _score(model, settings)
    paths = _write_outputs(results, settings["output_dir"])
    classification = _data.is_classification(settings["dataset"])
    log(
        f"{settings['dataset']} {settings['split']} split, {results.episodes} "
        f"episodes, {settings['ways']}-way {settings['shots']}-shot"
        if classification
        else f"sinusoid test tasks, {results.episodes} episodes, "
        f"{settings['shots']} shots"
    )
    log(results.to_markdown())
    for note in _gap_notes(results, model_path, settings):
        log(note)
    return {"results": results, "paths": paths}


def _load_model(model_path):
    """The meta-learning model saved in `model_path`.

    Raises:
        CLIError: if the file is not a Keras model, or not a `MetaModel`.
    """
    # Registers the pruning and quantization classes that a compressed model
    # refers to (`metakeras train --prune/--quantize`).
    import metakeras.callbacks  # noqa: F401
    from metakeras._io import load_model
    from metakeras.models import MetaModel

    try:
        model = load_model(model_path)
    except Exception as error:  # Keras raises many types for a bad file.
        reason = str(error).strip().splitlines()[0][:300] if str(error) else ""
        raise CLIError(
            f"cannot load {model_path!r} as a Keras model: {reason}", code=1
        ) from None
    if not isinstance(model, MetaModel):
        raise CLIError(
            f"{model_path!r} holds a {type(model).__name__}, not a metakeras "
            "meta-learning model (saved by `metakeras train` or model.save)."
        )
    return model


def _override_settings(model, settings):
    """Applies `--transductive-eval` to the loaded model."""
    if settings.get("transductive_eval") is None:
        return
    if not hasattr(model, "transductive_eval"):
        raise CLIError(
            f"{type(model).__name__} has no `transductive_eval` setting; "
            "remove --transductive-eval."
        )
    model.transductive_eval = settings["transductive_eval"]


def _has_head(model):
    """Whether the model adapts a head in an inner loop (not ProtoNet)."""
    return getattr(model, "inner", None) is not None


def _check_heads(model, settings):
    """Raises a `CLIError` if a classifier's head does not fit `ways`."""
    classification = _data.is_classification(settings["dataset"])
    heads = model.learner.output_shape[-1]
    if classification and _has_head(model) and heads != settings["ways"]:
        raise CLIError(
            f"the model predicts {heads} classes, so episodes must be "
            f"{heads}-way; received ways={settings['ways']}."
        )


def _score(model, settings):
    """Adapts the model to the episodes of the split and scores it.

    Returns:
        The `EpisodeResults` of `metakeras.evaluation.evaluate_episodes`.
    """
    from metakeras.evaluation import evaluate_episodes

    episodes = settings["episodes"]
    batch = min(settings["batch_size"], episodes)
    try:
        tasks = build_tasks(
            settings,
            settings["split"],
            steps=-(-episodes // batch),
            seed=settings["seed"],
            resample=False,
            meta_batch_size=batch,
        )
        return evaluate_episodes(
            model,
            tasks,
            episodes=episodes,
            inner_steps=settings["steps"],
            batch_size=batch,
            # Only inner loops are random (mini-batches, Dropout); a seed with
            # a model without one trips `evaluation._scorer._derived_seed` (steps=-1).
            seed=settings["seed"] if _has_head(model) else None,
            verbose=settings.get("verbose", "auto"),
        )
    except ValueError as error:
        raise CLIError(str(error)) from None


def _write_outputs(results, out):
    """Writes the CSV tables and plots of `results` to the folder `out`.

    Returns:
        The paths written, by name.
    """
    from metakeras import plots

    paths = {
        "summary": results.to_csv(os.path.join(out, "summary.csv")),
        "per_episode": results.to_csv(
            os.path.join(out, "per_episode.csv"), which="per_episode"
        ),
        "distribution": plots.plot_episode_distribution(
            results, os.path.join(out, "episode_distribution.png")
        ),
    }
    if results.has_steps and len(results.steps) > 1:
        paths["adaptation"] = plots.plot_adaptation_curve(
            results, os.path.join(out, "adaptation_curve.png")
        )
    if results.task == "classification":
        paths["confusion"] = plots.plot_confusion_matrix(
            results, os.path.join(out, "confusion_matrix.png"), normalize=True
        )
    return paths


# A drop this large from training to test episodes is worth a word.
_ACCURACY_GAP = 0.15
_MSE_RATIO = 2.0


def _gap_notes(results, model_path, settings):
    """Plain-words notes on results that need one: overfitting, bad confidence.

    Compares the test episodes with the last epoch of the training run's
    `history.csv` (query scores after adaptation on training episodes), and
    the log-loss with that of a uniform guess.
    """
    import math

    notes = []
    last = _last_epoch(model_path)
    unseen = (
        "on its training classes but much worse on the unseen classes of the "
        f"{settings['split']!r} split"
        if results.task == "classification"
        else "on its training tasks but much worse on new ones"
    )
    advice = (
        "The meta-learner memorised its training tasks instead of learning to "
        "adapt: train on more classes (or rotations), for fewer epochs, or with "
        "a smaller learner, and compare with a simple baseline (nearest "
        "neighbour on the support set)."
    )
    if results.task == "classification":
        train = last.get("accuracy")
        test = results.mean("accuracy")[0] if "accuracy" in results.metrics else None
        if test is not None and train is not None and train - test > _ACCURACY_GAP:
            notes.append(
                f"Note: accuracy {train:.3f} on training episodes (last epoch) "
                f"but {test:.3f} here: the model does well {unseen}. {advice}"
            )
        if "log_loss" in results.metrics:
            log_loss, _ = results.mean("log_loss")
            uniform = math.log(settings["ways"])
            if log_loss > uniform:
                notes.append(
                    f"Note: log-loss {log_loss:.3f} is worse than a uniform guess "
                    f"over {settings['ways']} classes ({uniform:.3f}): the model is "
                    "confidently wrong on many queries, so its probabilities should "
                    "not be trusted."
                )
    else:
        metric = "mse" if "mse" in results.metrics else None
        train = last.get("loss")
        if metric is not None and train is not None and train > 0:
            test, _ = results.mean(metric)
            if test > _MSE_RATIO * train:
                notes.append(
                    f"Note: MSE {train:.3f} on training tasks (last epoch) but "
                    f"{test:.3f} here: the model does well {unseen}. {advice}"
                )
    return notes


def _last_epoch(model_path):
    """The last row of the `history.csv` beside the model, or `{}`."""
    import pandas as pd

    history_path = os.path.join(os.path.dirname(model_path), "history.csv")
    if not os.path.exists(history_path):
        return {}
    try:
        frame = pd.read_csv(history_path)
    except (ValueError, pd.errors.ParserError):
        return {}
    return frame.iloc[-1].to_dict() if len(frame) else {}
