"""A lazily read folder of images with one sub-folder per class."""

import os
import threading

import numpy as np

from metakeras._checks import check_choice, is_int

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
_COLOR_MODES = {"grayscale": ("L", 1), "rgb": ("RGB", 3)}


class ImageFolder:
    """Images in `directory/<class name>/<image file>`, read on demand.

    The folder is scanned once (class sub-folders in sorted order, image
    files in sorted order within each); pixels are only decoded when
    examples are indexed, with PIL, converted to `color_mode`, resized to
    `image_size` (LANCZOS) and kept in memory when `cache=True`. It behaves
    like a read-only uint8 array of shape `(examples, C, H, W)`
    (channels-first), so `metakeras.tasks.TaskSampler` takes it as `x` with
    `labels` as `y`.

    Args:
        directory: the root folder; each sub-folder is a class.
        image_size: `(height, width)`, or an int for square images. Defaults
            to `None` (the size of the first image; every image must match).
        color_mode: `"grayscale"` (1 channel) or `"rgb"` (3 channels).
            Defaults to `"rgb"`.
        invert: store `255 - pixel` (dark ink on white becomes bright ink on
            black). Defaults to `False`.
        cache: keep decoded images in memory. Defaults to `True`.

    Attributes:
        class_names: sorted sub-folder names; `labels` index them.
        labels: int64 array, the class of each example.
        paths: the image file of each example.

    Raises:
        OSError: if `directory` does not exist.
        ValueError: if it holds no class sub-folders with images, or for an
            invalid `image_size` or `color_mode`.

    Example:

    ```python
    folder = ImageFolder("flowers/", image_size=84)
    batch = folder[np.array([0, 5, 9])]  # uint8, (3, 3, 84, 84)
    ```
    """

    def __init__(
        self, directory, image_size=None, color_mode="rgb", invert=False, cache=True
    ):
        check_choice("color_mode", color_mode, sorted(_COLOR_MODES))
        self.directory = os.fspath(directory)
        self.image_size = _check_image_size(image_size)
        self.color_mode = color_mode
        self.invert = bool(invert)
        self.cache = bool(cache)
        self.class_names, self.labels, self.paths = _scan(self.directory)
        if self.image_size is None:
            self.image_size = self._read(0).shape[-2:]
        self._images = None
        self._loaded = None
        self._lock = threading.Lock()

    @property
    def shape(self):
        """`(examples, channels, height, width)`, as a NumPy array's."""
        channels = _COLOR_MODES[self.color_mode][1]
        return (len(self.paths), channels, *self.image_size)

    @property
    def dtype(self):
        """Always `uint8`: pixels are decoded to 0-255."""
        return np.dtype("uint8")

    @property
    def ndim(self):
        """Always 4: examples, channels, height, width."""
        return 4

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        if isinstance(index, (int, np.integer)):
            return self[np.array([index])][0]
        indices = np.arange(len(self))[index]
        if not self.cache:
            return _stack([self._read(i) for i in indices], self.shape[1:])
        with self._lock:
            if self._images is None:
                self._images = np.zeros(self.shape, dtype="uint8")
                self._loaded = np.zeros(len(self), dtype=bool)
        missing = np.unique(indices[~self._loaded[indices]])
        for i in missing:
            self._images[i] = self._read(i)
            self._loaded[i] = True
        return self._images[indices]

    def __getstate__(self):
        # Worker processes (`use_multiprocessing=True` with spawn) get the
        # file list only: a lock cannot be pickled, and they decode what
        # they draw themselves.
        state = self.__dict__.copy()
        state.update(_images=None, _loaded=None, _lock=None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def load(self):
        """Decodes every image now.

        Returns:
            The uint8 array `(N, C, H, W)` of all images.
        """
        return self[np.arange(len(self))]

    def _read(self, i):
        from PIL import Image, UnidentifiedImageError

        path = self.paths[i]
        mode, _ = _COLOR_MODES[self.color_mode]
        try:
            with Image.open(path) as image:
                image = image.convert(mode)
                if self.image_size is not None and image.size != (
                    self.image_size[1],
                    self.image_size[0],
                ):
                    image = image.resize(
                        (self.image_size[1], self.image_size[0]), Image.LANCZOS
                    )
                pixels = np.asarray(image, dtype="uint8")
        except (UnidentifiedImageError, OSError) as error:
            raise ValueError(
                f"Could not read image {path!r}: {error}. Expected an image file "
                f"({', '.join(IMAGE_EXTENSIONS)})."
            ) from error
        pixels = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
        if self.invert:
            pixels = 255 - pixels
        return pixels


def _stack(images, shape):
    out = np.empty((len(images), *shape), dtype="uint8")
    for i, image in enumerate(images):
        out[i] = image
    return out


def _check_image_size(image_size):
    if image_size is None:
        return None
    if is_int(image_size):
        image_size = (image_size, image_size)
    try:
        height, width = (int(v) for v in image_size)
    except (TypeError, ValueError):
        raise ValueError(
            "`image_size` must be None, an int or a (height, width) pair of "
            f"positive ints. Received: image_size={image_size!r}"
        ) from None
    if height < 1 or width < 1:
        raise ValueError(
            f"`image_size` must be positive. Received: image_size={tuple(image_size)!r}"
        )
    return (height, width)


def _scan(directory):
    if not os.path.isdir(directory):
        raise FileNotFoundError(
            f"Image folder {directory!r} does not exist or is not a directory."
        )
    class_names = sorted(
        entry.name
        for entry in os.scandir(directory)
        if entry.is_dir() and not entry.name.startswith(".")
    )
    labels, paths, used = [], [], []
    for name in class_names:
        root = os.path.join(directory, name)
        files = sorted(
            entry.name
            for entry in os.scandir(root)
            if entry.is_file() and entry.name.lower().endswith(IMAGE_EXTENSIONS)
        )
        if not files:
            continue
        labels.extend([len(used)] * len(files))
        paths.extend(os.path.join(root, f) for f in files)
        used.append(name)
    if not used:
        raise ValueError(
            f"Image folder {directory!r} holds no class sub-folders with images; "
            "expected directory/<class name>/<image> with extensions "
            f"{IMAGE_EXTENSIONS}."
        )
    return used, np.asarray(labels, dtype="int64"), paths
