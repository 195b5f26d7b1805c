"""TaskSampler: N-way K-shot episodes, determinism, augmentation, sources, errors."""

import time
from concurrent.futures import ThreadPoolExecutor

import keras
import numpy as np
import pandas as pd
import pytest
from conftest import mlp
from PIL import Image

import metakeras
from metakeras.datasets import digits
from metakeras.tasks import EPISODE_KEYS, TaskSampler, task_sampler, validate_episode


def indexed_data(sizes, features=3, seed=0):
    """Examples whose first feature is their own index, with shuffled labels."""
    y = np.repeat(np.arange(len(sizes)) * 10, sizes)  # labels 0, 10, 20, ...
    y = np.random.default_rng(seed).permutation(y)
    x = np.zeros((len(y), features), dtype="float32")
    x[:, 0] = np.arange(len(y))
    return x, y


def example_ids(batch, key):
    return batch[key][..., 0].astype(int)


def check_episodes(sampler, batch, x_ids_key=True):
    """The invariants every episode must satisfy."""
    n, k, q = sampler.ways, sampler.shots, sampler.queries
    t = sampler.meta_batch_size
    validate_episode(*(batch[key] for key in EPISODE_KEYS), num_classes=n)
    assert batch["support_y"].dtype == np.int64
    assert batch["query_y"].dtype == np.int64
    assert batch["classes"].shape == (t, n)
    assert batch["classes"].dtype == np.int64
    for i in range(t):
        assert np.bincount(batch["support_y"][i], minlength=n).tolist() == [k] * n
        assert np.bincount(batch["query_y"][i], minlength=n).tolist() == [q] * n
        assert len(set(batch["classes"][i].tolist())) == n
        if not x_ids_key:
            continue
        support = example_ids(batch, "support_x")[i]
        query = example_ids(batch, "query_x")[i]
        assert len(set(support.tolist())) == n * k
        assert len(set(query.tolist())) == n * q
        assert not set(support.tolist()) & set(query.tolist())
        # Every example's original label is the class its episode label maps to.
        labels = sampler.class_labels[batch["classes"][i]]
        np.testing.assert_array_equal(sampler.y[support], labels[batch["support_y"][i]])
        np.testing.assert_array_equal(sampler.y[query], labels[batch["query_y"][i]])


@pytest.mark.parametrize("ways, shots, queries", [(5, 1, 15), (3, 4, 2), (7, 2, 3)])
def test_episodes_follow_the_contract(ways, shots, queries):
    x, y = indexed_data([20] * 7 + [25, 40])
    sampler = TaskSampler(
        x, y, ways=ways, shots=shots, queries=queries, meta_batch_size=6, seed=1
    )
    batch = sampler[0]
    assert set(batch) == {*EPISODE_KEYS, "classes"}
    assert batch["support_x"].shape == (6, ways * shots, 3)
    assert batch["query_x"].shape == (6, ways * queries, 3)
    assert batch["support_x"].dtype == np.float32
    np.testing.assert_array_equal(sampler.class_labels, np.arange(9) * 10)
    for index in range(4):
        check_episodes(sampler, sampler[index])


def test_classes_restricts_the_draw_and_class_labels():
    x, y = indexed_data([6] * 10)
    sampler = TaskSampler(
        x, y, ways=3, shots=2, queries=2, classes=[70, 10, 30, 50], seed=0, steps=5
    )
    np.testing.assert_array_equal(sampler.class_labels, [10, 30, 50, 70])
    drawn = set()
    for index in range(5):
        batch = sampler[index]
        check_episodes(sampler, batch)
        ids = example_ids(batch, "support_x").ravel()
        drawn |= set(y[ids].tolist())
    assert drawn <= {10, 30, 50, 70}
    assert len(drawn) == 4


def test_shuffle_permutes_examples_but_keeps_the_episode_valid():
    x, y = indexed_data([10] * 6)
    plain = TaskSampler(x, y, ways=4, shots=3, queries=2, seed=2, meta_batch_size=3)
    mixed = TaskSampler(
        x, y, ways=4, shots=3, queries=2, seed=2, meta_batch_size=3, shuffle=True
    )
    check_episodes(mixed, mixed[0])
    assert np.all(np.diff(plain[0]["support_y"], axis=1) >= 0)
    assert not np.all(np.diff(mixed[0]["support_y"], axis=1) >= 0)


