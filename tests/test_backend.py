import os
import subprocess
import sys


def _run(code, **env_changes):
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    env.update(env_changes)
    return subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_import_selects_torch_backend_when_unset():
    result = _run(
        "import metakeras, keras, os; "
        "print(keras.backend.backend(), os.environ['KERAS_BACKEND'])"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["torch", "torch"]


def test_other_backend_in_environment_is_refused():
    result = _run("import metakeras", KERAS_BACKEND="jax")
    assert result.returncode != 0
    assert "KERAS_BACKEND='jax'" in result.stderr
    assert "Set KERAS_BACKEND=torch" in result.stderr


def test_keras_already_imported_with_other_backend_is_refused():
    # Only the torch backend is installed here, so a keras module already
    # imported under another backend is stood in by a module reporting one.
    code = (
        "import sys, types\n"
        "fake = types.ModuleType('keras')\n"
        "fake.backend = types.SimpleNamespace(backend=lambda: 'tensorflow')\n"
        "sys.modules['keras'] = fake\n"
        "import metakeras\n"
    )
    result = _run(code)
    assert result.returncode != 0
    assert "already imported with the 'tensorflow' backend" in result.stderr
    assert "Import metakeras before keras" in result.stderr
