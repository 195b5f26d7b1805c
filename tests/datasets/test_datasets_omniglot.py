"""Omniglot loader on archives the tests build, plus the real data when present."""

import glob
import hashlib
import os
import pathlib
import time
import zipfile

import numpy as np
import pytest
from PIL import Image, ImageDraw

from metakeras.datasets import omniglot
from metakeras.tasks import TaskSampler

REAL_DATA = pathlib.Path(__file__).resolve().parents[3] / "shared" / "data" / "omniglot"

# Tiny official-layout sets: {alphabet: characters}.
BACKGROUND = {"Alpha": 2, "Beta": 1}
EVALUATION = {"Gamma": 2}


def drawing(character, drawer, size=105):
    """A 1-bit PNG like Omniglot's: white background, a black stroke."""
    image = Image.new("1", (size, size), 1)
    draw = ImageDraw.Draw(image)
    top = 5 + 9 * character
    left = 5 + 4 * drawer
    draw.rectangle([left, top, left + 20, top + 8], fill=0)
    return image


def write_set(archive, name, alphabets, first_id, skip_drawer=None, size=105):
    character_id = first_id
    for alphabet, count in alphabets.items():
        for c in range(1, count + 1):
            for drawer in range(1, 21):
                if drawer == skip_drawer:
                    continue
                member = (
                    f"{name}/{alphabet}/character{c:02d}/"
                    f"{character_id:04d}_{drawer:02d}.png"
                )
                with archive.open(member, "w") as f:
                    drawing(character_id, drawer, size=size).save(f, format="PNG")
            character_id += 1
    return character_id


def build_zips(folder, **kwargs):
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(folder / "images_background.zip", "w") as archive:
        next_id = write_set(archive, "images_background", BACKGROUND, 1, **kwargs)
    with zipfile.ZipFile(folder / "images_evaluation.zip", "w") as archive:
        write_set(archive, "images_evaluation", EVALUATION, next_id)
    return folder


@pytest.fixture(scope="module")
def fake_data(tmp_path_factory):
    return build_zips(tmp_path_factory.mktemp("omniglot"))


@pytest.fixture(autouse=True)
def _no_data_env(monkeypatch):
    monkeypatch.delenv("METAKERAS_DATA", raising=False)


def cache_files(cache_dir):
    return glob.glob(
        os.path.join(cache_dir, "**", "*.npz"), recursive=True
    ) + glob.glob(os.path.join(cache_dir, "**", ".tmp-*"), recursive=True)


def md5(path):
    return hashlib.md5(pathlib.Path(path).read_bytes()).hexdigest()


def test_reads_the_official_layout_and_caches(fake_data, tmp_path, capsys):
    (xb, yb), (xe, ye), info = omniglot.load_data(
        fake_data, image_size=28, cache_dir=tmp_path, verbose=1
    )
    assert xb.shape == (60, 28, 28) and xb.dtype == np.float32
    assert xe.shape == (40, 28, 28)
    np.testing.assert_array_equal(yb, np.repeat([0, 1, 2], 20))
    np.testing.assert_array_equal(ye, np.repeat([3, 4], 20))
    assert yb.dtype == np.int64
    assert info["character_names"] == [
        "Alpha/character01",
        "Alpha/character02",
        "Beta/character01",
        "Gamma/character01",
        "Gamma/character02",
    ]
    assert info["alphabets"] == ["Alpha", "Alpha", "Beta", "Gamma", "Gamma"]
    assert info["check"] == "layout"
    assert info["counts"]["images_background"] == {
        "alphabets": 2,
        "characters": 3,
        "images": 60,
    }
    assert info["from_cache"] is False
    assert "check=layout" in capsys.readouterr().out
    # Ink is 1.0 on a 0.0 background, and images differ by drawer.
    assert xb.min() == 0.0 and xb.max() == pytest.approx(1.0)
    assert xb[0].mean() < 0.2
    assert not np.array_equal(xb[0], xb[1])

    start = time.perf_counter()
    (xb2, yb2), (xe2, ye2), info2 = omniglot.load_data(
        fake_data, image_size=28, cache_dir=tmp_path
    )
    assert time.perf_counter() - start < 2.0
    assert info2["from_cache"] is True and info2["check"] == "layout"
    assert info2["cache_path"] == info["cache_path"]
    np.testing.assert_array_equal(xb, xb2)
    np.testing.assert_array_equal(ye, ye2)