def test_same_seed_same_episodes_in_any_order_and_different_seeds_differ():
    x, y = indexed_data([12] * 8)
    a = TaskSampler(x, y, ways=5, shots=2, queries=3, steps=4, seed=7)
    b = TaskSampler(x, y, ways=5, shots=2, queries=3, steps=4, seed=7)
    for index in (3, 0, 2, 1):
        for key in (*EPISODE_KEYS, "classes"):
            np.testing.assert_array_equal(a[index][key], b[index][key])
    c = TaskSampler(x, y, ways=5, shots=2, queries=3, steps=4, seed=8)
    assert not np.array_equal(a[0]["support_x"], c[0]["support_x"])
    assert not np.array_equal(a[0]["support_x"], a[1]["support_x"])


def test_resample_controls_new_episodes_per_epoch():
    x, y = indexed_data([8] * 6)
    fresh = TaskSampler(x, y, ways=3, shots=1, queries=2, steps=2, seed=0)
    first = fresh[0]["support_x"].copy()
    fresh.on_epoch_end()
    assert not np.array_equal(first, fresh[0]["support_x"])
    fixed = TaskSampler(
        x, y, ways=3, shots=1, queries=2, steps=2, seed=0, resample=False
    )
    fixed.on_epoch_end()
    np.testing.assert_array_equal(first, fixed[0]["support_x"])


def test_two_workers_give_the_episodes_of_one():
    from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

    x, y = indexed_data([10] * 12)
    kwargs = dict(ways=5, shots=1, queries=5, meta_batch_size=4, steps=6, seed=3)
    direct = [TaskSampler(x, y, **kwargs)[i] for i in range(6)]
    threaded = TaskSampler(x, y, workers=2, **kwargs)
    batches = list(PyDatasetAdapter(threaded, shuffle=False).get_numpy_iterator())
    assert len(batches) == 6
    for expected, received in zip(direct, batches):
        for key in expected:
            np.testing.assert_array_equal(expected[key], received[key])


@pytest.mark.parametrize(
    "use_multiprocessing, shuffle", [(False, False), (True, False), (True, True)]
)
def test_workers_give_the_episodes_of_one_over_several_epochs(
    use_multiprocessing, shuffle
):
    # The path `fit` takes: Keras's adapter with its OrderedEnqueuer, threads
    # or processes, epoch after epoch. Every batch of the single-worker run
    # arrives exactly once (in order unless Keras shuffles the batch order).
    from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

    x, y = indexed_data([10] * 12)
    kwargs = dict(ways=5, shots=1, queries=5, meta_batch_size=4, steps=6, seed=3)
    reference = TaskSampler(x, y, **kwargs)
    parallel = TaskSampler(
        x, y, workers=2, use_multiprocessing=use_multiprocessing, **kwargs
    )
    adapter = PyDatasetAdapter(parallel, shuffle=shuffle)
    for epoch in range(3):
        reference.epoch = epoch
        expected = [reference[i] for i in range(6)]
        adapter.on_epoch_begin()
        batches = list(adapter.get_numpy_iterator())
        adapter.on_epoch_end()
        assert len(batches) == 6
        if shuffle:
            # Episodes are index-pure: match each received batch to its index.
            keys = [e["support_x"].tobytes() for e in expected]
            order = [keys.index(b["support_x"].tobytes()) for b in batches]
            assert sorted(order) == list(range(6))  # no duplicates, no drops
            expected = [expected[i] for i in order]
        for want, got in zip(expected, batches):
            for key in want:
                np.testing.assert_array_equal(want[key], got[key])


def test_as_episodes_concatenates_the_epoch():
    x, y = indexed_data([8] * 6)
    sampler = TaskSampler(
        x, y, ways=3, shots=1, queries=2, steps=3, meta_batch_size=2, seed=0
    )
    episodes = sampler.as_episodes()
    assert episodes["support_x"].shape == (6, 3, 3)
    np.testing.assert_array_equal(episodes["classes"][2:4], sampler[1]["classes"])


