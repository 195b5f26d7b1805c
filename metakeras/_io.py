"""Model and result files: atomic output, compressed and checked `.keras` archives."""

import contextlib
import os
import shutil
import tempfile
import zipfile
import zlib


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path next to `path`; renames it onto `path` on success.

    A crash or kill while writing leaves `path` as it was (absent or the
    previous complete file), never truncated. The file gets the permissions
    a plainly created file would (`0o666` less the process's umask), not
    the owner-only mode of a temporary file.

    The temporary file keeps every suffix of the final name
    (`model.weights.h5` gives `.tmp-XXXX.weights.h5`), so writers that check
    the extension (Keras's `save_weights`, `np.savez`) accept it. It is
    flushed to disk (`fsync`) before the rename, so the rename never exposes
    a file whose data is still in flight.

    Args:
        path: the final file path.

    Yields:
        A temporary file path in the same directory, with the same suffixes.

    Example:

    ```python
    with atomic_path("results/summary.csv") as tmp:
        frame.to_csv(tmp, index=False)
    ```
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=_suffix(path))
    os.close(fd)
    try:
        yield tmp
        _fsync(tmp)
        if os.path.isfile(tmp):
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def deflate_archive(path):
    """Rewrites a zip archive (a `.keras` file) with DEFLATE compression.

    Keras writes `.keras` archives uncompressed. Readers (`zipfile`, and so
    `keras.models.load_model`) decompress transparently, so the archive
    loads as before; zeros (pruned weights) and HDF5 padding take almost no
    room. The rewrite is atomic (`atomic_path`); an archive already
    compressed is left as it is.

    Args:
        path: an existing zip file.
    """
    with zipfile.ZipFile(path) as source:
        if all(i.compress_type == zipfile.ZIP_DEFLATED for i in source.infolist()):
            return
    with (
        zipfile.ZipFile(path) as source,
        atomic_path(path) as tmp,
        zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as target,
    ):
        for info in source.infolist():
            entry = zipfile.ZipInfo(info.filename, info.date_time)
            entry.compress_type = zipfile.ZIP_DEFLATED
            entry.external_attr = info.external_attr
            large = info.file_size >= zipfile.ZIP64_LIMIT
            with (
                source.open(info) as data,
                target.open(entry, "w", force_zip64=large) as out,
            ):
                shutil.copyfileobj(data, out, 1 << 20)


def load_model(path, **kwargs):
    """`keras.models.load_model` with a clear error for a damaged file.

    Keras reports a `.keras` file that is not a readable zip archive (cut
    short by a full disk or an interrupted copy) as "File not found"; this
    checks the archive first and says what is wrong with it.

    Args:
        path: path of a `.keras` file.
        **kwargs: the other arguments of `keras.models.load_model`.

    Returns:
        The loaded model.

    Raises:
        FileNotFoundError: if `path` does not exist.
        ValueError: if `path` is not a valid `.keras` archive (truncated,
            corrupt, or without a model config).
    """
    import keras

    check_keras_archive(path)
    return keras.models.load_model(path, **kwargs)


def check_keras_archive(path):
    """Raises unless `path` is a complete, readable `.keras` zip archive.

    Every member is read and checked against its CRC, so a file cut short
    or damaged anywhere is found before Keras starts building the model.

    Args:
        path: path of a `.keras` file.

    Raises:
        FileNotFoundError: if `path` does not exist or is not a file.
        ValueError: `"<path> is not a valid .keras archive (truncated or
            corrupt): <reason>"`.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No such .keras file: {path!r}")

    def invalid(reason):
        return ValueError(
            f"{path!r} is not a valid .keras archive (truncated or corrupt): {reason}"
        )

    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
            names = archive.namelist()
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as error:
        raise invalid(
            f"{type(error).__name__}: {error} ({os.path.getsize(path)} bytes)"
        ) from None
    if damaged is not None:
        raise invalid(f"member {damaged!r} fails its CRC check")
    if "config.json" not in names:
        raise invalid(f"it holds no config.json (members: {names})")


def _suffix(path):
    """All suffixes of a file name: `a.weights.h5` -> `.weights.h5`."""
    name = os.path.basename(path).lstrip(".")
    return name[name.index(".") :] if "." in name else ""


def _fsync(path):
    if not os.path.isfile(path):
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # Some file systems do not support fsync; rename anyway.
        pass
    finally:
        os.close(fd)


def _umask():
    """The process's umask, read without changing it where the OS allows."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
