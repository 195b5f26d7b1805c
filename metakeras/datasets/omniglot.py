"""Omniglot: 1,623 handwritten characters from 50 alphabets (Lake et al., 2015)."""

import io
import json
import os
import re
import zipfile

import keras
import numpy as np

from metakeras._checks import check_choice, check_int
from metakeras._io import atomic_path
from metakeras.datasets import _files

BACKGROUND = "images_background"
EVALUATION = "images_evaluation"
SETS = (BACKGROUND, EVALUATION)

# The official archives (github.com/brendenlake/omniglot, folder `python/`)
# and their md5 sums, as torchvision's `Omniglot` dataset lists them.
ORIGINS = {
    BACKGROUND: "https://raw.githubusercontent.com/brendenlake/omniglot/master/"
    "python/images_background.zip",
    EVALUATION: "https://raw.githubusercontent.com/brendenlake/omniglot/master/"
    "python/images_evaluation.zip",
}
MD5 = {
    BACKGROUND: "68d2efa1b9178cc56df9314c21c6e718",
    EVALUATION: "6b91aef0f799c5bb55b94e3f2daec811",
}
# (alphabets, characters) of the official sets.
OFFICIAL_COUNTS = {BACKGROUND: (30, 964), EVALUATION: (20, 659)}
DRAWINGS = 20
SOURCE_SIZE = 105

_CACHE_SUBDIR = os.path.join("datasets", "omniglot")
_CACHE_VERSION = 1
_CHARACTER = re.compile(r"^character\d+$")
_DRAWING = re.compile(r"^\d{4}_(\d{2})\.png$")


def load_data(path=None, image_size=28, cache_dir=None, verbose=0):
    """Loads the Omniglot background and evaluation sets.

    Omniglot has 1,623 handwritten characters from 50 alphabets, each drawn
    by 20 people. The background set (30 alphabets, 964 characters) is for
    meta-training; the evaluation set (20 alphabets, 659 characters) for
    testing on unseen alphabets (Lake et al., 2015).

    Where the data comes from, in order:

    1. `path`: a directory holding `images_background.zip` and
       `images_evaluation.zip` or the extracted `images_background/` and
       `images_evaluation/` folders, or one zip holding both folders.
    2. `$METAKERAS_DATA/omniglot/` or `$METAKERAS_DATA/`, if that holds them.
    3. The official archives, downloaded with `keras.utils.get_file` into
       `<cache_dir>/datasets/omniglot/` and checked against their md5 sums.

    Downloads are checked by hash (`info["check"] == "md5"`). Files supplied
    by the user (1 and 2) may be re-encoded copies with other bytes, so their
    layout is checked instead (`info["check"] == "layout"`): the official
    folder structure `images_*/<Alphabet>/characterNN/IIII_DD.png`, exactly
    20 drawings (drawers 01-20) per character and 105x105 images. The layout
    is checked for downloads too.

    Decoded arrays are cached in `<cache_dir>/datasets/omniglot/` as an
    `.npz` file per source and `image_size`, written atomically, so later
    calls read the cache (well under 2 s) instead of the PNGs.

    Args:
        path: a directory or zip file with the data. Defaults to `None`
            (`$METAKERAS_DATA`, else download).
        image_size: side of the square output images; images are resized
            from 105x105 with PIL's LANCZOS filter. Defaults to `28`.
        cache_dir: root of the download and array cache. Defaults to `None`
            (`$KERAS_HOME` or `~/.keras`, as `keras.utils.get_file`).
        verbose: `1` reports the source, the check that ran and the cache
            used. Defaults to `0` (silent, apart from Keras' own download
            progress bar).

    Returns:
        `(x_background, y_background), (x_evaluation, y_evaluation), info`.

        - `x_*`: float32 `(characters * 20, image_size, image_size)`, ink
            1.0 on background 0.0, ordered by character then drawer.
        - `y_*`: int64 class ids; background characters are
            `0..963`, evaluation characters follow (`964..1622`), so the two
            sets never share an id. Characters are numbered in sorted
            (alphabet, character folder) order.
        - `info`: a dict with `character_names` (`"Alphabet/characterNN"`
            for each class id), `alphabets` (the alphabet of each class id),
            `check` (`"md5"` or `"layout"`), `counts` (alphabets, characters
            and images per set), `source` (the files or URLs read),
            `cache_path` and `from_cache`.

    Raises:
        OSError: if `path` (or a file it should hold) does not exist.
        ValueError: if an archive is corrupt, a download fails its md5
            check (the file is removed), or the layout is not the official
            one. No cache file is written then.

    Example:

    >>> (x_train, y_train), (x_test, y_test), info = load_data()  # doctest: +SKIP
    >>> x_train.shape, info["character_names"][0]  # doctest: +SKIP
    ((19280, 28, 28), 'Alphabet_of_the_Magi/character01')
    """
    _check_image_size(image_size)
    image_size = int(image_size)
    cache_root = os.path.join(_files.keras_home(cache_dir), _CACHE_SUBDIR)
    sources = _local_sources(path)
    if sources is None:
        check = "md5"
        key = "official-" + "-".join(MD5[name][:8] for name in SETS)
    else:
        check = "layout"
        key = "local-" + _files.fingerprint(sorted({s[0] for s in sources.values()}))
    cache_path = os.path.join(cache_root, f"omniglot-{key}-{image_size}px.npz")
    cached = _read_cache(cache_path, key, verbose)
    if cached is not None:
        _log(verbose, f"Omniglot: read cached arrays from {cache_path}.")
        return cached
    if sources is None:
        sources = {name: _download(name, cache_root, verbose) for name in SETS}
    arrays, names, alphabets, counts = {}, [], [], {}
    for name in SETS:
        x, characters = _read_set(sources[name], name, image_size)
        first = len(names)
        arrays[name] = (
            x,
            np.repeat(np.arange(first, first + len(characters)), DRAWINGS).astype(
                "int64"
            ),
        )
        names.extend(f"{a}/{c}" for a, c in characters)
        alphabets.extend(a for a, _ in characters)
        counts[name] = {
            "alphabets": len({a for a, _ in characters}),
            "characters": len(characters),
            "images": len(x),
        }
        _log(
            verbose,
            f"Omniglot: {name} from {sources[name][0]}: check={check}, "
            f"{counts[name]['alphabets']} alphabets, "
            f"{counts[name]['characters']} characters, {DRAWINGS} drawings of "
            f"{SOURCE_SIZE}x{SOURCE_SIZE} each"
            + ("" if _is_official(name, counts[name]) else " (not the official counts)")
            + ".",
        )
    info = {
        "character_names": names,
        "alphabets": alphabets,
        "check": check,
        "counts": counts,
        "source": {name: sources[name][0] for name in SETS},
    }
    _write_cache(cache_path, key, arrays, info)
    _log(verbose, f"Omniglot: cached arrays in {cache_path}.")
    info.update(cache_path=cache_path, from_cache=False)
    return arrays[BACKGROUND], arrays[EVALUATION], info


