"""digits, ImageFolder and mini-ImageNet loaders on data the tests build."""

import pickle

import numpy as np
import pytest
from PIL import Image

import metakeras
from metakeras.datasets import ImageFolder, digits, mini_imagenet
from metakeras.tasks import TaskSampler


def test_datasets_are_exported():
    assert metakeras.datasets.digits is digits
    assert {"ImageFolder", "digits", "mini_imagenet", "omniglot"} <= set(
        metakeras.datasets.__all__
    )


def test_digits_load_data():
    x, y = digits.load_data()
    assert x.shape == (1797, 8, 8) and x.dtype == np.float32
    assert y.shape == (1797,) and y.dtype == np.int64
    assert x.min() == 0.0 and x.max() == 1.0
    assert sorted(np.unique(y).tolist()) == list(range(10))


def write_folder(root, classes, count=3, size=(9, 7), seed=0, mode="RGB"):
    rng = np.random.default_rng(seed)
    arrays = {}
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(count):
            shape = (size[0], size[1], 3) if mode == "RGB" else size
            pixels = (rng.random(shape) * 255).astype("uint8")
            Image.fromarray(pixels, mode=mode).save(root / name / f"{i:02d}.png")
            arrays[(name, i)] = pixels
    return arrays


def test_image_folder_reads_lazily_channels_first(tmp_path):
    pixels = write_folder(tmp_path, ["b_class", "a_class"], count=3)
    (tmp_path / "a_class" / "99.png").write_bytes(b"not a png")  # corrupt, last
    (tmp_path / "empty").mkdir()
    folder = ImageFolder(tmp_path)
    assert folder.class_names == ["a_class", "b_class"]
    assert folder.labels.tolist() == [0, 0, 0, 0, 1, 1, 1]
    assert folder.shape == (7, 3, 9, 7) and len(folder) == 7
    # Only indexed images are decoded: the corrupt one is never touched here.
    batch = folder[np.array([4, 0])]
    assert batch.dtype == np.uint8 and batch.shape == (2, 3, 9, 7)
    np.testing.assert_array_equal(batch[0], pixels[("b_class", 0)].transpose(2, 0, 1))
    np.testing.assert_array_equal(folder[1], pixels[("a_class", 1)].transpose(2, 0, 1))
    with pytest.raises(ValueError, match=r"Could not read image .*99\.png"):
        folder[3]


def test_image_folder_pickles_for_worker_processes(tmp_path):
    write_folder(tmp_path, ["a", "b"], count=2)
    folder = ImageFolder(tmp_path, image_size=5)
    first = folder[np.arange(4)]
    copy = pickle.loads(pickle.dumps(folder))
    np.testing.assert_array_equal(copy[np.arange(4)], first)


def test_image_folder_resizes_inverts_and_converts(tmp_path):
    pixels = write_folder(tmp_path, ["x", "y"], count=2, mode="L")
    folder = ImageFolder(
        tmp_path, image_size=(4, 5), color_mode="grayscale", invert=True
    )
    assert folder.shape == (4, 1, 4, 5)
    assert folder.load().shape == (4, 1, 4, 5)
    same = ImageFolder(tmp_path, color_mode="grayscale", invert=True, cache=False)
    np.testing.assert_array_equal(same[0][0], 255 - pixels[("x", 0)])


def test_image_folder_errors(tmp_path):
    with pytest.raises(OSError, match="does not exist"):
        ImageFolder(tmp_path / "missing")
    with pytest.raises(ValueError, match="holds no class sub-folders with images"):
        ImageFolder(tmp_path)
    write_folder(tmp_path, ["a"])
    with pytest.raises(ValueError, match="`color_mode` must be one of"):
        ImageFolder(tmp_path, color_mode="cmyk")
    with pytest.raises(ValueError, match="`image_size` must be positive"):
        ImageFolder(tmp_path, image_size=(0, 3))