def test_images_become_channels_first_float32():
    rng = np.random.default_rng(0)
    gray = rng.random((40, 6, 6)).astype("float32")
    y = np.repeat(np.arange(4), 10)
    batch = TaskSampler(gray, y, ways=2, shots=1, queries=1, seed=0)[0]
    assert batch["support_x"].shape == (32, 2, 1, 6, 6)
    color = (rng.random((40, 3, 5, 7)) * 255).astype("uint8")
    sampler = TaskSampler(color, y, ways=2, shots=2, queries=1, seed=0)
    batch = sampler[0]
    assert batch["query_x"].shape == (32, 2, 3, 5, 7)
    assert batch["query_x"].dtype == np.float32
    assert batch["query_x"].min() >= 0.0 and batch["query_x"].max() <= 1.0
    # uint8 is scaled by 1/255: the values are exactly those of some images.
    scaled = color.astype("float32") / 255
    found = (np.abs(scaled[None] - batch["query_x"][0, 0][None, None]) < 1e-6).all(
        axis=(2, 3, 4)
    )
    assert found.any()


def test_rotations_are_new_classes_and_rotate_the_pixels():
    rng = np.random.default_rng(1)
    images = rng.random((3 * 4, 5, 5)).astype("float32")
    y = np.repeat([0, 1, 2], 4)
    sampler = TaskSampler(
        images,
        y,
        ways=10,  # more than the 3 base classes: rotated copies count
        shots=1,
        queries=2,
        meta_batch_size=8,
        rotations=(0, 90, 180, 270),
        seed=0,
    )
    assert sampler.num_classes == 12
    batch = sampler[0]
    assert batch["rotations"].shape == (8, 10)
    for t in range(8):
        pairs = set(zip(batch["classes"][t].tolist(), batch["rotations"][t].tolist()))
        assert len(pairs) == 10
        for key_x, key_y in (("support_x", "support_y"), ("query_x", "query_y")):
            for image, label in zip(batch[key_x][t], batch[key_y][t]):
                base = batch["classes"][t, label]
                angle = batch["rotations"][t, label]
                candidates = np.rot90(images[y == base], angle // 90, axes=(1, 2))
                assert any(np.array_equal(image[0], c) for c in candidates)


def test_transform_is_applied_per_image_and_seeded():
    x, y = indexed_data([6] * 5)
    images = np.tile(x[:, :1, None], (1, 4, 4))  # (30, 4, 4), value = index

    def jitter(image, rng):
        return image + rng.integers(1, 3)

    kwargs = dict(ways=3, shots=1, queries=1, seed=4, meta_batch_size=5)
    plain = TaskSampler(images, y, **kwargs)[0]["support_x"]
    a = TaskSampler(images, y, transform=jitter, **kwargs)[0]["support_x"]
    b = TaskSampler(images, y, transform=jitter, **kwargs)[0]["support_x"]
    np.testing.assert_array_equal(a, b)
    shift = a - plain
    assert set(np.unique(shift).tolist()) == {1.0, 2.0}
    # One draw per image: the shift is constant within an image.
    assert (shift.reshape(-1, 16).std(axis=1) == 0).all()

    with pytest.raises(ValueError, match="`transform` must return an image"):
        TaskSampler(images, y, transform=lambda im, rng: im[0], **kwargs)[0]


def _images(channels=3, height=6, width=7, per_class=6, classes=5, seed=0):
    """Distinct random channels-first images (non-square, so axes can't mix)."""
    rng = np.random.default_rng(seed)
    x = rng.random((per_class * classes, channels, height, width)).astype("float32")
    return x, np.repeat(np.arange(classes), per_class)


def _flip_sampler(x, y, **kwargs):
    kwargs = {"ways": 3, "shots": 2, "queries": 2, "meta_batch_size": 4, **kwargs}
    return TaskSampler(x, y, **kwargs)


def test_augmentation_is_seeded_per_batch_and_keeps_the_contract():
    x, y = _images()
    flip = keras.Sequential(
        [
            keras.layers.RandomFlip("horizontal_and_vertical"),
            keras.layers.RandomZoom(0.2),
        ]
    )
    a = _flip_sampler(x, y, seed=3, steps=3, augmentation=flip)
    b = _flip_sampler(x, y, seed=3, steps=3, augmentation=flip)
    other = _flip_sampler(x, y, seed=4, steps=3, augmentation=flip)
    plain = _flip_sampler(x, y, seed=3, steps=3)
    # Any order of access, as workers would draw them: the same batches.
    for index in (2, 0, 1):
        first, second = a[index], b[index]
        for key in first:
            np.testing.assert_array_equal(first[key], second[key])
        # The episodes drawn are the sampler's without augmentation.
        for key in ("support_y", "query_y", "classes"):
            np.testing.assert_array_equal(first[key], plain[index][key])
        for key in ("support_x", "query_x"):
            assert first[key].dtype == np.float32
            assert first[key].shape == plain[index][key].shape
            assert not np.allclose(first[key], plain[index][key])
    assert not np.allclose(a[0]["support_x"], other[0]["support_x"])
    # Threads (PyDataset workers) calling the one layer at once change nothing.
    with ThreadPoolExecutor(3) as pool:
        threaded = list(pool.map(lambda i: a[i]["query_x"], [0, 1, 2] * 2))
    for i, images in enumerate(threaded):
        np.testing.assert_array_equal(images, b[i % 3]["query_x"])
    # The layer's own seed state is neither used nor advanced.
    before = [keras.ops.convert_to_numpy(v).copy() for v in flip.variables]
    a[1]
    after = [keras.ops.convert_to_numpy(v) for v in flip.variables]
    for old, new in zip(before, after):
        np.testing.assert_array_equal(old, new)
    # A new epoch (resample) augments differently; a fixed set does not.
    a.on_epoch_end()
    assert not np.allclose(a[0]["support_x"], b[0]["support_x"])
    fixed = _flip_sampler(x, y, seed=3, resample=False, augmentation=flip)
    once = fixed[0]["query_x"]
    fixed.on_epoch_end()
    np.testing.assert_array_equal(fixed[0]["query_x"], once)


@pytest.mark.parametrize("data_format", [None, "channels_first", "channels_last"])
def test_augmentation_flips_the_width_axis_of_channels_first_images(data_format):
    x, y = _images(channels=3, height=4, width=5)
    layer = keras.layers.RandomFlip("horizontal", data_format=data_format)
    plain = _flip_sampler(x, y, seed=0, meta_batch_size=8)[0]
    augmented = _flip_sampler(x, y, seed=0, meta_batch_size=8, augmentation=layer)[0]
    for key in ("support_x", "query_x"):
        original = plain[key].reshape(-1, 3, 4, 5)
        result = augmented[key].reshape(-1, 3, 4, 5)
        kept = np.all(result == original, axis=(1, 2, 3))
        flipped = np.all(result == original[..., ::-1], axis=(1, 2, 3))
        assert np.all(kept | flipped)  # each image as is, or mirrored left-right
        assert kept.any() and flipped.any()


def test_augmentation_of_support_only_and_grayscale_images():
    x, y = _images(channels=1, height=8, width=8)
    x = x[:, 0]  # (N, H, W): the sampler adds the channel axis
    layer = keras.layers.RandomRotation(0.25, fill_mode="constant")
    plain = _flip_sampler(x, y, seed=1)[0]
    support_only = _flip_sampler(
        x, y, seed=1, augmentation=layer, augment_queries=False
    )[0]
    assert support_only["support_x"].shape == (4, 6, 1, 8, 8)
    assert not np.allclose(support_only["support_x"], plain["support_x"])
    np.testing.assert_array_equal(support_only["query_x"], plain["query_x"])


def test_augmentation_may_crop_both_sets_to_a_new_size():
    x, y = _images(channels=2, height=8, width=8)
    crop = keras.layers.RandomCrop(6, 5)
    batch = _flip_sampler(x, y, seed=2, augmentation=crop)[0]
    assert batch["support_x"].shape == (4, 6, 2, 6, 5)
    assert batch["query_x"].shape == (4, 6, 2, 6, 5)
    # A crop of the original image: some window of it, every channel alike.
    original = _flip_sampler(x, y, seed=2)[0]["support_x"][0, 0]
    windows = [original[:, i : i + 6, j : j + 5] for i in range(3) for j in range(4)]
    assert any(np.array_equal(batch["support_x"][0, 0], w) for w in windows)
    with pytest.raises(ValueError, match=r"changes the image shape from \(2, 8, 8\) "):
        _flip_sampler(x, y, augmentation=crop, augment_queries=False)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"augmentation": "flip"},
            r"`augmentation` must be None or a Keras layer.*'flip'",
        ),
        (
            {"augmentation": lambda image: image},
            r"`augmentation` must be None or a Keras layer.*function",
        ),
        ({"augment_queries": "yes"}, r"`augment_queries` must be True or False"),
    ],
)
def test_bad_augmentation_arguments_are_rejected(kwargs, message):
    x, y = _images()
    with pytest.raises(ValueError, match=message):
        _flip_sampler(x, y, **kwargs)


