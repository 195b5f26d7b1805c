import os
import tempfile

import _fresh_process


def _run(code, **env_changes):
    """`(exit code, output)` of `code` in a fresh process (Keras not imported)."""
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    env.update(env_changes)
    with tempfile.TemporaryDirectory() as folder:
        return _fresh_process.run(
            code=code,
            env=env,
            cwd=folder,
            log=os.path.join(folder, "output.log"),
            timeout=120,
        )


def test_import_selects_torch_backend_when_unset():
    exit_code, output = _run(
        "import metakeras, keras, os; "
        "print(keras.backend.backend(), os.environ['KERAS_BACKEND'])"
    )
    assert exit_code == 0, output
    assert output.split() == ["torch", "torch"]


def test_other_backend_in_environment_is_refused():
    exit_code, output = _run("import metakeras", KERAS_BACKEND="jax")
    assert exit_code != 0
    assert "KERAS_BACKEND='jax'" in output
    assert "Set KERAS_BACKEND=torch" in output


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
    exit_code, output = _run(code)
    assert exit_code != 0
    assert "already imported with the 'tensorflow' backend" in output
    assert "Import metakeras before keras" in output
