import subprocess
import sys

import pandas as pd
import pytest
from PIL import Image

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
