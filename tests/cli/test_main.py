"""The entry points of the `metakeras` command."""

import subprocess
import sys

import pytest


@pytest.mark.slow
def test_python_dash_m_entry_point():
    result = subprocess.run(
        [sys.executable, "-m", "metakeras", "demo", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0
    assert "--output-dir" in result.stdout