def _log(verbose, message):
    if verbose:
        print(message)


def _is_official(name, counts):
    return (counts["alphabets"], counts["characters"]) == OFFICIAL_COUNTS[name]


# ------------------------------------------------------------------ sources


def _local_sources(path):
    """`{set: (file or folder, kind)}` from `path` or `$METAKERAS_DATA`."""
    if path is not None:
        path = os.path.expanduser(os.fspath(path))
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"Omniglot `path` {path!r} does not exist; expected a directory "
                f"with {SETS[0]}.zip and {SETS[1]}.zip (or the extracted "
                "folders), or a zip holding both folders."
            )
        sources = _sources_in(path)
        missing = [name for name in SETS if name not in sources]
        if missing:
            raise FileNotFoundError(
                f"Omniglot `path` {path!r} lacks {missing}: expected "
                + " and ".join(f"{m}.zip or a {m}/ folder" for m in missing)
                + (" inside the zip." if os.path.isfile(path) else " in it.")
            )
        return sources
    for root in _files.data_roots("omniglot"):
        if os.path.isdir(root):
            sources = _sources_in(root)
            if all(name in sources for name in SETS):
                return sources
    return None


def _sources_in(path):
    if os.path.isfile(path):
        names = _zip_names(path)
        return {
            name: (path, "zip") for name in SETS if any(_under(n, name) for n in names)
        }
    sources = {}
    for name in SETS:
        if os.path.isfile(os.path.join(path, name + ".zip")):
            sources[name] = (os.path.join(path, name + ".zip"), "zip")
        elif os.path.isdir(os.path.join(path, name)):
            sources[name] = (path, "dir")
    return sources


