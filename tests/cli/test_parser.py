"""The `metakeras` parser: help, version, and flags refused by argparse."""

import pytest

import metakeras
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


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("demo", "train", "evaluate", "datasets"):
        assert command in out


def test_version_and_help_text(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"metakeras {metakeras.__version__}"
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    out = capsys.readouterr().out
    assert "95% CI" in " ".join(out.split()) and "%%" not in out


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


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--algorithm", "mamal"], "invalid choice: 'mamal'"),
        (["--ways", "0"], "expected a positive integer, got '0'"),
        (["--inner-learning-rate", "-1"], "expected a positive number"),
        (["--first-order", "maybe"], "expected true or false, got 'maybe'"),
        (["--prune-everything"], "unrecognized arguments: --prune-everything"),
        (["--prune", "1.5"], "expected a number in [0, 1), got '1.5'"),
        (["--quantize", "int3"], "invalid choice: 'int3'"),
        (["--inner-clipnorm", "-1"], "expected a positive number, got '-1'"),
        (["--zero-head", "maybe"], "expected true or false, got 'maybe'"),
        (["--inner-shuffle", "2"], "expected true or false, got '2'"),
    ],
)
def test_train_rejects_bad_flags(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", *argv])
    assert info.value.code == 2
    assert message in capsys.readouterr().err