def test_full_size_and_other_sources(fake_data, tmp_path, monkeypatch):
    (xb, _), _, _ = omniglot.load_data(fake_data, image_size=105, cache_dir=tmp_path)
    assert xb.shape == (60, 105, 105)
    # The raw pixels, inverted: exactly 0 or 1.
    assert set(np.unique(xb).tolist()) == {0.0, 1.0}
    # Extracted folders.
    folders = tmp_path / "extracted"
    for name in omniglot.SETS:
        with zipfile.ZipFile(fake_data / f"{name}.zip") as archive:
            archive.extractall(folders)
    (xf, yf), _, info = omniglot.load_data(folders, image_size=105, cache_dir=tmp_path)
    np.testing.assert_array_equal(xf, xb)
    assert info["check"] == "layout"
    # One zip holding both folders.
    both = tmp_path / "data" / "both.zip"
    both.parent.mkdir(parents=True)
    with zipfile.ZipFile(both, "w") as out:
        for name in omniglot.SETS:
            with zipfile.ZipFile(fake_data / f"{name}.zip") as archive:
                for member in archive.namelist():
                    out.writestr(member, archive.read(member))
    (xz, _), (xe, _), info = omniglot.load_data(
        both, image_size=105, cache_dir=tmp_path
    )
    np.testing.assert_array_equal(xz, xb)
    # $METAKERAS_DATA/omniglot holding the extracted folders.
    (tmp_path / "env").mkdir()
    folders.rename(tmp_path / "env" / "omniglot")
    folders = tmp_path / "env" / "omniglot"
    monkeypatch.setenv("METAKERAS_DATA", str(tmp_path / "env"))
    monkeypatch.setattr(omniglot, "ORIGINS", {})  # any download attempt would fail
    (xe_env, _), _, info = omniglot.load_data(image_size=105, cache_dir=tmp_path)
    np.testing.assert_array_equal(xe_env, xb)
    assert info["source"]["images_background"] == str(folders)


def test_download_path_checks_the_md5(fake_data, tmp_path, monkeypatch):
    monkeypatch.setattr(
        omniglot,
        "ORIGINS",
        {name: (fake_data / f"{name}.zip").as_uri() for name in omniglot.SETS},
    )
    monkeypatch.setattr(
        omniglot,
        "MD5",
        {name: md5(fake_data / f"{name}.zip") for name in omniglot.SETS},
    )
    (xb, yb), (xe, ye), info = omniglot.load_data(image_size=28, cache_dir=tmp_path)
    assert info["check"] == "md5"
    assert xb.shape == (60, 28, 28) and xe.shape == (40, 28, 28)
    downloaded = tmp_path / "datasets" / "omniglot" / "images_background.zip"
    assert md5(downloaded) == omniglot.MD5["images_background"]
    # The cache is keyed by the official hashes: no second download needed.
    monkeypatch.setattr(omniglot, "ORIGINS", {})
    _, _, info = omniglot.load_data(image_size=28, cache_dir=tmp_path)
    assert info["from_cache"] is True and info["check"] == "md5"


def test_wrong_hash_is_rejected_and_removed(fake_data, tmp_path, monkeypatch):
    monkeypatch.setattr(
        omniglot,
        "ORIGINS",
        {name: (fake_data / f"{name}.zip").as_uri() for name in omniglot.SETS},
    )
    monkeypatch.setattr(omniglot, "MD5", {name: "0" * 32 for name in omniglot.SETS})
    actual = md5(fake_data / "images_background.zip")
    with pytest.raises(
        ValueError,
        match=rf"images_background.zip has md5 {actual}, not the expected 0{{32}}",
    ):
        omniglot.load_data(cache_dir=tmp_path)
    assert not (tmp_path / "datasets" / "omniglot" / "images_background.zip").exists()
    assert cache_files(tmp_path) == []


def test_corrupt_archive_is_a_clear_error_without_cache(fake_data, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "images_background.zip").write_bytes(
        (fake_data / "images_background.zip").read_bytes()
    )
    (broken / "images_evaluation.zip").write_bytes(b"PK\x03\x04 this is not a zip")
    cache = tmp_path / "cache"
    with pytest.raises(
        ValueError, match=r"images_evaluation.zip' is not a readable zip"
    ):
        omniglot.load_data(broken, cache_dir=cache)
    assert cache_files(cache) == []
    # A zip whose member bytes are damaged fails on the damaged member.
    data = bytearray((fake_data / "images_background.zip").read_bytes())
    start = data.index(b"IDAT")
    data[start + 8 : start + 40] = b"\x00" * 32
    (broken / "images_background.zip").write_bytes(bytes(data))
    (broken / "images_evaluation.zip").write_bytes(
        (fake_data / "images_evaluation.zip").read_bytes()
    )
    with pytest.raises(ValueError, match=r"Could not read 'images_background/Alpha"):
        omniglot.load_data(broken, cache_dir=cache)
    assert cache_files(cache) == []


def test_wrong_layout_is_rejected(tmp_path):
    few = build_zips(tmp_path / "few", skip_drawer=7)
    with pytest.raises(ValueError, match=r"Alpha/character01 has 19 drawing\(s\)"):
        omniglot.load_data(few, cache_dir=tmp_path / "cache")
    small = build_zips(tmp_path / "small", size=50)
    with pytest.raises(ValueError, match=r"is 50x50; Omniglot images are 105x105"):
        omniglot.load_data(small, cache_dir=tmp_path / "cache")
    stray = tmp_path / "stray"
    build_zips(stray)
    with zipfile.ZipFile(stray / "images_background.zip", "a") as archive:
        archive.writestr("images_background/Alpha/readme.txt", "hello")
    with pytest.raises(
        ValueError, match=r"Unexpected file 'images_background/Alpha/readme.txt'"
    ):
        omniglot.load_data(stray, cache_dir=tmp_path / "cache")
    assert cache_files(tmp_path / "cache") == []