def test_augmentation_needs_images_and_one_data_format():
    x, y = indexed_data([6] * 4)
    with pytest.raises(ValueError, match=r"needs images .* example shape \(3,\)"):
        _flip_sampler(x, y, augmentation=keras.layers.RandomFlip())
    images, labels = _images()
    mixed = keras.Sequential(
        [
            keras.layers.RandomFlip(data_format="channels_first"),
            keras.layers.RandomFlip(data_format="channels_last"),
        ]
    )
    with pytest.raises(ValueError, match="must share one `data_format`"):
        _flip_sampler(images, labels, augmentation=mixed)
    with pytest.raises(ValueError, match=r"failed on a batch of images .*\(3, 6, 7\)"):
        _flip_sampler(images, labels, augmentation=keras.layers.Reshape((5,)))
    with pytest.raises(ValueError, match=r"one image per input image.*\(1, 126\)"):
        _flip_sampler(images, labels, augmentation=keras.layers.Flatten())


def test_large_classes_use_a_per_class_draw(monkeypatch):
    monkeypatch.setattr(task_sampler, "_MAX_PADDED_CLASS_SIZE", 8)
    x, y = indexed_data([30, 9, 12, 40])
    sampler = TaskSampler(x, y, ways=3, shots=2, queries=5, seed=0, steps=3)
    for index in range(3):
        check_episodes(sampler, sampler[index])
    again = TaskSampler(x, y, ways=3, shots=2, queries=5, seed=0, steps=3)
    np.testing.assert_array_equal(sampler[2]["query_x"], again[2]["query_x"])


