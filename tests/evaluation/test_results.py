"""`EpisodeResults` and `ModelComparison`: tables, CSV and Markdown exports."""

import os

import numpy as np
import pandas as pd
import pytest
from conftest import PreparedModel, indexed_episodes

from metakeras.evaluation import EpisodeResults, compare_models, evaluate_episodes


def test_csv_and_markdown_exports(tmp_path):
    episodes = indexed_episodes(5, ways=3, queries=2)
    rng = np.random.default_rng(9)
    predictions = {s: rng.dirichlet(np.ones(3), size=(5, 6)) for s in range(3)}
    results = evaluate_episodes(
        PreparedModel(predictions, inner_steps=2),
        episodes,
        episodes=None,
        metrics=["accuracy", "f1"],
    )
    assert isinstance(results, EpisodeResults)
    assert "EpisodeResults 'prepared'" in repr(results)

    path = results.to_csv(tmp_path / "summary.csv")
    pd.testing.assert_frame_equal(pd.read_csv(path), results.summary, check_dtype=False)
    per_episode = pd.read_csv(results.to_csv(tmp_path / "per.csv", "per_episode"))
    assert len(per_episode) == 15
    adaptation = pd.read_csv(results.to_csv(tmp_path / "adapt.csv", "adaptation"))
    assert adaptation["steps"].tolist() == [0, 1, 2]

    text = results.to_markdown(tmp_path / "summary.md")
    lines = text.strip().splitlines()
    assert lines[0] == "| steps | metric | mean | std | ci95 | episodes |"
    assert lines[1] == "|---:|:---|---:|---:|---:|---:|"
    assert len(lines) == 2 + len(results.summary)
    first = results.summary.iloc[0]
    assert lines[2] == (
        f"| 0 | accuracy | {first['mean']:.4f} | {first['std']:.4f} | "
        f"{first['ci95']:.4f} | 5 |"
    )
    assert (tmp_path / "summary.md").read_text(encoding="utf-8") == text
    with pytest.raises(ValueError, match=r"Unknown table 'totals'. Valid names"):
        results.to_csv(tmp_path / "x.csv", which="totals")
    # Atomic writes leave no temporary files behind.
    assert sorted(os.listdir(tmp_path)) == [
        "adapt.csv",
        "per.csv",
        "summary.csv",
        "summary.md",
    ]


def test_comparison_exports(tmp_path):
    rng = np.random.default_rng(10)
    episodes = indexed_episodes(6, regression=True, queries=2)
    models = {
        "small": PreparedModel({None: rng.normal(size=(6, 6, 1))}),
        "large": PreparedModel({None: rng.normal(size=(6, 6, 1))}),
    }
    comparison = compare_models(models, episodes, episodes=None, baseline="large")
    text = comparison.to_markdown(which="differences")
    assert text.splitlines()[0] == (
        "| model | baseline | metric | difference | std | ci95 | episodes | "
        "significant |"
    )
    assert "| small | large | mse |" in text
    frame = pd.read_csv(comparison.to_csv(tmp_path / "per.csv", "per_episode"))
    assert list(frame.columns) == ["model", "episode", "mse", "mae", "r2"]
    assert len(frame) == 12
    summary = pd.read_csv(comparison.to_csv(tmp_path / "summary.csv"))
    assert summary["model"].tolist() == ["small"] * 3 + ["large"] * 3