def _download(name, cache_root, verbose):
    origin, md5 = ORIGINS[name], MD5[name]
    target = os.path.join(cache_root, name + ".zip")
    _log(verbose, f"Omniglot: fetching {origin} (md5 {md5}).")
    # `get_file` falls back to /tmp when its folder does not exist yet.
    os.makedirs(cache_root, exist_ok=True)
    try:
        path = keras.utils.get_file(
            fname=name + ".zip",
            origin=origin,
            file_hash=md5,
            hash_algorithm="md5",
            cache_dir=os.path.dirname(os.path.dirname(cache_root)),
            cache_subdir=_CACHE_SUBDIR,
        )
    except ValueError as error:
        actual = _files.file_md5(target) if os.path.exists(target) else "missing"
        if os.path.exists(target):
            os.remove(target)
        raise ValueError(
            f"The download of {origin} to {target} has md5 {actual}, not the "
            f"expected {md5}; the file was removed. Try again, or pass `path=` "
            "to a local copy of the data."
        ) from error
    except Exception as error:  # get_file raises a bare Exception on URL errors.
        raise OSError(
            f"Could not download {origin} ({error}). Without network access, "
            f"copy {name}.zip from a machine that has it and pass `path=` (or "
            f"set ${_files.DATA_ENV})."
        ) from error
    return (path, "zip")


# ------------------------------------------------------------------ reading


def _zip_names(path):
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    except (zipfile.BadZipFile, OSError) as error:
        raise ValueError(
            f"{path!r} is not a readable zip archive ({error}); expected an "
            "Omniglot archive such as images_background.zip. Delete it and "
            "download or copy it again."
        ) from error


def _under(member, name):
    return member.startswith(name + "/") and not member.endswith("/")


def _read_set(source, name, image_size):
    """Decodes one set; returns `(x, [(alphabet, character), ...])`."""
    location, kind = source
    if kind == "zip":
        try:
            archive = zipfile.ZipFile(location)
        except (zipfile.BadZipFile, OSError) as error:
            raise ValueError(
                f"{location!r} is not a readable zip archive ({error}); expected "
                f"the Omniglot {name} archive."
            ) from error
        with archive:
            members = [m for m in archive.namelist() if _under(m, name)]
            layout = _layout(members, name, location)

            def read(member):
                return archive.read(member)

            return _decode(layout, read, location, image_size)
    root = os.path.join(location, name)
    members = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        rel = os.path.relpath(folder, location).replace(os.sep, "/")
        members.extend(f"{rel}/{f}" for f in sorted(files))

    def read(member):
        with open(os.path.join(location, *member.split("/")), "rb") as f:
            return f.read()

    return _decode(_layout(members, name, root), read, root, image_size)


def _layout(members, name, location):
    """Checks the folder structure; returns `{(alphabet, character): [files]}`."""
    layout = {}
    for member in members:
        parts = member.split("/")[1:]
        if any(p.startswith(".") or p == "__MACOSX" for p in parts):
            continue
        if (
            len(parts) != 3
            or not _CHARACTER.match(parts[1])
            or not _DRAWING.match(parts[2])
        ):
            raise ValueError(
                f"Unexpected file {member!r} in {location!r}: the Omniglot layout "
                f"is {name}/<Alphabet>/characterNN/IIII_DD.png."
            )
        layout.setdefault((parts[0], parts[1]), []).append(member)
    if not layout:
        raise ValueError(
            f"{location!r} holds no Omniglot images: expected "
            f"{name}/<Alphabet>/characterNN/IIII_DD.png files."
        )
    for (alphabet, character), files in layout.items():
        drawers = sorted(
            int(_DRAWING.match(f.rsplit("/", 1)[1]).group(1)) for f in files
        )
        if drawers != list(range(1, DRAWINGS + 1)):
            raise ValueError(
                f"{location!r}: {name}/{alphabet}/{character} has {len(files)} "
                f"drawing(s) with drawers {drawers}; every Omniglot character "
                f"has exactly {DRAWINGS} (drawers 01-{DRAWINGS})."
            )
        files.sort(key=lambda f: int(_DRAWING.match(f.rsplit("/", 1)[1]).group(1)))
    return dict(sorted(layout.items()))


