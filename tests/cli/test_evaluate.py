"""`metakeras evaluate`: scores, notes on train/test gaps, bad settings."""

import keras
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from metakeras.cli import main

from ._runs import _train


def test_evaluate_reads_the_training_config(tmp_path, capsys):
    code, out = _train(tmp_path, "--dataset", "digits", "--epochs", "1")
    assert code == 0
    capsys.readouterr()
    code = main(["evaluate", str(out / "model.keras"), "--episodes", "12"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "digits test split, 12 episodes, 5-way 1-shot" in printed
    assert "| steps | metric | mean | std | ci95 | episodes |" in printed
    per_episode = pd.read_csv(out / "evaluation" / "per_episode.csv")
    assert sorted(per_episode["steps"].unique()) == [0, 1]
    assert len(per_episode) == 2 * 12
    assert per_episode["accuracy"].between(0, 1).all()
    summary = pd.read_csv(out / "evaluation" / "summary.csv")
    assert set(summary["metric"]) >= {"accuracy", "log_loss"}
    for name in ("episode_distribution", "adaptation_curve", "confusion_matrix"):
        assert (out / "evaluation" / f"{name}.png").stat().st_size > 1000


def test_evaluate_names_a_train_test_gap(tmp_path, capsys):
    code, out = _train(tmp_path, "--dataset", "digits", "--epochs", "1")
    assert code == 0
    model = str(out / "model.keras")
    assert main(["evaluate", model, "--episodes", "8", "--quiet"]) == 0
    printed = capsys.readouterr().out
    summary = pd.read_csv(out / "evaluation" / "summary.csv")
    test = summary.query("metric == 'accuracy'")["mean"].iloc[-1]
    train = pd.read_csv(out / "history.csv")["accuracy"].iloc[-1]
    assert ("Note: accuracy" in printed) == (train - test > 0.15)
    # A training run that scored far above these episodes.
    assert test < 0.8
    history = pd.read_csv(out / "history.csv")
    history["accuracy"] = 1.0
    history.to_csv(out / "history.csv", index=False)
    assert main(["evaluate", model, "--episodes", "8", "--quiet"]) == 0
    noted = capsys.readouterr().out
    assert (
        f"Note: accuracy 1.000 on training episodes (last epoch) but {test:.3f}"
        in noted
    )
    assert "unseen classes of the 'test' split" in noted


def test_gap_notes_for_log_loss_and_regression(tmp_path):
    from metakeras.cli._evaluate import _gap_notes

    class Results:
        def __init__(self, task, means):
            self.task, self.means, self.metrics = task, means, list(means)

        def mean(self, metric):
            return self.means[metric], 0.0

    model = tmp_path / "model.keras"
    settings = {"split": "test", "ways": 5}
    confident = Results("classification", {"accuracy": 0.5, "log_loss": 2.0})
    (note,) = _gap_notes(confident, str(model), settings)
    assert "log-loss 2.000 is worse than a uniform guess over 5 classes (1.609)" in note
    calibrated = Results("classification", {"accuracy": 0.5, "log_loss": 1.0})
    assert _gap_notes(calibrated, str(model), settings) == []
    pd.DataFrame({"epoch": [0], "loss": [0.5]}).to_csv(
        tmp_path / "history.csv", index=False
    )
    (note,) = _gap_notes(Results("regression", {"mse": 1.5}), str(model), settings)
    assert "MSE 0.500 on training tasks (last epoch) but 1.500 here" in note
    assert _gap_notes(Results("regression", {"mse": 0.9}), str(model), settings) == []


def test_evaluate_sinusoid_with_fixed_steps(tmp_path, capsys):
    code, out = _train(tmp_path, "--dataset", "sinusoid", "--epochs", "1")
    assert code == 0
    target = tmp_path / "eval"
    argv = ["evaluate", str(out / "model.keras"), "--episodes", "8"]
    assert main([*argv, "--inner-steps", "3", "--output-dir", str(target)]) == 0
    assert "sinusoid test tasks, 8 episodes, 5 shots" in capsys.readouterr().out
    summary = pd.read_csv(target / "summary.csv")
    assert set(summary["steps"]) == {3}
    assert set(summary["metric"]) == {"mse", "mae", "r2"}
    # The old flag still works, and says what replaces it.
    assert main([*argv, "--steps", "2", "--output-dir", str(target)]) == 0
    assert "--steps is deprecated; use --inner-steps" in capsys.readouterr().err
    assert set(pd.read_csv(target / "summary.csv")["steps"]) == {2}


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--split", "val"], "has no split 'val'; valid choices: train, test"),
        (["--ways", "3"], "the model predicts 5 classes, so episodes must be 5-way"),
    ],
)
def test_evaluate_bad_settings(tmp_path, capsys, extra, message):
    code, out = _train(tmp_path, "--dataset", "digits", "--epochs", "1")
    capsys.readouterr()
    assert main(["evaluate", str(out / "model.keras"), *extra]) == 2
    assert message in capsys.readouterr().err


def test_evaluate_missing_or_foreign_model(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "none.keras")]) == 1
    assert "does not exist" in capsys.readouterr().err
    plain = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    plain.save(tmp_path / "plain.keras")
    code = main(["evaluate", str(tmp_path / "plain.keras"), "--dataset", "digits"])
    assert code == 2
    assert "not a metakeras meta-learning model" in capsys.readouterr().err
    data = (tmp_path / "plain.keras").read_bytes()
    (tmp_path / "cut.keras").write_bytes(data[: len(data) // 2])
    code = main(["evaluate", str(tmp_path / "cut.keras"), "--dataset", "digits"])
    assert code == 1
    error = capsys.readouterr().err
    assert "is not a valid .keras archive (truncated or corrupt)" in error
    assert "File not found" not in error


def test_train_and_evaluate_an_image_folder(tmp_path, capsys):
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    for label in range(10):
        (root / f"class{label}").mkdir(parents=True)
        for i in range(4):
            pixels = rng.integers(0, 255, size=(8, 8), dtype=np.uint8)
            Image.fromarray(pixels).save(root / f"class{label}" / f"{i}.png")
    settings = ["--dataset", "image-folder", "--data-dir", str(root)]
    settings += ["--color-mode", "grayscale", "--learner", "mlp", "--ways", "2"]
    settings += ["--queries", "2", "--epochs", "1"]
    code, out = _train(tmp_path, *settings)
    assert code == 0
    capsys.readouterr()
    argv = ["evaluate", str(out / "model.keras"), "--split", "val", "--episodes", "3"]
    assert main(argv) == 0
    assert "image-folder val split, 3 episodes, 2-way 1-shot" in capsys.readouterr().out
