"""`compression_report`: size and paired quality of compressed models."""

import keras
import pytest
from conftest import mlp

import metakeras
from metakeras.callbacks import MagnitudePruning
from metakeras.evaluation import compression_report


def _sinusoid(steps=3, meta_batch_size=4, seed=0):
    return metakeras.tasks.SinusoidTasks(
        shots=5, queries=5, meta_batch_size=meta_batch_size, steps=steps, seed=seed
    )


def _maml(hidden=16):
    model = metakeras.MAML(
        mlp(hidden=hidden, activation="relu"), inner_steps=2, inner_learning_rate=0.05
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    return model


def test_compression_report_columns(tmp_path):
    model = _maml()
    model.fit(_sinusoid(), epochs=1, verbose=0)
    pruned = _maml()
    pruned.fit(_sinusoid(), epochs=1, verbose=0, callbacks=[MagnitudePruning(0.5)])
    report = compression_report(
        {"a": model, "b": pruned}, _sinusoid(seed=9), episodes=8, directory=tmp_path
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
            {"a": model, "b": pruned}, _sinusoid(seed=9), episodes=4, metric="accuracy"
        )