def preprocess(images, image_size=28, ink="dark"):
    """Turns your own images into what `load_data` returns for Omniglot.

    Models trained on `load_data()` arrays expect the same preparation of
    any image they are asked about: grayscale, resized to `image_size` with
    PIL's LANCZOS filter (as `load_data` resizes the 105x105 originals),
    scaled to `[0, 1]` with ink 1.0 on a background of 0.0.

    Args:
        images: a sequence of image file paths, `PIL.Image`s, or arrays
            (`(height, width)` grayscale or `(height, width, channels)`,
            uint8 in `[0, 255]` or floats in `[0, 1]`); images of any size.
        image_size: side of the square output images. Defaults to `28`.
        ink: `"dark"` for dark strokes on a light background (the Omniglot
            PNGs, pen on paper) or `"light"` for light strokes on a dark one.
            Defaults to `"dark"`.

    Returns:
        float32 array `(len(images), image_size, image_size)`; add the
        channel axis for channels-first learners with `x[:, None]`.

    Raises:
        ValueError: for an unknown `ink`, a bad `image_size`, or a file that
            cannot be read as an image.

    Example:

    ```python
    x = omniglot.preprocess(["my_drawing.png"])[:, None]  # (1, 1, 28, 28)
    classifier = protonet.adapt(support_x, support_y)
    classifier.predict(x).argmax(-1)
    ```
    """
    from PIL import Image

    check_choice("ink", ink, _INK)
    _check_image_size(image_size)
    x = np.empty((len(images), image_size, image_size), dtype="float32")
    for i, item in enumerate(images):
        if isinstance(item, (str, os.PathLike)):
            with open(item, "rb") as f:
                x[i] = _grayscale(f.read(), repr(os.fspath(item)), image_size)
            continue
        if not isinstance(item, Image.Image):
            array = np.asarray(item)
            if array.dtype != np.uint8:
                array = (np.clip(array, 0.0, 1.0) * 255).round().astype("uint8")
            if array.ndim == 3 and array.shape[-1] == 1:
                array = array[..., 0]
            item = Image.fromarray(array)
        x[i] = _resized(item, image_size)
    np.divide(x, 255.0, out=x)
    if ink == "dark":
        np.subtract(1.0, x, out=x)
    return x


_INK = ("dark", "light")


def _check_image_size(image_size):
    check_int("image_size", image_size)


def _resized(image, image_size):
    from PIL import Image

    image = image.convert("L")
    if image.size != (image_size, image_size):
        image = image.resize((image_size, image_size), Image.LANCZOS)
    return np.asarray(image, dtype="float32")


def _grayscale(data, location, image_size, expected_size=None):
    """Decodes image bytes to a `(image_size, image_size)` array in [0, 255]."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            if expected_size is not None and image.size != expected_size:
                raise ValueError(
                    f"{location} is {image.size[0]}x{image.size[1]}; Omniglot images "
                    f"are {expected_size[0]}x{expected_size[1]}."
                )
            return _resized(image, image_size)
    except (UnidentifiedImageError, OSError, zipfile.BadZipFile) as error:
        raise ValueError(
            f"Could not read {location} as an image ({error}); the file or archive "
            "is corrupt."
        ) from error


def _decode(layout, read, location, image_size):
    x = np.empty((len(layout) * DRAWINGS, image_size, image_size), dtype="float32")
    i = 0
    for files in layout.values():
        for member in files:
            where = f"{member!r} in {location!r}"
            try:
                data = read(member)
            except (OSError, zipfile.BadZipFile) as error:
                raise ValueError(
                    f"Could not read {where} ({error}); the file or archive is corrupt."
                ) from error
            x[i] = _grayscale(
                data, where, image_size, expected_size=(SOURCE_SIZE, SOURCE_SIZE)
            )
            i += 1
    # Ink is dark on white in the PNGs; models expect ink=1, background=0.
    np.subtract(1.0, x / 255.0, out=x)
    return x, list(layout)


# -------------------------------------------------------------------- cache


def _read_cache(path, key, verbose):
    if not os.path.exists(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            if int(data["version"]) != _CACHE_VERSION or str(data["key"]) != key:
                return None
            arrays = {k: data[k] for k in data.files}
    except Exception as error:  # A damaged cache is rebuilt, never trusted.
        _log(verbose, f"Omniglot: ignoring unreadable cache {path} ({error}).")
        return None
    info = json.loads(str(arrays["info"]))
    info.update(cache_path=path, from_cache=True)
    return (
        (arrays["x_background"], arrays["y_background"]),
        (arrays["x_evaluation"], arrays["y_evaluation"]),
        info,
    )


def _write_cache(path, key, arrays, info):
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(
            f,
            version=np.int64(_CACHE_VERSION),
            key=np.str_(key),
            info=np.str_(json.dumps(info)),
            x_background=arrays[BACKGROUND][0],
            y_background=arrays[BACKGROUND][1],
            x_evaluation=arrays[EVALUATION][0],
            y_evaluation=arrays[EVALUATION][1],
        )
