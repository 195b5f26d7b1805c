"""`compression_report`: size and paired quality of compressed models."""

import pytest
from conftest import regression_maml, sinusoid_tasks

from metakeras.callbacks import MagnitudePruning
from metakeras.evaluation import compression_report


def test_compression_report_columns(tmp_path):
    model = regression_maml()
    model.fit(sinusoid_tasks(steps=3), epochs=1, verbose=0)
    pruned = regression_maml()
    pruned.fit(
        sinusoid_tasks(steps=3), epochs=1, verbose=0, callbacks=[MagnitudePruning(0.5)]
    )
    report = compression_report(
        {"a": model, "b": pruned},
        sinusoid_tasks(steps=3, seed=9),
        episodes=8,
        directory=tmp_path,
    )
    assert list(report.columns) == [
        "model",
        "parameters",
        "nonzero",
        "sparsity",
        "file_bytes",
        "learner_bytes",
        "metric",
        "mean",
        "ci95",
        "difference",
        "difference_ci95",
    ]
    assert report["metric"].tolist() == ["mse", "mse"]
    assert (
        report.loc[0, "parameters"] == report.loc[1, "parameters"] == 16 + 16 + 16 + 1
    )
    assert report.loc[1, "nonzero"] <= report.loc[1, "parameters"] - 16
    assert (tmp_path / "a.keras").exists() and (tmp_path / "b.keras").exists()
    assert (tmp_path / "a.learner.keras").exists()
    assert (report["learner_bytes"] < report["file_bytes"]).all()  # no optimizer
    with pytest.raises(ValueError, match=r"metric.*Valid choices"):
        compression_report(
            {"a": model, "b": pruned},
            sinusoid_tasks(steps=3, seed=9),
            episodes=4,
            metric="accuracy",
        )
