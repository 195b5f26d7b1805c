"""Process-wide settings: the C allocator's treatment of freed memory.

Meta-training on the CPU allocates and frees the same large activation
buffers for every task (a 5-way 15-query conv4 episode needs tens of tensors
of 1-15 MB). With glibc's default settings, buffers above an adaptive
threshold are mapped from the kernel on every allocation and unmapped on
every free, and free memory at the top of the heap is returned to the kernel;
every reuse then pays a page fault per 4 KiB touched. Measured on conv4
second-order MAML (meta-batch 16, 2 CPU cores, see `benchmarks/README.md`):
120,000-280,000 page faults per meta-batch, with step times varying by 25%
from run to run depending on how the adaptive threshold settles; with freed
memory kept for reuse, under 1,000 faults and steady step times.

So the first time a `MetaModel` trains on the CPU, metakeras tells glibc
(through `mallopt`) to serve allocations up to 32 MiB from its heap from the
start (the ceiling glibc's adaptive threshold would otherwise creep towards)
and to keep up to 1 GiB of freed memory for reuse; `malloc_trim(0)` returns
it. Larger buffers are still mapped and unmapped each time: serving them from
the heap too fragmented it (20-way conv4 peaked ~300 MB higher). This is what
PyTorch's CPU tuning guide gets from jemalloc or tcmalloc, without preloading
a library. It applies to the whole process: resident memory stays near its
high-water mark after training instead of shrinking.

Nothing is changed when tuning is disabled (`disable_malloc_tuning()`, or the
environment variable `METAKERAS_MALLOC_TUNING=0`), when glibc's own
`MALLOC_MMAP_THRESHOLD_` / `MALLOC_TRIM_THRESHOLD_` / `MALLOC_TOP_PAD_` /
`MALLOC_MMAP_MAX_` variables are set (the user has chosen), when the C library
is not glibc (macOS, Windows, musl), or when the model's weights are not on
the CPU.
"""

import ctypes
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_HEAP_ALLOCATION_BYTES = 32 << 20
_KEEP_FREED_BYTES = 1 << 30
_GLIBC_DEFAULT_BYTES = 128 * 1024
_USER_VARIABLES = (
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_TOP_PAD_",
    "MALLOC_MMAP_MAX_",
)
_ENVIRONMENT_SWITCH = "METAKERAS_MALLOC_TUNING"

_state = {"enabled": None, "applied": False}


def enable_malloc_tuning():
    """Lets metakeras keep freed memory for reuse when it trains on the CPU.

    This is the default (unless `METAKERAS_MALLOC_TUNING=0` is set). The
    setting is applied the next time a `MetaModel` builds its train
    function on the CPU; see the module docstring for what it does.

    Example:

    >>> metakeras.config.enable_malloc_tuning()
    >>> metakeras.config.is_malloc_tuning_enabled()
    True
    """
    _state["enabled"] = True


def disable_malloc_tuning():
    """Keeps the C allocator's default settings.

    If metakeras has already applied its settings in this process, glibc's
    default thresholds (128 KiB) are restored, without the adaptive
    adjustment of the mapping threshold, which glibc cannot re-enable.

    Example:

    >>> metakeras.config.disable_malloc_tuning()
    >>> metakeras.config.is_malloc_tuning_enabled()
    False
    >>> metakeras.config.enable_malloc_tuning()
    """
    _state["enabled"] = False
    if _state["applied"]:
        library = _glibc()
        library.mallopt(_M_MMAP_THRESHOLD, _GLIBC_DEFAULT_BYTES)
        library.mallopt(_M_TRIM_THRESHOLD, _GLIBC_DEFAULT_BYTES)
        library.malloc_trim(0)
        _state["applied"] = False


def is_malloc_tuning_enabled():
    """Whether metakeras may keep freed memory for reuse when training.

    Returns:
        `True` unless `disable_malloc_tuning()` was called or the environment
        variable `METAKERAS_MALLOC_TUNING` is `"0"` (and
        `enable_malloc_tuning()` was not called since).

    Example:

    >>> metakeras.config.is_malloc_tuning_enabled()
    True
    """
    if _state["enabled"] is None:
        return os.environ.get(_ENVIRONMENT_SWITCH, "1").strip() != "0"
    return _state["enabled"]


def _tune_malloc_for_training(device_type):
    """Applies the allocator settings once, for training on `device_type`.

    Returns True if the settings are in effect.
    """
    if _state["applied"] or not is_malloc_tuning_enabled():
        return _state["applied"]
    if any(name in os.environ for name in _USER_VARIABLES):
        return False
    if device_type != "cpu":
        return False
    library = _glibc()
    if library is None:
        return False
    mapped = library.mallopt(_M_MMAP_THRESHOLD, _HEAP_ALLOCATION_BYTES)
    trimmed = library.mallopt(_M_TRIM_THRESHOLD, _KEEP_FREED_BYTES)
    _state["applied"] = bool(mapped and trimmed)
    return _state["applied"]


def _glibc():
    """The process's C library if it is glibc, else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        library = ctypes.CDLL(None)
    except OSError:
        return None
    names = ("gnu_get_libc_version", "mallopt", "malloc_trim")
    if not all(hasattr(library, name) for name in names):
        return None
    return library