def test_string_labels_and_dataframe_source():
    frame = pd.DataFrame(
        {
            "a": np.arange(24, dtype=float),
            "b": np.ones(24),
            "flag": np.zeros(24, dtype=bool),
            "species": np.repeat(["cat", "dog", "eel", "fox"], 6),
        }
    )
    sampler = TaskSampler.from_dataframe(
        frame, "species", ways=2, shots=2, queries=3, seed=0, meta_batch_size=3
    )
    assert sampler.class_labels.tolist() == ["cat", "dog", "eel", "fox"]
    batch = sampler[0]
    assert batch["support_x"].shape == (3, 4, 3)
    check_episodes(sampler, batch)
    only = TaskSampler.from_dataframe(
        frame, "species", feature_columns=["b"], ways=2, shots=1, queries=1, seed=0
    )
    assert only[0]["support_x"].shape == (32, 2, 1)
    with pytest.raises(ValueError, match="`label_column`='kind'"):
        TaskSampler.from_dataframe(frame, "kind")
    with pytest.raises(ValueError, match=r"\['name'\] are not"):
        TaskSampler.from_dataframe(frame.assign(name="x"), "species")
    with pytest.raises(ValueError, match="missing \\['zzz'\\]"):
        TaskSampler.from_dataframe(frame, "species", feature_columns=["zzz"])


