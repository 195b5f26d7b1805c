"""Datasets as the `metakeras` command sees them: where they are, their splits.

Each known dataset has a kind (classification or regression), the splits the
command can train and evaluate on, and a way to find it on disk. The class
splits are fixed here, so `metakeras train` and `metakeras evaluate` always
agree on which classes are unseen:

- `omniglot`: `train` = the 964 characters of the 30 background alphabets,
  `test` = the 659 characters of the 20 evaluation alphabets (Lake et al.,
  2015). Training episodes add rotated copies (x4 classes) unless
  `rotations = false`.
- `digits`: scikit-learn's 8x8 digits, split by class with
  `split_classes(labels, fractions=(0.5, 0.5), seed=0)`: 5 digits for
  `train` and the other 5 for `test`.
- `sinusoid`: the MAML paper's regression family; `train` and `test` draw
  different tasks (seeds `seed` and `seed + 10000`).
- `image-folder`: a folder with one sub-folder of images per class, split by
  class with `split_classes(labels, fractions=(0.6, 0.2, 0.2), seed=0)` into
  `train`, `val` and `test`.
- `mini-imagenet`: the 64 / 16 / 20 class `train` / `val` / `test` split of
  Ravi & Larochelle (2017), read from files you already have.
"""

import os

import numpy as np

from metakeras.cli._errors import CLIError
from metakeras.datasets import _files

DATASETS = ("omniglot", "digits", "sinusoid", "image-folder", "mini-imagenet")
REGRESSION = ("sinusoid",)
SPLITS = {
    "omniglot": ("train", "test"),
    "digits": ("train", "test"),
    "sinusoid": ("train", "test"),
    "image-folder": ("train", "val", "test"),
    "mini-imagenet": ("train", "val", "test"),
}
DIGITS_FRACTIONS = (0.5, 0.5)
IMAGE_FOLDER_FRACTIONS = (0.6, 0.2, 0.2)
SPLIT_SEED = 0
SINUSOID_TEST_SEED_OFFSET = 10_000
_OMNIGLOT_FILES = ("images_background", "images_evaluation")
_MINI_IMAGENET_PICKLES = tuple(
    f"mini-imagenet-cache-{split}.pkl" for split in ("train", "val", "test")
)
_HOW_TO_GET = {
    "omniglot": (
        "download images_background.zip and images_evaluation.zip from "
        "https://github.com/brendenlake/omniglot (folder python/) into a folder "
        "and pass it with --data-dir, or set METAKERAS_DATA to a folder holding "
        "omniglot/ with them, or rerun with --download to fetch them into "
        "~/.keras/datasets/omniglot/"
    ),
    "mini-imagenet": (
        "mini-ImageNet is not downloaded automatically (ImageNet terms of "
        "access): put mini-imagenet-cache-{train,val,test}.pkl, or train/, "
        "val/ and test/ folders of class sub-folders, in a folder and pass it "
        "with --data-dir, or set METAKERAS_DATA to a folder holding "
        "mini-imagenet/"
    ),
    "image-folder": (
        "pass --data-dir pointing at a folder with one sub-folder of images per class"
    ),
}


def is_classification(dataset):
    """Whether `dataset` holds classification (not regression) tasks."""
    return dataset not in REGRESSION


def check_split(dataset, split):
    """Raises a `CLIError` unless `split` is one of `dataset`'s splits."""
    if split not in SPLITS[dataset]:
        raise CLIError(
            f"dataset {dataset!r} has no split {split!r}; valid choices: "
            f"{', '.join(SPLITS[dataset])}."
        )


def locate(dataset, data_dir=None):
    """Where a dataset is on disk.

    Args:
        dataset: a name from `DATASETS`.
        data_dir: a folder given by the user (`--data-dir`), searched first,
            as is and with the dataset's name appended. Defaults to `None`.

    Returns:
        A tuple `(status, where)`: `status` is `"built-in"` (digits, shipped
        with scikit-learn), `"generated"` (sinusoid), `"present"` or
        `"missing"`; `where` is the folder found (or `"$METAKERAS_DATA"` /
        `"~/.keras"` style text), or how to get the data when missing.
    """
    if dataset == "digits":
        return "built-in", "scikit-learn (sklearn.datasets.load_digits)"
    if dataset == "sinusoid":
        return "generated", "drawn on the fly (no files)"
    if dataset == "image-folder":
        if data_dir is None:
            return "missing", _HOW_TO_GET["image-folder"]
        folder = os.path.expanduser(data_dir)
        if _has_class_folders(folder):
            return "present", folder
        return "missing", (
            f"{folder!r} holds no class sub-folders; " + _HOW_TO_GET["image-folder"]
        )
    for folder in _candidates(dataset, data_dir):
        if _holds(dataset, folder):
            return "present", folder
    return "missing", _HOW_TO_GET[dataset]


