"""`metakeras train`: outputs, resuming, compression, algorithm settings."""

import json
import os

import keras
import numpy as np
import pandas as pd
import pytest
from PIL import Image

import metakeras
from metakeras._io import _umask
from metakeras.cli import main

from ._runs import _TINY, _train


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


def test_train_missing_dataset_says_what_to_download(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("METAKERAS_DATA", str(tmp_path / "nothing"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    code = main(["train", "--dataset", "omniglot", "--output-dir", str(tmp_path / "o")])
    assert code == 1
    err = capsys.readouterr().err
    assert "dataset 'omniglot' was not found" in err
    assert "images_background.zip" in err and "METAKERAS_DATA" in err
    assert "--download" in err


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
