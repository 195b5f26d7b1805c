import os
import subprocess
import sys
import textwrap

import pytest
from conftest import cpu_only, requires_cuda

import metakeras

glibc_only = pytest.mark.skipif(
    not hasattr(metakeras.config._glibc(), "mallinfo2"),
    reason="needs glibc 2.33 or later (mallopt, mallinfo2)",
)

# Whether a live 24 MiB, then 30 MiB, buffer sits in its own memory mapping (which glibc
# unmaps on free, so its next use page-faults afresh) rather than in the heap
# (kept for reuse), before and after one MAML training step, in a fresh
# process so that the allocator starts from glibc's defaults. (glibc raises its
# threshold to the size of each mapping it frees, hence two sizes.)
_SCRIPT = textwrap.dedent(
    """
    import ctypes, sys
    import metakeras, keras, numpy as np, torch

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
            "fsmblks", "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = MallInfo2

    def mapped(mib):
        before = libc.mallinfo2().hblkhd
        buffer = torch.ones(mib * 2**18)
        return libc.mallinfo2().hblkhd - before >= mib * 2**20

    if sys.argv[1] == "disable":
        metakeras.config.disable_malloc_tuning()
    untuned = mapped(24)
    learner = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    model = metakeras.MAML(learner, inner_steps=1)
    model.compile(optimizer="sgd", loss="mse")
    x = np.zeros((2, 3, 2), "float32")
    model.train_on_batch(
        {"support_x": x, "support_y": x, "query_x": x, "query_y": x}
    )
    tuned = mapped(30)
    print(untuned, tuned, metakeras.config._state["applied"])
    """
)


# Every configuration the tests below ask for. Their fresh processes start
# together at the first request, since each spends most of its time importing.
_CONFIGURATIONS = (("default", ()), ("disable", ()))
_running = {}
_results = {}


def _start(mode, environment):
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("MALLOC_") and key != "METAKERAS_MALLOC_TUNING"
    }
    env.update(environment)
    return subprocess.Popen(
        [sys.executable, "-c", _SCRIPT, mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _mapped(mode, **environment):
    key = (mode, tuple(sorted(environment.items())))
    if key not in _results:
        if not (_running or _results):
            _running.update({c: _start(c[0], dict(c[1])) for c in _CONFIGURATIONS})
        process = _running.pop(key, None) or _start(mode, environment)
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr[-3000:]
        _results[key] = [word == "True" for word in stdout.split()]
    return _results[key]


@glibc_only
@cpu_only
def test_training_keeps_freed_memory_for_reuse():
    untuned, tuned, applied = _mapped("default")
    assert applied
    assert untuned  # glibc's default: mapped, unmapped on free
    assert not tuned  # from the heap, kept for reuse


@glibc_only
@requires_cuda
def test_training_on_a_gpu_leaves_the_allocator_alone():
    untuned, tuned, applied = _mapped("default")
    assert not applied
    assert untuned and tuned


@glibc_only
def test_malloc_tuning_can_be_turned_off():
    untuned, tuned, applied = _mapped("disable")
    assert not applied
    assert untuned and tuned


@pytest.mark.parametrize(
    "variable, value",
    [
        ("METAKERAS_MALLOC_TUNING", "0"),
        ("MALLOC_TRIM_THRESHOLD_", "131072"),  # the user's own choice
    ],
)
def test_the_environment_turns_malloc_tuning_off(monkeypatch, variable, value):
    monkeypatch.setitem(metakeras.config._state, "applied", False)
    monkeypatch.setitem(metakeras.config._state, "enabled", None)
    monkeypatch.setenv(variable, value)
    assert not metakeras.config._tune_malloc_for_training("cpu")
    assert not metakeras.config._state["applied"]


def test_switches(monkeypatch):
    monkeypatch.setitem(metakeras.config._state, "enabled", None)
    monkeypatch.setenv("METAKERAS_MALLOC_TUNING", "0")
    assert not metakeras.config.is_malloc_tuning_enabled()
    metakeras.config.enable_malloc_tuning()
    assert metakeras.config.is_malloc_tuning_enabled()
    monkeypatch.delenv("METAKERAS_MALLOC_TUNING")
    monkeypatch.setitem(metakeras.config._state, "enabled", None)
    assert metakeras.config.is_malloc_tuning_enabled()


def test_no_tuning_off_the_cpu(monkeypatch):
    monkeypatch.setitem(metakeras.config._state, "applied", False)
    monkeypatch.setitem(metakeras.config._state, "enabled", True)
    assert not metakeras.config._tune_malloc_for_training("cuda")
    assert not metakeras.config._state["applied"]
