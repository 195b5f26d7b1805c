"""Task sources: PyDatasets, arrays, passes, recorded classes, frozen episodes."""

import numpy as np
import pandas as pd
import pytest
from conftest import (
    EpisodeSource,
    PreparedModel,
    indexed_episodes,
    trained_classifier,
    trained_regressor,
)

import metakeras
from metakeras.evaluation import collect_episodes, evaluate_episodes
from metakeras.tasks import SinusoidTasks


def test_pydataset_classes_are_recorded_and_passes_resample():
    source = EpisodeSource(batches=2, tasks=3)
    results = evaluate_episodes(
        PreparedModel(
            {None: np.random.default_rng(7).dirichlet(np.ones(3), size=(40, 12))}
        ),
        source,
        episodes=10,
        metrics=["accuracy"],
    )
    frame = results.per_episode
    assert list(frame.columns) == ["episode", "classes", "accuracy"]
    # 10 episodes need a second pass over the 2 x 3 tasks: on_epoch_end drew it.
    assert source.epoch == 1
    fresh = EpisodeSource(batches=2, tasks=3)
    expected = [fresh[0]["classes"], fresh[1]["classes"]]
    fresh.on_epoch_end()
    expected = np.concatenate(expected + [fresh[0]["classes"], fresh[1]["classes"][:1]])
    assert frame["classes"].tolist() == [tuple(c) for c in expected]
    # The same seed gives the same episodes.
    again = collect_episodes(EpisodeSource(batches=2, tasks=3), episodes=10)
    np.testing.assert_array_equal(again["classes"], expected)
    assert again["support_x"].shape == (10, 6, 2)
    assert again["support_x"][:, 0, 0].tolist() == list(range(10))


def test_task_sampler_classes_and_agreement_with_model_evaluate():
    task_sampler = getattr(metakeras.tasks, "TaskSampler", None)
    if task_sampler is None:
        pytest.skip("metakeras.tasks.TaskSampler is not available")
    rng = np.random.default_rng(12)
    centers = rng.normal(size=(8, 4)) * 3
    y = np.repeat(np.arange(8), 10)
    x = (centers[y] + rng.normal(size=(80, 4))).astype("float32")

    def sampler():
        return task_sampler(
            x, y, ways=3, shots=2, queries=3, meta_batch_size=4, steps=2, seed=0
        )

    model = trained_classifier(inner_steps=1)
    results = evaluate_episodes(model, sampler(), episodes=8, inner_steps=1)
    expected = np.concatenate([sampler()[0]["classes"], sampler()[1]["classes"]])
    assert results.per_episode["classes"].tolist() == [tuple(c) for c in expected]
    # One pass (2 batches x 4 tasks) is what model.evaluate scores too.
    fixed = task_sampler(
        x,
        y,
        ways=3,
        shots=2,
        queries=3,
        meta_batch_size=4,
        steps=2,
        seed=0,
        resample=False,
    )
    logs = model.evaluate(fixed, verbose=0, return_dict=True)
    assert results.mean("accuracy")[0] == pytest.approx(logs["accuracy"], abs=1e-6)
    assert results.mean("log_loss")[0] == pytest.approx(logs["loss"], rel=1e-4)


def test_sources_that_cannot_provide_enough_episodes():
    fixed = EpisodeSource(batches=2, tasks=3, resample=False)
    model = PreparedModel({None: np.zeros((10, 12, 3))})
    with pytest.raises(ValueError, match=r"same 6 episodes on every pass.*episodes<=6"):
        evaluate_episodes(model, fixed, episodes=7)
    assert evaluate_episodes(model, fixed, episodes=6).episodes == 6
    episodes = indexed_episodes(4)
    with pytest.raises(ValueError, match=r"holds 4 episodes, fewer than episodes=5"):
        evaluate_episodes(model, episodes, episodes=5)
    with pytest.raises(ValueError, match=r"`tasks` must be a keras.utils.PyDataset"):
        evaluate_episodes(model, [1, 2, 3], episodes=5)
    with pytest.raises(ValueError, match=r"missing key\(s\) \['query_y'\]"):
        evaluate_episodes(model, {k: v for k, v in episodes.items() if k != "query_y"})


def test_collected_episodes_give_the_same_results_as_the_source():
    model = trained_regressor(inner_steps=1)

    def source():
        return SinusoidTasks(shots=5, queries=5, meta_batch_size=4, steps=2, seed=3)

    from_source = evaluate_episodes(model, source(), episodes=10)
    frozen = collect_episodes(source(), episodes=10)
    assert frozen["support_x"].shape == (10, 5, 1)
    from_arrays = evaluate_episodes(model, frozen, episodes=10)
    pd.testing.assert_frame_equal(from_source.per_episode, from_arrays.per_episode)


@pytest.mark.parametrize("episodes", [0, -3, 2.5, True, "600"])
def test_invalid_episodes(episodes):
    model = PreparedModel({None: np.zeros((4, 12, 3))})
    with pytest.raises(ValueError, match=r"`episodes` must be a positive integer"):
        evaluate_episodes(model, indexed_episodes(4), episodes=episodes)


def test_auto_episodes_scores_a_whole_batch_and_600_from_a_source():
    episodes = indexed_episodes(7, ways=3, queries=2)
    probabilities = np.random.default_rng(5).dirichlet(np.ones(3), size=(7, 6))
    model = PreparedModel({None: probabilities})
    assert evaluate_episodes(model, episodes, verbose=0).episodes == 7
    source = EpisodeSource(batches=200, tasks=3, ways=3)
    labels = np.random.default_rng(6).dirichlet(np.ones(3), size=(600, 12))
    assert (
        evaluate_episodes(PreparedModel({None: labels}), source, verbose=0).episodes
        == 600
    )
    # A source with fewer distinct episodes than 600 (one, here) is scored
    # whole, with a warning; an explicit count still asks for that many.
    one = EpisodeSource(batches=1, tasks=1, ways=3, resample=False)
    with pytest.warns(UserWarning, match=r"same 1 episodes on every pass.*scored"):
        result = evaluate_episodes(PreparedModel({None: labels[:1]}), one, verbose=0)
    assert result.episodes == 1
    with pytest.raises(ValueError, match=r"same 1 episodes on every pass"):
        evaluate_episodes(PreparedModel({None: labels}), one, episodes=600)
