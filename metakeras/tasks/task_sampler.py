"""N-way K-shot episodes drawn from any labelled data."""

import numpy as np

from metakeras._checks import check_flag, check_positive_ints, preview, resolve_seed
from metakeras.tasks._augmentation import Augmentation
from metakeras.tasks._seeded import SeededTasks

_ROTATIONS = (0, 90, 180, 270)

# Above this many examples in the largest class, drawing one random key per
# example of every chosen class costs more than a per-class draw.
_MAX_PADDED_CLASS_SIZE = 2048


class TaskSampler(SeededTasks):
    """Meta-batches of N-way K-shot classification episodes from labelled data.

    Each episode draws `ways` classes from `classes`, then `shots + queries`
    distinct examples of each: the first `shots` form the support set, the
    rest the query set, so no example is in both. Labels are remapped to
    `0..ways-1` inside each episode; label `j` is the `j`-th class drawn.
    Every item is one meta-batch in the episode contract
    (`metakeras.tasks.episode`):

    - `support_x`: `(T, ways * shots, *features)` float32
    - `support_y`: `(T, ways * shots)` int64
    - `query_x`: `(T, ways * queries, *features)` float32
    - `query_y`: `(T, ways * queries)` int64
    - `classes`: `(T, ways)` int64; `classes[t, j]` indexes
      `sampler.class_labels`, the original label of episode label `j`.
    - `rotations`: `(T, ways)` int64 degrees, only when `rotations` is not
      `(0,)`; `rotations[t, j]` is the rotation of episode class `j`.

    Models read the four contract keys and ignore the others.

    Layout: an example of shape `(F,)` is a feature vector and stays as is.
    Images are `(H, W)` or channels-first `(C, H, W)`; `(H, W)` images get a
    channel axis, so batches are always channels-first `(C, H, W)`, the
    layout metakeras' convolutional learners use (`data_format=
    "channels_first"` is faster on the torch backend). uint8 inputs are
    scaled to `[0, 1]`; other dtypes are cast to float32 unchanged. Support
    and query sets are in class-major order (`support_y[t]` is
    `0,0,...,1,1,...`) unless `shuffle=True`.

    Batches are a pure function of `(seed, epoch, index)`, so any worker
    produces the same batch for the same index and a seeded run repeats
    exactly. With `resample=True` each epoch draws new episodes; with
    `False` every epoch sees the same episodes (a fixed validation or test
    set).

    Augmentation: `rotations=(0, 90, 180, 270)` makes each rotated copy of a
    class a class of its own (the usual Omniglot protocol), which multiplies
    the classes available to `ways`. `transform` is applied to every sampled
    image after rotation, as `transform(image, rng)` with the channels-first
    float32 image and a `numpy.random.Generator` seeded from
    `(seed, epoch, index)`; it must return an array of the same shape.

    `augmentation` takes Keras preprocessing layers (`RandomFlip`,
    `RandomRotation`, `RandomTranslation`, `RandomZoom`, `RandomCrop`, ...,
    or a `keras.Sequential` of them) and applies them in training mode to
    every episode's support images and, with `augment_queries=True` (the
    default), its query images, after `rotations` and `transform`. It is
    seeded like the episodes: the layer runs in a `keras.StatelessScope`
    that gives its `SeedGenerator`s states drawn from `(seed, epoch, index)`
    and leaves the layer unchanged, so the same seed gives the same augmented batches in any
    worker, process or order, and a different seed different ones. The
    layer is called once per episode, on the CPU: layers that draw per image
    (flip, rotation, translation, zoom) transform each image differently;
    `RandomCrop`, which draws one offset per call, crops all images of an
    episode alike. Images are channels-first; the layers' `data_format`
    (Keras's default `"channels_last"` unless given) is honoured by
    transposing around the call, and batches stay channels-first float32. A
    layer that changes the image size (`RandomCrop` to a smaller size)
    changes the size of the batches, and then needs `augment_queries=True`.

    Args:
        x: examples, `(num_examples, *features)`: a NumPy array, or an
            array-like with `shape`, `len` and integer-array indexing such as
            `metakeras.datasets.ImageFolder` (read lazily).
        y: class labels, `(num_examples,)`, integers or strings.
        ways: classes per episode (N). Defaults to `5`.
        shots: support examples per class (K). Defaults to `1`.
        queries: query examples per class (Q). Defaults to `15`.
        meta_batch_size: episodes per batch (T). Defaults to `32`.
        steps: batches per epoch. Defaults to `100`.
        classes: the original labels this sampler may draw, e.g. the
            meta-train split from `split_classes`. Defaults to `None` (every
            label in `y`).
        seed: integer seed. Defaults to `None` (a random seed, drawn once).
        resample: draw new episodes every epoch. Defaults to `True`.
        rotations: rotations in degrees, a subset of `(0, 90, 180, 270)`;
            each (class, rotation) pair is a separate class. Needs square
            images. Defaults to `(0,)` (no rotation).
        transform: `None` or a callable `transform(image, rng) -> image`
            applied to each sampled image. Defaults to `None`.
        augmentation: `None` or a Keras layer (e.g. `keras.Sequential([
            keras.layers.RandomFlip("horizontal"),
            keras.layers.RandomRotation(0.05)])`) applied to each episode's
            images. Needs images. Defaults to `None`.
        augment_queries: also augment the query images (`False`: only the
            support images). Defaults to `True`.
        shuffle: shuffle the order of examples inside each support and query
            set. Defaults to `False` (class-major order).
        **kwargs: `workers`, `use_multiprocessing`, `max_queue_size` of
            `keras.utils.PyDataset`.

    Raises:
        ValueError: for non-positive sizes, `x`/`y` of different lengths,
            NaN or infinite values in `x`, labels in `classes` that `y` does
            not hold, a class with fewer than `shots + queries` examples,
            `ways` above the number of classes, or invalid augmentation
            (`rotations`, `transform`, or an `augmentation` that is not a
            Keras layer or fails on the images).

    Example:

    >>> from metakeras.datasets import digits
    >>> x, y = digits.load_data()
    >>> sampler = TaskSampler(x, y, ways=5, shots=1, queries=5,
    ...                       meta_batch_size=4, classes=range(6), seed=0)
    >>> batch = sampler[0]
    >>> batch["support_x"].shape, batch["query_y"].shape
    ((4, 5, 1, 8, 8), (4, 25))
    """

    def __init__(
        self,
        x,
        y,
        ways=5,
        shots=1,
        queries=15,
        meta_batch_size=32,
        steps=100,
        classes=None,
        seed=None,
        resample=True,
        rotations=(0,),
        transform=None,
        shuffle=False,
        augmentation=None,
        augment_queries=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_positive_ints(
            ways=ways,
            shots=shots,
            queries=queries,
            meta_batch_size=meta_batch_size,
            steps=steps,
        )
        if ways < 2:
            raise ValueError(
                "`ways` must be at least 2: a 1-way episode has one class, so every "
                "query is trivially right and nothing is learned. Received: ways=1"
            )
        seed = resolve_seed(seed)
        check_flag("resample", resample, echo_name=False)
        check_flag("shuffle", shuffle, echo_name=False)
        check_flag("augment_queries", augment_queries, echo_name=False)
        if transform is not None and not callable(transform):
            raise ValueError(
                "`transform` must be None or a callable `transform(image, rng)`. "
                f"Received: {transform!r}"
            )
        self.x = _as_examples(x)
        self.y = _as_labels(y, len(self.x))
        self.ways = int(ways)
        self.shots = int(shots)
        self.queries = int(queries)
        self.meta_batch_size = int(meta_batch_size)
        self.steps = int(steps)
        self.seed = int(seed)
        self.resample = resample
        self.rotations = _check_rotations(rotations, self.x.shape)
        self.transform = transform
        self.shuffle = shuffle
        self.augmentation = augmentation
        self.augment_queries = augment_queries
        self._augment = _check_augmentation(augmentation, augment_queries, self.x.shape)
        self.epoch = 0
        self.class_labels, self._class_index, self._class_sizes = _index_classes(
            self.y, classes, self.shots + self.queries
        )
        self.classes = classes
        available = len(self.class_labels) * len(self.rotations)
        if self.ways > available:
            detail = (
                f"{len(self.class_labels)} classes x {len(self.rotations)} "
                f"rotations = {available} available"
                if len(self.rotations) > 1
                else f"{available} classes available"
            )
            raise ValueError(
                "`ways` must be <= the number of classes in `classes` "
                f"(got ways={self.ways}, {detail})."
            )

    @classmethod
    def from_dataframe(cls, dataframe, label_column, feature_columns=None, **kwargs):
        """Builds a sampler from a pandas DataFrame, one example per row.

        Args:
            dataframe: a `pandas.DataFrame`.
            label_column: name of the column holding the class labels.
            feature_columns: names of the numeric feature columns. Defaults
                to `None` (every column except `label_column`).
            **kwargs: the other `TaskSampler` arguments.

        Returns:
            A `TaskSampler` whose examples are float32 feature vectors.

        Raises:
            ValueError: if a column is missing or a feature column is not
                numeric.

        Example:

        >>> import pandas as pd
        >>> frame = pd.DataFrame({"a": range(20), "b": range(20),
        ...                       "label": [0, 1, 2, 3] * 5})
        >>> sampler = TaskSampler.from_dataframe(
        ...     frame, "label", ways=2, shots=2, queries=3, seed=0)
        >>> sampler[0]["support_x"].shape
        (32, 4, 2)
        """
        import pandas as pd

        if not isinstance(dataframe, pd.DataFrame):
            raise ValueError(
                "`dataframe` must be a pandas DataFrame. Received: "
                f"{type(dataframe).__name__}"
            )
        if label_column not in dataframe.columns:
            raise ValueError(
                f"`label_column`={label_column!r} is not a column of the DataFrame; "
                f"its columns are {list(dataframe.columns)}."
            )
        if feature_columns is None:
            feature_columns = [c for c in dataframe.columns if c != label_column]
        feature_columns = list(feature_columns)
        missing = [c for c in feature_columns if c not in dataframe.columns]
        if missing or not feature_columns:
            raise ValueError(
                f"`feature_columns` must name columns of the DataFrame; missing "
                f"{missing} (columns: {list(dataframe.columns)})."
            )
        if label_column in feature_columns:
            raise ValueError(
                f"`feature_columns` must not include the label column {label_column!r}."
            )
        non_numeric = [
            c
            for c in feature_columns
            if not (
                pd.api.types.is_numeric_dtype(dataframe[c])
                or pd.api.types.is_bool_dtype(dataframe[c])
            )
        ]
        if non_numeric:
            raise ValueError(
                f"Feature columns must be numeric; {non_numeric} are not "
                f"(dtypes {[str(dataframe[c].dtype) for c in non_numeric]}). "
                "Encode them or leave them out of `feature_columns`."
            )
        x = dataframe[feature_columns].to_numpy(dtype="float32")
        y = dataframe[label_column].to_numpy()
        return cls(x, y, **kwargs)

    @classmethod
    def from_directory(
        cls,
        directory,
        image_size=None,
        color_mode="rgb",
        invert=False,
        cache=True,
        **kwargs,
    ):
        """Builds a sampler over an image folder with one sub-folder per class.

        Images are read lazily with PIL (only when an episode draws them),
        resized and kept in memory if `cache=True`. See
        `metakeras.datasets.ImageFolder`.

        Args:
            directory: folder holding one sub-folder of images per class.
            image_size: `(height, width)` or an int for square images.
                Defaults to `None` (keep the size; all images must match).
            color_mode: `"grayscale"` or `"rgb"`. Defaults to `"rgb"`.
            invert: invert pixel values (dark ink on white becomes 1.0 ink
                on 0.0). Defaults to `False`.
            cache: keep decoded images in memory. Defaults to `True`.
            **kwargs: the other `TaskSampler` arguments.

        Returns:
            A `TaskSampler` whose `class_labels` are the sub-folder names.

        Example:

        ```python
        sampler = TaskSampler.from_directory(
            "flowers/", image_size=84, ways=5, shots=5, queries=15, seed=0)
        ```
        """
        from metakeras.datasets.image_folder import ImageFolder

        folder = ImageFolder(
            directory,
            image_size=image_size,
            color_mode=color_mode,
            invert=invert,
            cache=cache,
        )
        return cls(folder, np.asarray(folder.class_names)[folder.labels], **kwargs)

    @property
    def num_classes(self):
        """Classes this sampler can draw, rotated copies included."""
        return len(self.class_labels) * len(self.rotations)

    def __getitem__(self, index):
        rng = self._rng(index)
        episode, indices, degrees = self._draw(rng)
        t, n = self.meta_batch_size, self.ways
        flat = indices.reshape(-1)
        data = self._gather(flat, degrees.reshape(-1))
        if self.transform is not None:
            data = self._apply_transform(data, index)
        split = t * n * self.shots
        features = data.shape[1:]
        episode["support_x"] = data[:split].reshape(t, n * self.shots, *features)
        episode["query_x"] = data[split:].reshape(t, n * self.queries, *features)
        if self._augment is not None:
            episode["support_x"], episode["query_x"] = self._apply_augmentation(
                episode["support_x"], episode["query_x"], index
            )
        return {
            key: episode[key]
            for key in ("support_x", "support_y", "query_x", "query_y", "classes")
            + (("rotations",) if len(self.rotations) > 1 else ())
        }

    def as_episodes(self):
        """All batches of the current epoch, concatenated along the task axis.

        Returns:
            A dict of the batch keys, each with `steps * meta_batch_size`
            episodes.
        """
        batches = [self[i] for i in range(self.steps)]
        return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}

    def _draw(self, rng):
        """Draws classes and example indices; no data is read here."""
        t, n, k, q = self.meta_batch_size, self.ways, self.shots, self.queries
        per_class = k + q
        num_rotations = len(self.rotations)
        # Random keys and a partial sort give, per task, `n` distinct classes
        # in uniformly random order, without a Python loop over tasks.
        keys = rng.random((t, self.num_classes))
        chosen = _smallest(keys, n)
        base, rotation = np.divmod(chosen, num_rotations)
        sizes = self._class_sizes[base]
        largest = self._class_index.shape[1]
        if largest <= _MAX_PADDED_CLASS_SIZE:
            example_keys = rng.random((t, n, largest))
            example_keys[np.arange(largest) >= sizes[..., None]] = np.inf
            positions = _smallest(example_keys, per_class)
        else:
            positions = np.stack(
                [rng.choice(size, per_class, replace=False) for size in sizes.ravel()]
            ).reshape(t, n, per_class)
        picked = self._class_index[base[..., None], positions]
        support = picked[..., :k].reshape(t, n * k)
        query = picked[..., k:].reshape(t, n * q)
        support_y = np.repeat(np.arange(n, dtype="int64"), k)[None].repeat(t, 0)
        query_y = np.repeat(np.arange(n, dtype="int64"), q)[None].repeat(t, 0)
        if self.shuffle:
            order = np.argsort(rng.random(support.shape), axis=1)
            support = np.take_along_axis(support, order, 1)
            support_y = np.take_along_axis(support_y, order, 1)
            order = np.argsort(rng.random(query.shape), axis=1)
            query = np.take_along_axis(query, order, 1)
            query_y = np.take_along_axis(query_y, order, 1)
        degrees = np.asarray(self.rotations, dtype="int64")[rotation]
        example_degrees = np.concatenate(
            [
                np.take_along_axis(degrees, support_y, 1).reshape(-1),
                np.take_along_axis(degrees, query_y, 1).reshape(-1),
            ]
        )
        episode = {
            "support_y": support_y,
            "query_y": query_y,
            "classes": base.astype("int64"),
            "rotations": degrees,
        }
        indices = np.concatenate([support.reshape(-1), query.reshape(-1)])
        return episode, indices, example_degrees

    def _gather(self, indices, degrees):
        data = as_model_inputs(np.asarray(self.x[indices]))
        for angle in self.rotations:
            if angle == 0:
                continue
            mask = degrees == angle
            if mask.any():
                data[mask] = np.rot90(data[mask], angle // 90, axes=(-2, -1))
        return data

    def _apply_augmentation(self, support, query, index):
        """Runs `augmentation` once per episode, seeded from the batch."""
        rng = self._rng(index, stream=2)
        if not self.augment_queries:
            return np.stack([self._augment(images, rng) for images in support]), query
        both = np.concatenate([support, query], axis=1)
        augmented = np.stack([self._augment(images, rng) for images in both])
        split = support.shape[1]
        return augmented[:, :split], augmented[:, split:]

    def _apply_transform(self, data, index):
        rng = self._rng(index, stream=1)
        out = np.empty_like(data)
        for i, image in enumerate(data):
            result = np.asarray(self.transform(image, rng), dtype="float32")
            if result.shape != image.shape:
                raise ValueError(
                    "`transform` must return an image of the shape it receives; "
                    f"received {image.shape}, returned {result.shape}."
                )
            out[i] = result
        return out


def as_model_inputs(data):
    """Examples as the sampler hands them to a model.

    uint8 values are scaled to `[0, 1]`, other dtypes cast to float32, and
    `(n, H, W)` images get a channel axis (channels-first `(n, 1, H, W)`).

    Args:
        data: a NumPy array `(n, *features)`.

    Returns:
        A float32 NumPy array.
    """
    if data.dtype == np.uint8:
        data = data.astype("float32") * np.float32(1 / 255)
    else:
        data = data.astype("float32", copy=False)
    if data.ndim == 3:
        data = data[:, None]
    return data


def _smallest(keys, count):
    """Indices of the `count` smallest keys along the last axis, in key order."""
    if count < keys.shape[-1]:
        part = np.argpartition(keys, count - 1, axis=-1)[..., :count]
    else:
        part = np.broadcast_to(np.arange(keys.shape[-1]), keys.shape)
    order = np.argsort(np.take_along_axis(keys, part, -1), axis=-1)
    return np.take_along_axis(part, order, -1)


def _as_examples(x):
    if not isinstance(x, np.ndarray) and not (
        hasattr(x, "shape") and hasattr(x, "__getitem__") and hasattr(x, "__len__")
    ):
        x = np.asarray(x)
    shape = tuple(x.shape)
    if len(shape) < 2 or len(shape) > 4:
        raise ValueError(
            "`x` must have shape (examples, features), (examples, H, W) or "
            f"channels-first (examples, C, H, W). Received shape {shape}."
        )
    if isinstance(x, np.ndarray):
        if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
            raise ValueError(f"`x` must be numeric; received dtype {x.dtype}.")
        if np.issubdtype(x.dtype, np.floating):
            bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
            if bad.any():
                where = np.flatnonzero(bad)
                raise ValueError(
                    f"`x` contains NaN or infinite values in {len(where)} "
                    f"example(s), e.g. at index {where[:5].tolist()}; clean or "
                    "drop them before sampling episodes."
                )
    return x


def _as_labels(y, num_examples):
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(
            f"`y` must be a 1-D array of class labels. Received shape {y.shape}."
        )
    if len(y) != num_examples:
        raise ValueError(
            "`x` and `y` must hold the same number of examples "
            f"(got len(x)={num_examples}, len(y)={len(y)})."
        )
    return _text_as_str(y)


def _text_as_str(labels):
    """Object arrays of strings (pandas columns) as a NumPy string array."""
    if labels.dtype == object and all(isinstance(v, str) for v in labels.tolist()):
        return labels.astype(str)
    return labels


def _check_rotations(rotations, shape):
    try:
        rotations = tuple(int(r) for r in rotations)
    except (TypeError, ValueError):
        raise ValueError(
            f"`rotations` must be a sequence of degrees from {_ROTATIONS}. "
            f"Received: {rotations!r}"
        ) from None
    if (
        not rotations
        or len(set(rotations)) != len(rotations)
        or any(r not in _ROTATIONS for r in rotations)
    ):
        raise ValueError(
            f"`rotations` must be distinct degrees from {_ROTATIONS}. "
            f"Received: {rotations!r}"
        )
    if rotations != (0,) and (len(shape) < 3 or shape[-1] != shape[-2]):
        raise ValueError(
            "`rotations` needs square images of shape (H, W) or (C, H, W); "
            f"`x` has example shape {tuple(shape[1:])}."
        )
    return rotations


def _check_augmentation(augmentation, augment_queries, shape):
    """An `Augmentation` for the sampler's images, or None."""
    if augmentation is None:
        return None
    if len(shape) < 3:
        raise ValueError(
            "`augmentation` needs images of shape (H, W) or channels-first "
            f"(C, H, W); `x` has example shape {tuple(shape[1:])}."
        )
    image_shape = tuple(shape[1:]) if len(shape) == 4 else (1, *shape[1:])
    augment = Augmentation(augmentation, image_shape)
    if not augment_queries and augment.output_shape != image_shape:
        raise ValueError(
            "`augmentation` changes the image shape from "
            f"{image_shape} to {augment.output_shape}, so support and query "
            "images would differ in size: pass augment_queries=True, or keep "
            "the size (e.g. pad before RandomCrop)."
        )
    return augment


def _index_classes(y, classes, needed):
    """Sorted labels, a padded (classes, largest) index table and class sizes."""
    present = np.unique(y)
    if classes is None:
        labels = present
    else:
        labels = np.unique(
            _text_as_str(np.asarray(list(classes) if _is_iterable(classes) else []))
        )
        if labels.size == 0:
            raise ValueError(
                f"`classes` must list at least one label of `y`. Received: {classes!r}"
            )
        if labels.dtype.kind != present.dtype.kind and not (
            labels.dtype.kind in "biuf" and present.dtype.kind in "biuf"
        ):
            unknown = labels
        else:
            unknown = labels[~np.isin(labels, present)]
        if unknown.size:
            raise ValueError(
                f"`classes` holds label(s) that `y` does not: "
                f"{preview(unknown)}. Labels in `y`: {preview(present)} "
                f"({present.size} classes)."
            )
    codes = np.searchsorted(labels, y)
    codes[codes >= len(labels)] = 0
    member = labels[codes] == y
    codes = np.where(member, codes, len(labels))
    order = np.argsort(codes, kind="stable")
    sizes = np.bincount(codes, minlength=len(labels) + 1)[: len(labels)]
    small = np.flatnonzero(sizes < needed)
    if small.size:
        raise ValueError(
            f"Every class needs at least shots + queries = {needed} examples; "
            f"{small.size} class(es) have fewer: "
            + ", ".join(
                f"{label!r} has {size}"
                for label, size in zip(
                    labels[small[:5]].tolist(), sizes[small[:5]].tolist()
                )
            )
            + (" ..." if small.size > 5 else "")
            + ". Lower `shots`/`queries` or leave these classes out of `classes`."
        )
    largest = int(sizes.max())
    table = np.zeros((len(labels), largest), dtype="int64")
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    offsets = np.arange(sizes.sum()) - np.repeat(starts, sizes)
    table[np.repeat(np.arange(len(labels)), sizes), offsets] = order[: sizes.sum()]
    return labels, table, sizes.astype("int64")


def _is_iterable(value):
    if isinstance(value, (str, bytes)):
        return False
    try:
        iter(value)
    except TypeError:
        return False
    return True
