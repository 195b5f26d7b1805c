import os
import zipfile

import pytest

from metakeras._io import atomic_path, deflate_archive


def test_atomic_path_renames_on_success(tmp_path):
    target = tmp_path / "sub" / "out.csv"
    with atomic_path(target) as tmp:
        assert tmp.endswith(".csv") and os.path.dirname(tmp) == str(target.parent)
        with open(tmp, "w") as f:
            f.write("a,b\n")
    assert target.read_text() == "a,b\n"
    assert os.listdir(target.parent) == ["out.csv"]


def test_atomic_path_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("complete\n")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        with open(tmp, "w") as f:
            f.write("half")
        raise RuntimeError("killed while writing")
    assert target.read_text() == "complete\n"
    assert os.listdir(tmp_path) == ["out.csv"]


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_atomic_path_gives_files_the_users_normal_permissions(tmp_path, umask):
    previous = os.umask(umask)
    try:
        target = tmp_path / "model.weights.h5"
        with atomic_path(target) as tmp, open(tmp, "w") as f:
            f.write("x")  # written in place: the temporary file's own mode
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
    finally:
        os.umask(previous)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
    assert target.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777


def test_deflate_archive_compresses_in_place_and_keeps_every_member(tmp_path):
    path = tmp_path / "m.keras"
    members = {"config.json": b'{"a": 1}', "model.weights.h5": bytes(50_000)}
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    stored = path.stat().st_size
    deflate_archive(path)
    assert path.stat().st_size < stored / 10
    with zipfile.ZipFile(path) as archive:
        assert {i.filename: archive.read(i) for i in archive.infolist()} == members
        assert {i.compress_type for i in archive.infolist()} == {zipfile.ZIP_DEFLATED}
    modified = path.stat().st_mtime_ns
    deflate_archive(path)  # already compressed: left as it is
    assert path.stat().st_mtime_ns == modified
    assert os.listdir(tmp_path) == ["m.keras"]