def test_from_directory_reads_images_lazily(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("ant", "bee", "cow"):
        (tmp_path / name).mkdir()
        for i in range(4):
            pixels = (rng.random((10, 12)) * 255).astype("uint8")
            Image.fromarray(pixels).save(tmp_path / name / f"{i}.png")
    (tmp_path / "bee" / "notes.txt").write_text("not an image")
    sampler = TaskSampler.from_directory(
        tmp_path,
        image_size=8,
        color_mode="grayscale",
        ways=2,
        shots=1,
        queries=2,
        seed=0,
        meta_batch_size=4,
    )
    assert sampler.class_labels.tolist() == ["ant", "bee", "cow"]
    batch = sampler[0]
    assert batch["support_x"].shape == (4, 2, 1, 8, 8)
    check_episodes(sampler, batch, x_ids_key=False)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"ways": 0}, r"`ways` must be a positive integer. Received: ways=0"),
        ({"shots": -1}, r"`shots` must be a positive integer. Received: shots=-1"),
        ({"queries": 0}, r"`queries` must be a positive integer"),
        ({"meta_batch_size": 1.5}, r"`meta_batch_size` must be a positive integer"),
        ({"steps": True}, r"`steps`"),
        ({"seed": -1}, r"`seed` must be None or a non-negative integer"),
        (
            {"ways": 20},
            r"`ways` must be <= the number of classes in `classes` "
            r"\(got ways=20, 12 classes available\)\.",
        ),
        (
            {"ways": 20, "classes": [0, 10, 20]},
            r"\(got ways=20, 3 classes available\)",
        ),
        (
            {"shots": 5, "queries": 2},
            r"at least shots \+ queries = 7 examples; 1 class\(es\) have fewer: "
            r"110 has 6",
        ),
        (
            {"classes": [10, 999]},
            r"`classes` holds label\(s\) that `y` does not: \[999\]",
        ),
        ({"classes": ["cat"]}, r"`classes` holds label\(s\) that `y` does not"),
        ({"classes": []}, r"`classes` must list at least one label"),
        ({"rotations": (0, 45)}, r"`rotations` must be distinct degrees"),
        ({"rotations": (90, 90)}, r"`rotations` must be distinct degrees"),
        ({"rotations": (0, 90)}, r"`rotations` needs square images"),
        ({"transform": "flip"}, r"`transform` must be None or a callable"),
        ({"resample": 1}, r"`resample` must be True or False"),
    ],
)
def test_bad_arguments_name_the_argument_and_value(kwargs, message):
    x, y = indexed_data([8] * 11 + [6])
    kwargs = {"ways": 5, "shots": 1, "queries": 5, **kwargs}
    with pytest.raises(ValueError, match=message):
        TaskSampler(x, y, **kwargs)


def test_bad_data_is_rejected():
    x, y = indexed_data([8] * 4)
    with pytest.raises(ValueError, match=r"\(got len\(x\)=32, len\(y\)=31\)"):
        TaskSampler(x, y[:-1], ways=2, queries=1)
    bad = x.copy()
    bad[5, 1] = np.nan
    bad[9, 0] = np.inf
    with pytest.raises(ValueError, match=r"NaN or infinite values in 2 .*\[5, 9\]"):
        TaskSampler(bad, y, ways=2, queries=1)
    with pytest.raises(ValueError, match="`y` must be a 1-D array"):
        TaskSampler(x, y[:, None], ways=2, queries=1)
    with pytest.raises(ValueError, match="`x` must have shape"):
        TaskSampler(np.arange(32.0), y, ways=2, queries=1)
    with pytest.raises(ValueError, match="`x` must be numeric"):
        TaskSampler(np.array([["a"]] * 32), y, ways=2, queries=1)
    with pytest.raises(IndexError):
        TaskSampler(x, y, ways=2, queries=1, steps=2)[2]


def test_maml_fits_on_digits_episodes():
    start = time.perf_counter()
    x, y = digits.load_data()
    sampler = TaskSampler(
        x.reshape(len(x), -1),
        y,
        ways=5,
        shots=1,
        queries=5,
        meta_batch_size=4,
        steps=3,
        classes=range(6),
        seed=0,
    )
    learner = mlp(hidden=16, outputs=5, inputs=64, activation="relu")
    model = metakeras.MAML(learner, inner_learning_rate=0.1)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    history = model.fit(sampler, epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2
    assert all(np.isfinite(history.history["loss"]))
    assert time.perf_counter() - start < 30


def test_text_labels_from_a_dataframe_work_with_split_classes():
    import pandas as pd

    from metakeras.tasks import split_classes

    names = np.repeat(["cat", "dog", "eel", "fox", "gnu", "hen"], 6)
    frame = pd.DataFrame({"a": np.arange(36.0), "b": np.ones(36), "label": names})
    train, _ = split_classes(frame["label"], fractions=(0.5, 0.5), seed=0)
    sampler = TaskSampler.from_dataframe(
        frame,
        "label",
        ways=2,
        shots=1,
        queries=2,
        meta_batch_size=3,
        classes=train,
        seed=0,
    )
    assert sorted(sampler.class_labels.tolist()) == sorted(train.tolist())
    batch = sampler[0]
    drawn = sampler.class_labels[batch["classes"]]
    assert set(drawn.ravel()) <= set(train.tolist())
