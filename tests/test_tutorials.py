"""Runs every numbered tutorial as a script, in its fast mode.

Each `tutorials/NN_*.py` runs as a script in a fresh process
(`_fresh_process`) with `METAKERAS_TUTORIAL_FAST=1` (tiny budgets) and
`METAKERAS_TUTORIAL_OUTPUT` set to a fresh folder. It must exit with 0 and write every file it promises:
the backticked file names of its "Outputs (under `OUTPUT`): ..." paragraph
and the images its prose shows (`![...](tutorial_output/NAME)`). A tutorial
must promise at least one file, so a new tutorial cannot pass by writing
nothing.
"""

import os
import re
import time
from pathlib import Path

import _fresh_process
import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = sorted((ROOT / "tutorials").glob("[0-9][0-9]_*.py"))
# Fast mode is meant to take under 30 s on 2 idle cores; this generous limit
# only catches a tutorial whose fast mode stopped being fast.
TIME_LIMIT_S = 120

_OUTPUTS = re.compile(r"Outputs \(under `OUTPUT`\):")
_FILE = re.compile(r"`([\w./-]+\.[A-Za-z0-9]+)`")
_IMAGE = re.compile(r"!\[[^\]]*\]\(tutorial_output/([^)\s]+)\)")


def promised_files(source):
    """File names a tutorial says it writes under `OUTPUT`."""
    names = set(_IMAGE.findall(source))
    lines = source.splitlines()
    for i, line in enumerate(lines):
        if not _OUTPUTS.search(line):
            continue
        paragraph = [line]
        for following in lines[i + 1 :]:
            if not following.startswith("#") or following.strip() == "#":
                break
            paragraph.append(following)
        text = " ".join(paragraph)
        names.update(_FILE.findall(text[_OUTPUTS.search(text).end() :]))
    return sorted(names)


def test_tutorials_are_found():
    names = [path.name for path in TUTORIALS]
    for expected in (
        "01_quickstart.py",
        "02_few_shot_omniglot.py",
        "03_custom_task_sampler.py",
        "04_protonet_maml_reptile.py",
        "07_save_load_finetune.py",
    ):
        assert expected in names


def test_promised_files_are_parsed():
    source = (
        "# %% [markdown]\n# Intro `not_a_file`.\n#\n"
        "# Outputs (under `OUTPUT`): `a.csv`,\n# `b/c.png` and `d.keras`.\n#\n"
        "# Later `e.csv` is not promised.\n"
        "# ![plot](tutorial_output/f.png)\n"
    )
    assert promised_files(source) == ["a.csv", "b/c.png", "d.keras", "f.png"]


@pytest.mark.slow
@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs_in_fast_mode(path, tmp_path):
    promised = promised_files(path.read_text(encoding="utf-8"))
    assert promised, (
        f"{path.name} promises no output files: add a markdown line "
        "'Outputs (under `OUTPUT`): `file.png`, ...' naming what it writes."
    )
    env = dict(
        os.environ,
        METAKERAS_TUTORIAL_FAST="1",
        METAKERAS_TUTORIAL_OUTPUT=str(tmp_path),
        KERAS_BACKEND="torch",
        MPLBACKEND="Agg",
    )
    start = time.perf_counter()
    exit_code, output = _fresh_process.run(
        path=path,
        env=env,
        cwd=ROOT,
        log=tmp_path.parent / f"{path.stem}.log",
        timeout=TIME_LIMIT_S,
    )
    seconds = time.perf_counter() - start
    assert exit_code == 0, (
        f"{path.name} failed after {seconds:.0f} s (exit code {exit_code}):\n{output}"
    )
    missing = [name for name in promised if not (tmp_path / name).is_file()]
    assert not missing, f"{path.name} did not write {missing}"
    for name in promised:
        assert (tmp_path / name).stat().st_size > 0, f"{name} is empty"
    print(f"{path.name}: {seconds:.1f} s")
