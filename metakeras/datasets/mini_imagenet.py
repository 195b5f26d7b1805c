"""mini-ImageNet (Vinyals et al., 2016) from files already on disk."""

import os
import pickle

import numpy as np

from metakeras.datasets import _files
from metakeras.datasets.image_folder import ImageFolder

SPLITS = ("train", "val", "test")
PICKLE_NAME = "mini-imagenet-cache-{split}.pkl"


def load_data(path=None, image_size=None):
    """Loads mini-ImageNet's train / val / test class splits from disk.

    mini-ImageNet is 100 ImageNet classes of 600 images at 84x84, split by
    class into 64 train, 16 validation and 20 test classes (Ravi &
    Larochelle, 2017). ImageNet's terms of access do not allow metakeras to
    download it, so it reads one of the two common layouts you already have:

    - pickles: `mini-imagenet-cache-{train,val,test}.pkl`, each a dict with
      `"image_data"` (uint8 `(N, 84, 84, 3)`) and `"class_dict"`
      (`{class name: [indices into image_data]}`). Only load pickles from a
      source you trust: unpickling can run code.
    - folders: `train/`, `val/`, `test/`, each with one sub-folder of images
      per class. These are read lazily (`ImageFolder`).

    Args:
        path: folder holding either layout. Defaults to `None`
            (`$METAKERAS_DATA/mini-imagenet`, `$METAKERAS_DATA/mini_imagenet`
            or `$METAKERAS_DATA`).
        image_size: for the folder layout, the `(height, width)` or int size
            images are resized to. Defaults to `None` (84 x 84 expected as
            stored). The pickles are returned at their stored size.

    Returns:
        `(x_train, y_train), (x_val, y_val), (x_test, y_test), info`.

        - `x_*`: uint8 channels-first `(N, 3, H, W)`: a NumPy array (a
            transposed view of the pickle's `image_data`, no copy) or an
            `ImageFolder`. `TaskSampler` scales uint8 to `[0, 1]`.
        - `y_*`: int64 class ids, unique across the splits (train classes
            first, then val, then test; sorted by name within a split).
        - `info`: dict with `class_names` (the name of each class id),
            `layout` (`"pickle"` or `"folder"`) and `files` (what was read).

    Raises:
        OSError: if no layout is found at `path`.
        ValueError: if a pickle is unreadable or does not hold the expected
            dict, or a class index is out of range.

    Example:

    ```python
    (x_train, y_train), _, (x_test, y_test), info = load_data("~/mini-imagenet")
    sampler = metakeras.tasks.TaskSampler(x_train, y_train, ways=5, shots=1)
    ```
    """
    root = _find_root(path)
    pickles = [os.path.join(root, PICKLE_NAME.format(split=s)) for s in SPLITS]
    if all(os.path.isfile(p) for p in pickles):
        splits = [_read_pickle(p) for p in pickles]
        layout, files = "pickle", pickles
    else:
        folders = [os.path.join(root, s) for s in SPLITS]
        if not all(os.path.isdir(f) for f in folders):
            raise FileNotFoundError(
                f"No mini-ImageNet data in {root!r}: expected the files "
                f"{[os.path.basename(p) for p in pickles]} or the folders "
                f"{list(SPLITS)} with one sub-folder per class."
            )
        splits = []
        for folder in folders:
            images = ImageFolder(folder, image_size=image_size, color_mode="rgb")
            splits.append((images, images.labels, images.class_names))
        layout, files = "folder", folders
    result, class_names, offset = [], [], 0
    for x, y, names in splits:
        result.append((x, (y + offset).astype("int64")))
        class_names.extend(names)
        offset += len(names)
    info = {"class_names": class_names, "layout": layout, "files": files}
    return result[0], result[1], result[2], info


def _find_root(path):
    if path is not None:
        root = os.path.expanduser(os.fspath(path))
        if not os.path.isdir(root):
            raise FileNotFoundError(
                f"mini-ImageNet `path` {root!r} is not a directory."
            )
        return root
    for root in _files.data_roots("mini-imagenet", "mini_imagenet"):
        if os.path.isdir(root):
            return root
    raise FileNotFoundError(
        "mini-ImageNet is not downloaded automatically (ImageNet terms of "
        "access). Pass `path=` to a folder with mini-imagenet-cache-"
        f"{{train,val,test}}.pkl or train/val/test class folders, or set "
        f"${_files.DATA_ENV}."
    )


def _read_pickle(path):
    try:
        with open(path, "rb") as f:
            data = pickle.load(f)
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError) as error:
        raise ValueError(
            f"Could not unpickle {path!r} ({error!r}); expected a dict with "
            "'image_data' and 'class_dict'."
        ) from error
    if not isinstance(data, dict) or not {"image_data", "class_dict"} <= set(data):
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ValueError(
            f"{path!r} must hold a dict with keys 'image_data' and 'class_dict'; "
            f"found {keys}."
        )
    images = np.asarray(data["image_data"])
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(
            f"{path!r}: 'image_data' must be uint8 (N, H, W, 3); found "
            f"{images.dtype} {images.shape}."
        )
    names = sorted(data["class_dict"])
    labels = np.full(len(images), -1, dtype="int64")
    for label, name in enumerate(names):
        indices = np.asarray(data["class_dict"][name], dtype="int64")
        if indices.size and (indices.min() < 0 or indices.max() >= len(images)):
            raise ValueError(
                f"{path!r}: class {name!r} lists indices outside [0, {len(images)})."
            )
        labels[indices] = label
    keep = labels >= 0
    x = images.transpose(0, 3, 1, 2)
    if not keep.all():
        x, labels = x[keep], labels[keep]
    return x, labels, names
