"""Every code block in README and docs runs as written, on a fresh install.

Each Python block runs in a fresh process (`_fresh_process`: Keras and
metakeras not yet imported), from an empty folder, with a
`keras.json` that names the tensorflow backend (as on machines where Keras
was set up for TensorFlow): a block works only if it imports metakeras
before keras, as the docs say. Blocks use the documented data sources:
Omniglot from `$METAKERAS_DATA` (the real archives in `../shared/data` when
present, else a small set in the official layout built here).

The blocks run with smaller counts than written (`_SHRINK`: one epoch, a
few meta-batches and episodes) so the suite stays fast; every line still
runs. Command lines in bash blocks are parsed by the `metakeras` parser,
and TOML blocks are resolved as `metakeras train --config` would.
"""

import json
import os
import pathlib
import re
import shlex
import shutil
import zipfile

import _fresh_process
import pytest
from PIL import Image, ImageDraw

from metakeras import cli
from metakeras.cli._config import read_config_file, resolve_config
from metakeras.datasets import omniglot
from metakeras.datasets._files import keras_home

ROOT = pathlib.Path(__file__).resolve().parents[1]
REAL_OMNIGLOT = ROOT.parent / "shared" / "data" / "omniglot"
DOCUMENTS = [
    "README.md",
    *sorted(str(p.relative_to(ROOT)) for p in ROOT.glob("docs/*.md")),
]
DOCUMENTS += ["tutorials/README.md", "datasets/omniglot.md"]

_SHRINK = (
    (re.compile(r"\bepochs=\d+"), "epochs=1"),
    (re.compile(r"\bsteps=\d+"), "steps=2"),
    (re.compile(r"\bepisodes=\d+"), "episodes=4"),
)


def _blocks(language):
    """`(document:line, code)` for every fenced block of `language`."""
    found = []
    for document in DOCUMENTS:
        text = (ROOT / document).read_text()
        pattern = re.compile(rf"^```{language}\n(.*?)^```", re.S | re.M)
        for match in pattern.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            found.append(pytest.param(match.group(1), id=f"{document}:{line}"))
    return found


def _omniglot_like(folder):
    """Official-layout Omniglot zips: 8 background and 6 evaluation characters."""
    folder.mkdir(parents=True)
    character = 0
    for name, alphabets in (
        ("images_background", {"Alpha": 5, "Beta": 3}),
        ("images_evaluation", {"Gamma": 6}),
    ):
        with zipfile.ZipFile(folder / f"{name}.zip", "w") as archive:
            for alphabet, count in alphabets.items():
                for c in range(1, count + 1):
                    character += 1
                    for drawer in range(1, 21):
                        image = Image.new("1", (105, 105), 1)
                        ImageDraw.Draw(image).rectangle(
                            [
                                4 * drawer,
                                7 * character,
                                4 * drawer + 20,
                                7 * character + 6,
                            ],
                            fill=0,
                        )
                        member = f"{name}/{alphabet}/character{c:02d}/{character:04d}_{drawer:02d}.png"
                        with archive.open(member, "w") as f:
                            image.save(f, format="PNG")
    return folder


def _seed_omniglot_cache(home):
    """Links the decoded real Omniglot into the fresh Keras home's cache.

    Decoding the archives takes ~11 s (tests/datasets checks it); without
    this, the first block to load Omniglot would pay it in every run.
    """
    *_, info = omniglot.load_data(REAL_OMNIGLOT)
    cache = pathlib.Path(info["cache_path"])
    target = home / cache.relative_to(keras_home())
    target.parent.mkdir(parents=True)
    try:
        os.link(cache, target)
    except OSError:  # another file system
        shutil.copyfile(cache, target)


@pytest.fixture(scope="module")
def fresh_user(tmp_path_factory):
    """The environment of a user whose Keras was configured for TensorFlow."""
    home = tmp_path_factory.mktemp("keras_home")
    (home / "keras.json").write_text(json.dumps({"backend": "tensorflow"}))
    if REAL_OMNIGLOT.is_dir():
        data = REAL_OMNIGLOT.parent
        _seed_omniglot_cache(home)
    else:
        data = tmp_path_factory.mktemp("data")
        _omniglot_like(data / "omniglot")
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("KERAS_", "METAKERAS_"))
    }
    env.update(
        KERAS_HOME=str(home),
        METAKERAS_DATA=str(data),
        PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]),
    )
    return env


@pytest.mark.parametrize("code", _blocks("python"))
def test_python_block_runs_as_written(code, fresh_user, tmp_path):
    for pattern, replacement in _SHRINK:
        code = pattern.sub(replacement, code)
    exit_code, output = _fresh_process.run(
        code=code,
        env=fresh_user,
        cwd=tmp_path,
        log=tmp_path.parent / f"{tmp_path.name}.log",
        timeout=300,
    )
    assert exit_code == 0, output


def test_blocks_start_before_keras_is_imported(fresh_user, tmp_path):
    # The fresh processes must not have Keras loaded: importing it before
    # metakeras reads the TensorFlow `keras.json` and fails, as for a user.
    outcomes = []
    for code in (
        "import keras, metakeras\nprint(keras.backend.backend())",
        "import metakeras, keras\nprint(keras.backend.backend())",
    ):
        outcomes.append(
            _fresh_process.run(
                code=code,
                env=fresh_user,
                cwd=tmp_path,
                log=tmp_path / f"{len(outcomes)}.log",
                timeout=300,
            )
        )
    (keras_first, keras_first_output), (metakeras_first, output) = outcomes
    assert keras_first != 0 and "tensorflow" in keras_first_output
    assert metakeras_first == 0 and output.strip() == "torch"


def _metakeras_commands():
    """Every `metakeras ...` command line of the bash blocks, as argv lists."""
    commands = []
    for param in _blocks("bash"):
        (code,) = param.values
        code = re.sub(r"\\\n\s*", " ", code)
        for line in code.splitlines():
            line = line.split("#", 1)[0].strip()
            words = shlex.split(line)
            for start in range(len(words)):
                if words[start] == "metakeras":
                    commands.append(pytest.param(words[start + 1 :], id=line))
                    break
    return commands


@pytest.mark.parametrize("argv", _metakeras_commands())
def test_command_lines_parse(argv):
    args = cli.build_parser().parse_args(argv)
    assert args.command == argv[0]


def test_the_documented_commands_are_covered():
    commands = {param.values[0][0] for param in _metakeras_commands()}
    assert {"demo", "train", "evaluate", "datasets"} <= commands


@pytest.mark.parametrize("code", _blocks("toml"))
def test_toml_blocks_are_valid_configurations(code, tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(code)
    settings = read_config_file(str(path))
    config = resolve_config(settings)
    for key, value in settings.items():
        assert config[key.replace("-", "_")] == value
