import json
import os
import subprocess
import sys

import keras
import numpy as np
import pandas as pd
import pytest
from PIL import Image

import metakeras
from metakeras._io import _umask
from metakeras.cli import main


def test_help_lists_demo(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    assert "demo" in capsys.readouterr().out


def test_demo_help_names_the_options(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    out = capsys.readouterr().out
    for option in ("--seed", "--output-dir", "--epochs", "--steps-per-epoch"):
        assert option in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["demo", "--seed", "-1"], "expected an integer >= 0"),
        (["demo", "--epochs", "zero"], "expected a positive integer"),
        (["demo", "--bogus"], "unrecognized arguments: --bogus"),
        (["nonsense"], "invalid choice: 'nonsense'"),
        ([], "required: COMMAND"),
    ],
)
def test_user_mistakes_exit_2_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_small_demo_writes_its_outputs(tmp_path, capsys):
    code = main(
        [
            "demo",
            "--output-dir",
            str(tmp_path),
            "--epochs",
            "1",
            "--steps-per-epoch",
            "20",
            "--eval-tasks",
            "30",
            "--quiet",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "Post-adaptation MSE on 30 held-out sinusoid tasks" in out
    assert "pooled baseline" in out and "MAML" in out
    summary = pd.read_csv(tmp_path / "sinusoid_summary.csv")
    assert set(summary["model"]) == {"MAML", "pooled baseline"}
    assert set(summary["shots"]) == {5, 10} and set(summary["steps"]) == {0, 1, 10}
    assert (summary["episodes"] == 30).all()
    per_task = pd.read_csv(tmp_path / "sinusoid_per_task.csv")
    assert len(per_task) == 2 * 2 * 3 * 30
    with Image.open(tmp_path / "sinusoid_adaptation.png") as image:
        assert image.size[0] > 600
    assert (tmp_path / "maml_sinusoid.keras").stat().st_size > 1000
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_demo_reports_every_phase(tmp_path, capsys):
    argv = ["demo", "--output-dir", str(tmp_path), "--epochs", "1"]
    argv += ["--steps-per-epoch", "3", "--eval-tasks", "5"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    phases = [
        "MAML: meta-training for 1 epoch of 3 meta-batches",
        "Pooled baseline: ordinary regression",
        "Adapting both models to 5 held-out tasks",
        "12/12",  # 2 models x 2 support sizes x 3 step settings
    ]
    positions = [out.index(phase) for phase in phases]
    assert positions == sorted(positions)
    # Output is not a terminal: one line per phase, not a line per update.
    assert len(out.splitlines()) < 40


def test_unwritable_output_dir_is_a_clear_error(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    code = main(
        [
            "demo",
            "--output-dir",
            str(blocker / "out"),
            "--epochs",
            "1",
            "--steps-per-epoch",
            "2",
            "--eval-tasks",
            "5",
            "--quiet",
        ]
    )
    assert code == 1
    assert "metakeras demo: error:" in capsys.readouterr().err


@pytest.mark.slow
def test_python_dash_m_entry_point():
    result = subprocess.run(
        [sys.executable, "-m", "metakeras", "demo", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0
    assert "--output-dir" in result.stdout


# --------------------------------------------------------------------- train

_TINY = ["--steps-per-epoch", "3", "--meta-batch-size", "2", "--quiet"]


def _train(tmp_path, *extra, name="run"):
    out = tmp_path / name
    argv = ["train", "--output-dir", str(out), *_TINY, *extra]
    return main(argv), out


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("demo", "train", "evaluate", "datasets"):
        assert command in out


def test_train_digits_writes_model_history_config_and_plot(tmp_path, capsys):
    code, out = _train(tmp_path, "--dataset", "digits", "--epochs", "1")
    assert code == 0
    assert "maml on digits (5-way 1-shot)" in capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    assert config["algorithm"] == "maml" and config["learner"] == "mlp"
    assert config["inner_learning_rate"] == 0.4 and config["queries"] == 15
    history = pd.read_csv(out / "history.csv")
    assert list(history["epoch"]) == [0]
    assert np.isfinite(history["loss"]).all()
    with Image.open(out / "training_curves.png") as image:
        assert image.size[0] > 300
    model = keras.models.load_model(out / "model.keras")
    assert isinstance(model, metakeras.MAML)
    assert model.learner.output_shape == (None, 5)


def test_train_resumes_after_an_interruption(tmp_path, capsys):
    argv = ("--dataset", "sinusoid", "--seed", "3")
    code, out = _train(tmp_path, *argv, "--epochs", "1")
    assert code == 0
    first = keras.models.load_model(out / "model.keras").get_weights()
    # The run was stopped after one epoch; the same command with more epochs
    # continues from the backup instead of starting over.
    code, _ = _train(tmp_path, *argv, "--epochs", "2")
    assert code == 0
    assert "Resuming from" in capsys.readouterr().out
    history = pd.read_csv(out / "history.csv")
    assert list(history["epoch"]) == [0, 1]
    second = keras.models.load_model(out / "model.keras").get_weights()
    assert any(not np.allclose(a, b) for a, b in zip(first, second))
    # Nothing left to do: the history stays at two epochs.
    code, _ = _train(tmp_path, *argv, "--epochs", "2")
    assert code == 0
    assert "Nothing to train" in capsys.readouterr().out
    assert len(pd.read_csv(out / "history.csv")) == 2


def test_train_refuses_to_resume_a_different_configuration(tmp_path, capsys):
    code, _ = _train(tmp_path, "--dataset", "sinusoid", "--epochs", "1")
    assert code == 0
    capsys.readouterr()
    code, _ = _train(tmp_path, "--dataset", "sinusoid", "--shots", "10")
    assert code == 2
    err = capsys.readouterr().err
    assert "shots: 5 -> 10" in err and "another --output-dir" in err


def test_train_reads_toml_and_yaml_and_flags_override(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text(
        'dataset = "digits"\nalgorithm = "protonet"\nways = 3\n'
        "meta-batch-size = 2\nepochs = 1\nsteps_per_epoch = 2\nverbose = 0\n"
    )
    code = main(["train", "--config", str(toml), "--output-dir", str(tmp_path / "a")])
    assert code == 0
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert (config["algorithm"], config["ways"]) == ("protonet", 3)
    assert config["inner_steps"] is None
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text(
        "dataset: sinusoid\nalgorithm: reptile\nepochs: 1\nsteps_per_epoch: 2\n"
        "verbose: 0\n"
    )
    out = str(tmp_path / "b")
    code = main(
        ["train", "--config", str(yaml_file), "--inner-steps", "2", "--output-dir", out]
    )
    assert code == 0
    config = json.loads((tmp_path / "b" / "config.json").read_text())
    assert (config["algorithm"], config["inner_steps"]) == ("reptile", 2)
    assert config["first_order"] is True
    assert isinstance(keras.models.load_model(f"{out}/model.keras"), metakeras.Reptile)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--algorithm", "mamal"], "invalid choice: 'mamal'"),
        (["--ways", "0"], "expected a positive integer, got '0'"),
        (["--inner-learning-rate", "-1"], "expected a positive number"),
        (["--first-order", "maybe"], "expected true or false, got 'maybe'"),
        (["--prune-everything"], "unrecognized arguments: --prune-everything"),
    ],
)
def test_train_rejects_bad_flags(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", *argv])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "config, code, message",
    [
        ("bogus = 1\n", 2, "unknown setting 'bogus'; valid settings: dataset,"),
        ("ways = -2\n", 2, "ways must be a positive integer; received -2"),
        ('optimizer = "adamm"\n', 2, "invalid optimizer 'adamm'; valid choices: adam"),
        ("dataset = [1\n", 2, "cannot parse config file"),
        ("[inner]\nsteps = 1\n", 2, "'inner' is a table"),
        (
            'dataset = "sinusoid"\nalgorithm = "protonet"\n',
            2,
            "needs a classification dataset",
        ),
        (
            'algorithm = "protonet"\ninner_steps = 2\n',
            2,
            "these settings do not apply: inner_steps",
        ),
        ('learner = "conv4"\n', 2, "needs images of at least 16x16"),
        ("ways = 7\n", 2, "`ways` must be <= the number of classes"),
    ],
)
def test_train_explains_invalid_configurations(tmp_path, capsys, config, code, message):
    path = tmp_path / "c.toml"
    path.write_text(config)
    out = tmp_path / "out"
    assert main(["train", "--config", str(path), "--output-dir", str(out)]) == code
    err = capsys.readouterr().err
    assert err.startswith("metakeras train: error: ")
    assert message in err
    assert "Traceback" not in err
    assert not out.exists()


def test_train_missing_dataset_says_what_to_download(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("METAKERAS_DATA", str(tmp_path / "nothing"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    code = main(["train", "--dataset", "omniglot", "--output-dir", str(tmp_path / "o")])
    assert code == 1
    err = capsys.readouterr().err
    assert "dataset 'omniglot' was not found" in err
    assert "images_background.zip" in err and "METAKERAS_DATA" in err
    assert "--download" in err


def test_unknown_config_file_type(tmp_path, capsys):
    path = tmp_path / "c.ini"
    path.write_text("[x]\n")
    assert main(["train", "--config", str(path)]) == 2
    assert "must end in .toml, .yaml or .yml" in capsys.readouterr().err


# ------------------------------------------------------------------ evaluate


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
    from metakeras._cli_evaluate import _gap_notes

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
    argv = ["evaluate", str(out / "model.keras"), "--episodes", "8", "--steps", "3"]
    assert main([*argv, "--output-dir", str(target)]) == 0
    assert "sinusoid test tasks, 8 episodes, 5 shots" in capsys.readouterr().out
    summary = pd.read_csv(target / "summary.csv")
    assert set(summary["steps"]) == {3}
    assert set(summary["metric"]) == {"mse", "mae", "r2"}


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


# ------------------------------------------------------------------ datasets


def test_datasets_lists_presence(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    data = tmp_path / "data"
    (data / "omniglot" / "images_background").mkdir(parents=True)
    (data / "omniglot" / "images_evaluation").mkdir()
    monkeypatch.setenv("METAKERAS_DATA", str(data))
    assert main(["datasets"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert (
        "present" in lines["omniglot"] and str(data / "omniglot") in lines["omniglot"]
    )
    assert "built-in" in lines["digits"] and "generated" in lines["sinusoid"]
    assert (
        "missing" in lines["mini-imagenet"] and "--data-dir" in lines["mini-imagenet"]
    )
    monkeypatch.delenv("METAKERAS_DATA")
    (tmp_path / "flowers" / "empty").mkdir(parents=True)
    assert main(["datasets", "--data-dir", str(tmp_path / "flowers")]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "missing" in lines["image-folder"]
    folder = tmp_path / "flowers" / "rose"
    folder.mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(folder / "0.png")
    assert main(["datasets", "--data-dir", str(tmp_path / "flowers")]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "missing" in lines["omniglot"]
    assert "present" in lines["image-folder"]


def test_train_with_pruning_and_quantization(tmp_path, capsys):
    code, out = _train(
        tmp_path, "--dataset", "digits", "--epochs", "1", "--prune", "0.5",
        "--quantize", "int8",
    )  # fmt: skip
    assert code == 0
    config = json.loads((out / "config.json").read_text())
    assert (config["prune"], config["quantize"]) == (0.5, "int8")
    history = pd.read_csv(out / "history.csv")
    assert history["sparsity"].iloc[-1] == pytest.approx(0.5, abs=0.02)
    capsys.readouterr()
    assert main(["evaluate", str(out / "model.keras"), "--episodes", "4"]) == 0
    assert "5-way 1-shot" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--prune", "1.5"], "expected a number in [0, 1), got '1.5'"),
        (["--quantize", "int3"], "invalid choice: 'int3'"),
    ],
)
def test_train_rejects_bad_compression_flags(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", *argv])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


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


def test_version_and_help_text(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"metakeras {metakeras.__version__}"
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    out = capsys.readouterr().out
    assert "95% CI" in " ".join(out.split()) and "%%" not in out


def test_history_has_only_logged_columns(tmp_path):
    out = tmp_path / "run"
    status = main(
        [
            "train",
            "--dataset",
            "sinusoid",
            "--epochs",
            "2",
            "--steps-per-epoch",
            "2",
            "--output-dir",
            str(out),
            "--quiet",
        ]
    )
    assert status == 0
    history = pd.read_csv(out / "history.csv")
    assert list(history["epoch"]) == [0, 1]
    assert not [c for c in history.columns if c.startswith("val_")]
    assert history.notna().all().all()
    assert oct(os.stat(out / "history.csv").st_mode & 0o777) == oct(0o666 & ~_umask())


# ------------------------------------------------- algorithm settings


def test_train_passes_the_algorithm_settings_to_the_model(tmp_path, capsys):
    code, out = _train(
        tmp_path, "--dataset", "digits", "--epochs", "1", "--inner-clipnorm", "0.5",
        "--inner-batch-size", "3", "--inner-shuffle", "false",
        "--transductive-eval", "--zero-head",
    )  # fmt: skip
    assert code == 0
    config = json.loads((out / "config.json").read_text())
    assert config["inner_clipnorm"] == 0.5 and config["inner_shuffle"] is False
    assert config["transductive_eval"] is True and config["zero_head"] is True
    assert config["inner_global_clipnorm"] is None
    assert config["per_step_bn_statistics"] is False
    model = keras.models.load_model(out / "model.keras")
    assert (
        model.inner.get_config()
        == metakeras.InnerLoop(
            steps=1, learning_rate=0.4, batch_size=3, shuffle=False, clipnorm=0.5
        ).get_config()
    )
    assert model.transductive_eval is True
    # ZeroHead ran after every meta-update: the saved head is zero.
    head = model.learner.layers[-1].get_weights()
    assert all(np.abs(w).max() == 0.0 for w in head)
    # Without it the head is not.
    code, out = _train(tmp_path, "--dataset", "digits", "--epochs", "1", name="b")
    head = keras.models.load_model(out / "model.keras").learner.layers[-1]
    assert np.abs(head.get_weights()[0]).max() > 0


def _image_folder(root, size=16):
    rng = np.random.default_rng(0)
    for label in range(10):
        (root / f"class{label}").mkdir(parents=True)
        for i in range(4):
            pixels = rng.integers(0, 255, size=(size, size), dtype=np.uint8)
            Image.fromarray(pixels).save(root / f"class{label}" / f"{i}.png")


def test_config_file_settings_per_step_statistics_and_transductive_eval(
    tmp_path, capsys
):
    root = tmp_path / "images"
    _image_folder(root)
    toml = tmp_path / "run.toml"
    toml.write_text(
        f'dataset = "image-folder"\ndata_dir = "{root}"\ncolor_mode = "grayscale"\n'
        "filters = 2\nways = 2\nqueries = 2\nepochs = 1\ninner_steps = 2\n"
        "per_step_bn_statistics = true\ninner-global-clipnorm = 1.0\n"
    )
    out = tmp_path / "run"
    assert main(["train", "--config", str(toml), *_TINY, "--output-dir", str(out)]) == 0
    model = keras.models.load_model(out / "model.keras")
    assert model.per_step_bn_statistics and model.inner.global_clipnorm == 1.0
    assert [v.shape[0] for v in model.step_statistics][:1] == [3]
    assert model.transductive_eval is False
    # evaluate --transductive-eval normalises queries with their statistics.
    summaries = []
    for flag in ([], ["--transductive-eval"]):
        folder = tmp_path / f"evaluation{len(flag)}"
        argv = ["evaluate", str(out / "model.keras"), "--split", "val"]
        argv += ["--episodes", "4", "--steps", "1", "--output-dir", str(folder), *flag]
        assert main(argv) == 0
        summaries.append(pd.read_csv(folder / "summary.csv"))
    assert not np.allclose(summaries[0]["mean"], summaries[1]["mean"])


@pytest.mark.parametrize(
    "config, message",
    [
        (
            'algorithm = "protonet"\nzero_head = true\n',
            "protonet has no inner loop, so these settings do not apply: zero_head",
        ),
        (
            'algorithm = "reptile"\nper_step_bn_statistics = true\n',
            "these settings do not apply to reptile: per_step_bn_statistics",
        ),
        (
            'algorithm = "fomaml"\nfirst_order = false\n',
            "fomaml always has first_order=True",
        ),
        ("inner_clipnorm = 0\n", "inner_clipnorm must be a positive number"),
        ('zero_head = "yes"\n', "zero_head must be true or false; received 'yes'"),
        (
            "per_step_bn_statistics = true\n",
            "needs a learner with BatchNormalization layers",
        ),
    ],
)
def test_train_explains_invalid_settings(tmp_path, capsys, config, message):
    path = tmp_path / "c.toml"
    path.write_text(config)
    assert main(["train", "--config", str(path), "--output-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("metakeras train: error: ") and message in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--inner-clipnorm", "-1"], "expected a positive number, got '-1'"),
        (["--zero-head", "maybe"], "expected true or false, got 'maybe'"),
        (["--inner-shuffle", "2"], "expected true or false, got '2'"),
    ],
)
def test_train_rejects_bad_setting_flags(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", *argv])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_runs_from_before_the_new_settings_resume(tmp_path, capsys):
    argv = ("--dataset", "sinusoid", "--seed", "1")
    code, out = _train(tmp_path, *argv, "--epochs", "1")
    assert code == 0
    config = json.loads((out / "config.json").read_text())
    for key in ("inner_shuffle", "inner_clipnorm", "per_step_bn_statistics"):
        config.pop(key)
    (out / "config.json").write_text(json.dumps(config))
    capsys.readouterr()
    assert _train(tmp_path, *argv, "--epochs", "2")[0] == 0
    assert "Resuming from" in capsys.readouterr().out
    # A changed new setting is still a different configuration.
    code, _ = _train(tmp_path, *argv, "--epochs", "3", "--inner-clipnorm", "1")
    assert code == 2
    assert "inner_clipnorm: None -> 1.0" in capsys.readouterr().err
