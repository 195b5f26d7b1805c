import os
import zipfile

import keras
import pytest

from metakeras._io import atomic_path, check_keras_archive, deflate_archive, load_model


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


def _saved_model(tmp_path):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    path = tmp_path / "m.keras"
    model.save(path)
    return path


def test_load_model_says_a_truncated_archive_is_not_valid(tmp_path):
    path = _saved_model(tmp_path)
    assert load_model(path).output_shape == (None, 1)
    data = path.read_bytes()
    for size in (len(data) // 2, len(data) - 10, 30):
        path.write_bytes(data[:size])
        with pytest.raises(ValueError) as info:
            load_model(path)
        message = str(info.value)
        assert f"{str(path)!r} is not a valid .keras archive (truncated or " in message
        assert "File is not a zip file" in message and f"({size} bytes)" in message
    with pytest.raises(FileNotFoundError, match=r"No such \.keras file: .*none"):
        load_model(tmp_path / "none.keras")


def test_check_keras_archive_finds_damaged_members_and_foreign_zips(tmp_path):
    path = _saved_model(tmp_path)
    data = bytearray(path.read_bytes())
    start = data.index(b"model.weights.h5") + 100  # inside the stored weights
    data[start : start + 8] = bytes(8)
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="'model.weights.h5' fails its CRC check"):
        check_keras_archive(path)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "hello")
    with pytest.raises(ValueError, match=r"holds no config.json \(members: \['notes"):
        check_keras_archive(path)
