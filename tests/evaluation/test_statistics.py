"""Confidence intervals, paired differences and summaries of scores."""

import numpy as np
import pandas as pd
import pytest
from conftest import indexed_episodes

from metakeras.evaluation import (
    confidence_interval,
    evaluate_episodes,
    paired_difference,
    summarize,
)

# ------------------------------------------------------------------ helpers


class BernoulliModel:
    """Predicts each query label correctly with probability `p`.

    Per-episode accuracy is then Binomial(queries, p) / queries, with standard
    deviation sqrt(p (1 - p) / queries): a known distribution for CI checks.
    """

    name = "bernoulli"

    def __init__(self, p, ways):
        self.p = p
        self.ways = ways

    def adapt_and_predict(self, support_x, support_y, query_x, steps=None, **kwargs):
        ids = np.asarray(support_x)[:, 0, 0].astype(int)
        shape = np.shape(query_x)[:2]
        out = np.zeros(shape + (self.ways,), dtype="float32")
        for row, episode in enumerate(ids):
            rng = np.random.default_rng([7, episode])
            correct = rng.random(shape[1]) < self.p
            wrong = rng.integers(1, self.ways, size=shape[1])
            labels = np.arange(shape[1]) % self.ways
            predicted = np.where(correct, labels, (labels + wrong) % self.ways)
            out[row, np.arange(shape[1]), predicted] = 1.0
        return out


def labelled_by_position(tasks, ways, queries):
    episodes = indexed_episodes(tasks, ways=ways, shots=1, queries=queries)
    episodes["query_y"] = np.tile(np.arange(ways * queries) % ways, (tasks, 1))
    return episodes


# ------------------------------------------------------ confidence intervals


def test_confidence_interval_shrinks_as_one_over_sqrt_episodes():
    p, ways, queries = 0.7, 5, 4
    # Each episode has ways * queries = 20 query examples.
    sigma = np.sqrt(p * (1 - p) / (ways * queries))
    source = labelled_by_position(1600, ways, queries)
    model = BernoulliModel(p, ways)
    widths = {}
    for n in (100, 400, 1600):
        results = evaluate_episodes(model, source, episodes=n, metrics=["accuracy"])
        mean, half = results.mean("accuracy")
        widths[n] = half
        # The half-width is 1.96 * sigma / sqrt(n) for the known sigma ...
        assert half * np.sqrt(n) == pytest.approx(1.96 * sigma, rel=0.15)
        assert abs(mean - p) < 3 * sigma / np.sqrt(n)
    # ... so quadrupling the episodes halves it.
    assert widths[100] / widths[400] == pytest.approx(2.0, rel=0.15)
    assert widths[100] / widths[1600] == pytest.approx(4.0, rel=0.15)


def test_statistics_helpers():
    mean, half = confidence_interval([0.5, 0.7, 0.6])
    assert mean == pytest.approx(0.6)
    assert half == pytest.approx(1.96 * 0.1 / np.sqrt(3))
    mean, half = paired_difference([0.9, 0.8, 0.7], [0.8, 0.7, 0.7])
    assert mean == pytest.approx(0.2 / 3)
    assert half == pytest.approx(1.96 * np.std([0.1, 0.1, 0.0], ddof=1) / np.sqrt(3))
    with pytest.raises(ValueError, match="same episodes"):
        paired_difference([1.0, 2.0], [1.0])
    frame = pd.DataFrame({"model": ["a", "a", "b", "b"], "acc": [0.5, 0.7, 0.8, 1.0]})
    summary = summarize(frame, by="model")
    assert list(summary.columns) == [
        "model",
        "metric",
        "mean",
        "std",
        "ci95",
        "episodes",
    ]
    assert summary["mean"].tolist() == pytest.approx([0.6, 0.9])