def require(dataset, data_dir=None, download=False):
    """The folder to read `dataset` from, or `None` to let its loader download.

    Raises:
        CLIError: (exit code 1) if the dataset is not on disk and cannot or
            may not be downloaded; the message says what to get and where to
            put it.
    """
    status, where = locate(dataset, data_dir)
    if status == "present":
        return where
    if status in ("built-in", "generated"):
        return None
    if dataset == "omniglot" and download:
        return None
    searched = [] if dataset == "image-folder" else _candidates(dataset, data_dir)
    looked = f" (looked in: {', '.join(searched)})" if searched else ""
    raise CLIError(
        f"dataset {dataset!r} was not found{looked}. To get it: {where}.", code=1
    )


def classification_split(config, split):
    """Loads the examples and classes of one split of a classification dataset.

    Args:
        config: the resolved configuration (`dataset`, `data_dir`,
            `download`, `image_size`, `color_mode`).
        split: a split name valid for the dataset.

    Returns:
        A tuple `(x, y, classes)` for `metakeras.tasks.TaskSampler`: the
        examples, their labels, and the labels this split may draw.
    """
    dataset = config["dataset"]
    check_split(dataset, split)
    folder = require(dataset, config.get("data_dir"), config.get("download", False))
    image_size = config.get("image_size")
    if dataset == "omniglot":
        from metakeras.datasets import omniglot

        background, evaluation, _ = omniglot.load_data(
            path=folder, image_size=image_size or 28
        )
        x, y = background if split == "train" else evaluation
        return x, y, None
    if dataset == "digits":
        from metakeras.datasets import digits
        from metakeras.tasks import split_classes

        x, y = digits.load_data()
        if image_size is not None and image_size != x.shape[-1]:
            x = _resize(x, image_size)
        train, test = split_classes(y, fractions=DIGITS_FRACTIONS, seed=SPLIT_SEED)
        return x, y, train if split == "train" else test
    if dataset == "image-folder":
        from metakeras.datasets import ImageFolder
        from metakeras.tasks import split_classes

        images = ImageFolder(
            folder, image_size=image_size, color_mode=config.get("color_mode", "rgb")
        )
        parts = split_classes(
            images.labels, fractions=IMAGE_FOLDER_FRACTIONS, seed=SPLIT_SEED
        )
        return images, images.labels, parts[SPLITS[dataset].index(split)]
    from metakeras.datasets import mini_imagenet

    parts = mini_imagenet.load_data(path=folder, image_size=image_size)[:3]
    x, y = parts[SPLITS[dataset].index(split)]
    return x, y, None


def _resize(x, size):
    """Resizes `(N, H, W)` float images to `(N, size, size)` (bilinear)."""
    from PIL import Image

    out = np.empty((len(x), size, size), dtype="float32")
    for i, image in enumerate(x):
        resized = Image.fromarray(image).resize((size, size), Image.BILINEAR)
        out[i] = np.asarray(resized)
    return out


def _candidates(dataset, data_dir):
    names = {
        "omniglot": ("omniglot",),
        "mini-imagenet": ("mini-imagenet", "mini_imagenet"),
    }
    found = []
    if data_dir is not None:
        root = os.path.expanduser(data_dir)
        found += [os.path.join(root, n) for n in names[dataset]] + [root]
    found += _files.data_roots(*names[dataset])
    if dataset == "omniglot":
        found.append(os.path.join(_files.keras_home(), "datasets", "omniglot"))
    return found


def _holds(dataset, folder):
    if not os.path.isdir(folder):
        return False
    if dataset == "omniglot":
        return all(
            os.path.isfile(os.path.join(folder, name + ".zip"))
            or os.path.isdir(os.path.join(folder, name))
            for name in _OMNIGLOT_FILES
        )
    pickles = all(
        os.path.isfile(os.path.join(folder, name)) for name in _MINI_IMAGENET_PICKLES
    )
    folders = all(
        os.path.isdir(os.path.join(folder, split)) for split in ("train", "val", "test")
    )
    return pickles or folders


def _has_class_folders(folder):
    """Whether `folder` has a sub-folder holding at least one image file."""
    from metakeras.datasets.image_folder import IMAGE_EXTENSIONS

    if not os.path.isdir(folder):
        return False
    for entry in os.scandir(folder):
        if entry.is_dir() and any(
            f.is_file() and f.name.lower().endswith(IMAGE_EXTENSIONS)
            for f in os.scandir(entry.path)
        ):
            return True
    return False