def test_missing_files_raise_os_errors(fake_data, tmp_path):
    with pytest.raises(OSError, match="does not exist"):
        omniglot.load_data(tmp_path / "nowhere", cache_dir=tmp_path)
    half = tmp_path / "half"
    half.mkdir()
    (half / "images_background.zip").write_bytes(
        (fake_data / "images_background.zip").read_bytes()
    )
    with pytest.raises(OSError, match=r"lacks \['images_evaluation'\]"):
        omniglot.load_data(half, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="`image_size` must be a positive integer"):
        omniglot.load_data(half, image_size=0)


def test_an_interrupted_cache_write_leaves_no_file(fake_data, tmp_path, monkeypatch):
    def crash(file, **arrays):
        file.write(b"PK\x03\x04 half")
        raise KeyboardInterrupt

    monkeypatch.setattr(omniglot.np, "savez", crash)
    with pytest.raises(KeyboardInterrupt):
        omniglot.load_data(fake_data, cache_dir=tmp_path)
    assert cache_files(tmp_path) == []


def test_a_damaged_cache_is_rebuilt(fake_data, tmp_path):
    _, _, info = omniglot.load_data(fake_data, cache_dir=tmp_path)
    pathlib.Path(info["cache_path"]).write_bytes(b"garbage")
    (xb, _), _, info = omniglot.load_data(fake_data, cache_dir=tmp_path)
    assert info["from_cache"] is False and xb.shape == (60, 28, 28)
    _, _, info = omniglot.load_data(fake_data, cache_dir=tmp_path)
    assert info["from_cache"] is True


def test_loaded_data_feeds_a_rotating_sampler(fake_data, tmp_path):
    (xb, yb), _, _ = omniglot.load_data(fake_data, cache_dir=tmp_path)
    sampler = TaskSampler(
        xb, yb, ways=10, shots=1, queries=3, rotations=(0, 90, 180, 270), seed=0
    )
    batch = sampler[0]
    assert batch["support_x"].shape == (32, 10, 1, 28, 28)
    assert batch["rotations"].shape == (32, 10)


@pytest.mark.slow
@pytest.mark.skipif(
    not (REAL_DATA / "images_background.zip").exists(),
    reason="the full Omniglot archives are not in ../shared/data/omniglot",
)
def test_real_omniglot(tmp_path):
    (xb, yb), (xe, ye), info = omniglot.load_data(
        REAL_DATA, image_size=28, cache_dir=tmp_path
    )
    assert xb.shape == (19280, 28, 28) and xe.shape == (13180, 28, 28)
    assert yb.max() == 963 and ye.min() == 964 and ye.max() == 1622
    assert info["counts"]["images_background"]["alphabets"] == 30
    assert info["counts"]["images_evaluation"]["alphabets"] == 20
    assert 0.05 < xb.mean() < 0.2  # mostly background, some ink
    start = time.perf_counter()
    _, _, cached = omniglot.load_data(REAL_DATA, image_size=28, cache_dir=tmp_path)
    assert cached["from_cache"] and time.perf_counter() - start < 2.0


def test_preprocess_matches_the_loader_on_outside_images(fake_data, tmp_path):
    (x, _), _, _ = omniglot.load_data(path=fake_data, cache_dir=tmp_path / "cache")
    with zipfile.ZipFile(fake_data / "images_background.zip") as archive:
        members = sorted(m for m in archive.namelist() if m.endswith(".png"))[:3]
        paths = []
        for member in members:
            path = tmp_path / member.replace("/", "_")
            path.write_bytes(archive.read(member))
            paths.append(path)
    np.testing.assert_array_equal(omniglot.preprocess(paths), x[:3])
    images = [Image.open(p) for p in paths]
    np.testing.assert_array_equal(omniglot.preprocess(images), x[:3])
    # Arrays of any size; light strokes on black give the same result.
    pixels = [np.asarray(image.convert("L")) for image in images]
    light = omniglot.preprocess([255 - p for p in pixels], ink="light")
    np.testing.assert_allclose(light, x[:3], atol=1e-6)
    floats = omniglot.preprocess([p / 255.0 for p in pixels], image_size=14)
    assert floats.shape == (3, 14, 14) and floats.dtype == np.float32
    with pytest.raises(ValueError, match=r"`ink` must be one of \['dark', 'light'\]"):
        omniglot.preprocess(paths, ink="white")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(ValueError, match="Could not read .*broken.png.* as an image"):
        omniglot.preprocess([broken])
