"""`metakeras train` settings: config files, flags over files, invalid values."""

import json

import keras
import pytest

import metakeras
from metakeras.cli import main


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


def test_unknown_config_file_type(tmp_path, capsys):
    path = tmp_path / "c.ini"
    path.write_text("[x]\n")
    assert main(["train", "--config", str(path)]) == 2
    assert "must end in .toml, .yaml or .yml" in capsys.readouterr().err


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