def write_pickles(root, classes_per_split=(3, 2, 2), per_class=4, size=6):
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for split, count in zip(mini_imagenet.SPLITS, classes_per_split):
        images = (rng.random((count * per_class, size, size, 3)) * 255).astype("uint8")
        order = rng.permutation(len(images))
        class_dict = {
            f"n{split}{c}": order[c * per_class : (c + 1) * per_class].tolist()
            for c in range(count)
        }
        with open(root / mini_imagenet.PICKLE_NAME.format(split=split), "wb") as f:
            pickle.dump({"image_data": images, "class_dict": class_dict}, f)
    return root


def test_mini_imagenet_pickles(tmp_path):
    root = write_pickles(tmp_path / "mini")
    (xtr, ytr), (xva, yva), (xte, yte), info = mini_imagenet.load_data(root)
    assert info["layout"] == "pickle"
    assert xtr.shape == (12, 3, 6, 6) and xtr.dtype == np.uint8
    assert sorted(set(ytr.tolist())) == [0, 1, 2]
    assert sorted(set(yva.tolist())) == [3, 4]
    assert sorted(set(yte.tolist())) == [5, 6]
    assert info["class_names"][:3] == ["ntrain0", "ntrain1", "ntrain2"]
    with open(root / "mini-imagenet-cache-train.pkl", "rb") as f:
        raw = pickle.load(f)
    first = raw["class_dict"]["ntrain1"][0]
    np.testing.assert_array_equal(
        xtr[first], raw["image_data"][first].transpose(2, 0, 1)
    )
    assert ytr[first] == 1
    sampler = TaskSampler(xtr, ytr, ways=3, shots=1, queries=2, seed=0)
    assert sampler[0]["support_x"].shape == (32, 3, 3, 6, 6)
    assert sampler[0]["support_x"].max() <= 1.0


def test_mini_imagenet_folders_and_env(tmp_path, monkeypatch):
    root = tmp_path / "data" / "mini-imagenet"
    for split, classes in zip(mini_imagenet.SPLITS, (["a", "b"], ["c"], ["d"])):
        write_folder(root / split, classes, count=2, size=(8, 8))
    monkeypatch.setenv("METAKERAS_DATA", str(tmp_path / "data"))
    (xtr, ytr), (xva, yva), (xte, yte), info = mini_imagenet.load_data(image_size=4)
    assert info["layout"] == "folder"
    assert isinstance(xtr, ImageFolder) and xtr.shape == (4, 3, 4, 4)
    assert ytr.tolist() == [0, 0, 1, 1] and yva.tolist() == [2, 2]
    assert yte.tolist() == [3, 3]
    assert info["class_names"] == ["a", "b", "c", "d"]


def test_mini_imagenet_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("METAKERAS_DATA", raising=False)
    with pytest.raises(OSError, match="not downloaded automatically"):
        mini_imagenet.load_data()
    with pytest.raises(OSError, match="is not a directory"):
        mini_imagenet.load_data(tmp_path / "missing")
    with pytest.raises(OSError, match="No mini-ImageNet data"):
        mini_imagenet.load_data(tmp_path)
    root = write_pickles(tmp_path / "bad")
    (root / "mini-imagenet-cache-val.pkl").write_bytes(b"garbage")
    with pytest.raises(
        ValueError, match=r"Could not unpickle .*mini-imagenet-cache-val"
    ):
        mini_imagenet.load_data(root)
    with open(root / "mini-imagenet-cache-val.pkl", "wb") as f:
        pickle.dump({"images": 1}, f)
    with pytest.raises(
        ValueError, match=r"keys 'image_data' and 'class_dict'; found \['images'\]"
    ):
        mini_imagenet.load_data(root)
    with open(root / "mini-imagenet-cache-val.pkl", "wb") as f:
        pickle.dump(
            {
                "image_data": np.zeros((2, 6, 6, 3), "uint8"),
                "class_dict": {"c": [0, 5]},
            },
            f,
        )
    with pytest.raises(ValueError, match=r"class 'c' lists indices outside \[0, 2\)"):
        mini_imagenet.load_data(root)
