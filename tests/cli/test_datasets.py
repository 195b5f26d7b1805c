"""`metakeras datasets`."""

from PIL import Image

from metakeras.cli import main


def test_datasets_lists_presence(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    data = tmp_path / "data"
    (data / "omniglot" / "images_background").mkdir(parents=True)
    (data / "omniglot" / "images_evaluation").mkdir()
    monkeypatch.setenv("METAKERAS_DATA", str(data))
    assert main(["datasets"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert (
        "present" in lines["omniglot"] and str(data / "omniglot") in lines["omniglot"]
    )
    assert "built-in" in lines["digits"] and "generated" in lines["sinusoid"]
    assert (
        "missing" in lines["mini-imagenet"] and "--data-dir" in lines["mini-imagenet"]
    )
    monkeypatch.delenv("METAKERAS_DATA")
    (tmp_path / "flowers" / "empty").mkdir(parents=True)
    assert main(["datasets", "--data-dir", str(tmp_path / "flowers")]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "missing" in lines["image-folder"]
    folder = tmp_path / "flowers" / "rose"
    folder.mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(folder / "0.png")
    assert main(["datasets", "--data-dir", str(tmp_path / "flowers")]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "missing" in lines["omniglot"]
    assert "present" in lines["image-folder"]
