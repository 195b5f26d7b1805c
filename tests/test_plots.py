"""Plots of evaluations and training runs: valid, non-trivial PNG files."""

import os

import keras
import numpy as np
import pytest
from conftest import PreparedModel, indexed_episodes
from matplotlib.figure import Figure
from PIL import Image

from metakeras import plots
from metakeras.evaluation import compare_models, evaluate_episodes


@pytest.fixture
def classification_results():
    rng = np.random.default_rng(0)
    predictions = {
        s: rng.dirichlet(np.ones(3) * (1 + s), size=(30, 12)) for s in range(4)
    }
    model = PreparedModel(predictions, inner_steps=3, name="fake_maml")
    episodes = indexed_episodes(30, ways=3, queries=4)
    return evaluate_episodes(model, episodes, episodes=None)


def assert_png(path, min_bytes=5_000):
    assert os.path.isfile(path)
    assert os.path.getsize(path) > min_bytes
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.verify()
    with Image.open(path) as image:
        width, height = image.size
        assert width >= 300 and height >= 300
        # Not a blank canvas: a plot has many distinct colours.
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 20)) > 20
    leftovers = [f for f in os.listdir(os.path.dirname(path)) if f.startswith(".tmp")]
    assert leftovers == []


def test_episode_distribution(tmp_path, classification_results):
    path = plots.plot_episode_distribution(
        classification_results, tmp_path / "distribution.png"
    )
    assert_png(path)
    before = plots.plot_episode_distribution(
        classification_results, tmp_path / "before.png", metric="f1", steps=0
    )
    assert_png(before)
    with pytest.raises(ValueError, match=r"`steps`=9 was not evaluated"):
        plots.plot_episode_distribution(classification_results, steps=9)


def test_adaptation_curve_for_one_and_several_models(tmp_path, classification_results):
    assert_png(plots.plot_adaptation_curve(classification_results, tmp_path / "a.png"))
    rng = np.random.default_rng(1)
    models = {
        name: PreparedModel(
            {s: rng.dirichlet(np.ones(3), size=(10, 6)) for s in range(3)},
            inner_steps=2,
        )
        for name in ("maml", "fomaml")
    }
    comparison = compare_models(
        models, indexed_episodes(10, queries=2), episodes=None, metrics=["accuracy"]
    )
    assert_png(plots.plot_adaptation_curve(comparison, tmp_path / "b.png"))
    flat = PreparedModel({None: rng.dirichlet(np.ones(3), size=(10, 6))})
    single = evaluate_episodes(flat, indexed_episodes(10, queries=2), episodes=None)
    with pytest.raises(ValueError, match="no model with inner steps"):
        plots.plot_adaptation_curve(single)


def test_training_history(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse", metrics=["mae"])
    x = np.random.default_rng(2).normal(size=(32, 3)).astype("float32")
    history = model.fit(
        x, x.sum(1), validation_split=0.25, epochs=4, batch_size=8, verbose=0
    )
    assert_png(plots.plot_history(history, tmp_path / "history.png"))
    figure = plots.plot_history(history.history, metrics="loss")
    assert isinstance(figure, Figure) and len(figure.axes) == 1
    with pytest.raises(ValueError, match=r"Unknown metric\(s\) \['acc'\]. Valid"):
        plots.plot_history(history, metrics=["acc"])
    with pytest.raises(ValueError, match="no logged epochs"):
        plots.plot_history({})


def test_confusion_matrix(tmp_path, classification_results):
    path = plots.plot_confusion_matrix(
        classification_results, tmp_path / "confusion.png", normalize=True
    )
    assert_png(path)
    assert_png(
        plots.plot_confusion_matrix(
            classification_results.confusion_matrices[0],
            tmp_path / "matrix.png",
            labels=["cat", "dog", "owl"],
        )
    )
    with pytest.raises(ValueError, match="square confusion matrix"):
        plots.plot_confusion_matrix(np.zeros((2, 3)))


def test_confusion_matrix_title_fits_the_figure(classification_results):
    classification_results.name = "a model with a rather long name"
    fig = plots.plot_confusion_matrix(classification_results, normalize=True)
    fig.canvas.draw()
    (ax,) = [a for a in fig.axes if a.get_title()]
    box = ax.title.get_window_extent()
    assert "row-normalized" in ax.get_title()
    assert box.x0 >= 0 and box.x1 <= fig.bbox.width, (box, fig.bbox)
    assert box.y1 <= fig.bbox.height


def test_plots_reject_bad_paths_and_inputs(tmp_path, classification_results):
    with pytest.raises(ValueError, match=r"`path` must name a .png file"):
        plots.plot_episode_distribution(classification_results, tmp_path / "x.jpg")
    with pytest.raises(ValueError, match="must be an EpisodeResults"):
        plots.plot_episode_distribution({"accuracy": [0.5]})
    assert not os.listdir(tmp_path)
