"""Where datasets live on disk: the Keras cache, `METAKERAS_DATA`, hashes."""

import hashlib
import os
import tempfile

DATA_ENV = "METAKERAS_DATA"


def keras_home(cache_dir=None):
    """The folder `keras.utils.get_file` caches under (`~/.keras` by default).

    Mirrors Keras: `cache_dir`, else `$KERAS_HOME`, else `~/.keras`; an
    unwritable default falls back to `<tmp>/.keras` as `get_file` does.
    """
    if cache_dir is not None:
        return os.path.expanduser(os.fspath(cache_dir))
    home = os.environ.get("KERAS_HOME") or os.path.join(
        os.path.expanduser("~"), ".keras"
    )
    parent = home if os.path.isdir(home) else os.path.dirname(home)
    if not os.access(parent, os.W_OK):
        home = os.path.join(tempfile.gettempdir(), ".keras")
    return home


def data_roots(*names):
    """Candidate folders for a dataset under `$METAKERAS_DATA`, in order."""
    root = os.environ.get(DATA_ENV)
    if not root:
        return []
    root = os.path.expanduser(root)
    return [os.path.join(root, name) for name in names] + [root]


def file_md5(path, chunk=1 << 20):
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(paths):
    """A short key that changes when any file under `paths` changes."""
    digest = hashlib.sha1()
    for path in paths:
        path = os.path.abspath(path)
        if os.path.isdir(path):
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    _add_stat(digest, os.path.join(root, name))
        else:
            _add_stat(digest, path)
    return digest.hexdigest()[:16]


def _add_stat(digest, path):
    stat = os.stat(path)
    digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
