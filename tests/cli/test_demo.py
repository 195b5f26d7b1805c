"""`metakeras demo`."""

import pandas as pd
from PIL import Image

from metakeras.cli import main


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
