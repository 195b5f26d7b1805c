"""The process group: joining it (`initialize`), this process's place in it.

Under `torchrun` every process finds the group's address, its rank and the
number of processes in environment variables; `initialize` reads them,
chooses the backend (`gloo` on CPUs, `nccl` on GPUs) and joins. Outside
`torchrun` every function here answers as for a single process.
"""

import atexit
import contextlib
import datetime
import os

import torch
import torch.distributed as dist

from metakeras._checks import is_number

BACKENDS = ("gloo", "nccl")
DEFAULT_TIMEOUT_S = 1800.0
_TIMEOUT_ENV = "METAKERAS_DIST_TIMEOUT"
_BACKEND_ENV = "METAKERAS_DIST_BACKEND"
_TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def is_distributed():
    """Whether this process trains together with other processes.

    Returns:
        `True` when a `torch.distributed` process group is initialized and
        holds more than one process; `False` otherwise, in which case every
        helper of `metakeras.distributed` is a no-op.

    Example:

    >>> from metakeras import distributed
    >>> distributed.is_distributed()  # a plain `python` process
    False
    """
    return group_ready() and dist.get_world_size() > 1


def rank():
    """This process's rank, `0` for the process that writes files and logs.

    Before `initialize()` it reads `torchrun`'s `RANK` variable, so it can
    decide early which process prints.

    Returns:
        The rank in the process group if one is initialized, else the `RANK`
        environment variable, else `0`.

    Example:

    >>> from metakeras import distributed
    >>> distributed.rank()
    0
    """
    if group_ready():
        return dist.get_rank()
    return env_int("RANK", 0)


def world_size():
    """The number of processes training together.

    Returns:
        The size of the process group if one is initialized, else the
        `WORLD_SIZE` environment variable, else `1`.

    Example:

    >>> from metakeras import distributed
    >>> distributed.world_size()
    1
    """
    if group_ready():
        return dist.get_world_size()
    return env_int("WORLD_SIZE", 1)


def initialize(backend=None, timeout=None):
    """Joins the process group that `torchrun` set up for this process.

    Call it once per process, before building the model: with `nccl` it
    also selects this process's GPU (`LOCAL_RANK`), where Keras then puts
    the model. Outside `torchrun` (no `RANK`, `WORLD_SIZE`, `MASTER_ADDR`,
    `MASTER_PORT` in the environment) it does nothing, so one script runs
    both ways. Calling it again is a no-op. The process group is destroyed
    when the process exits.

    A process that stops answering cannot hang the others forever: joining
    and every later collective operation give up after `timeout` seconds
    with an error. Under `torchrun`, a process that fails makes `torchrun`
    stop the others and exit with a non-zero code.

    Args:
        backend: `"gloo"` (CPU) or `"nccl"` (one CUDA GPU per process).
            Defaults to `None`: the `METAKERAS_DIST_BACKEND` environment
            variable if set, else `"nccl"` when Keras runs on a CUDA device
            and `"gloo"` otherwise.
        timeout: seconds to wait for the other processes, when joining and
            in every collective operation; a number or a
            `datetime.timedelta`. Defaults to `None`: the
            `METAKERAS_DIST_TIMEOUT` environment variable if set, else
            1800 (30 minutes).

    Returns:
        `True` if this process is now part of a process group, `False`
        outside `torchrun`.

    Raises:
        ValueError: for an unknown or unavailable backend, a non-positive
            timeout, incomplete `torchrun` variables, or `LOCAL_RANK`
            without a matching GPU.
        RuntimeError: if the other processes do not join within `timeout`.

    Example:

    ```python
    # torchrun --nproc-per-node=2 train.py
    from metakeras import distributed
    distributed.initialize()  # gloo on CPU, nccl on GPUs
    print(distributed.rank(), "of", distributed.world_size())
    ```
    """
    if group_ready():
        return True
    if not _under_torchrun():
        return False
    backend = _resolve_backend(backend)
    seconds = _resolve_timeout(timeout)
    if backend == "nccl":
        _select_gpu()
    _join(backend, seconds)
    atexit.register(_shutdown)
    return True


def _under_torchrun():
    """Whether `torchrun` described a process group; raises if only in part."""
    present = [name for name in _TORCHRUN_ENV if name in os.environ]
    if not present:
        return False
    if len(present) < len(_TORCHRUN_ENV):
        missing = [name for name in _TORCHRUN_ENV if name not in os.environ]
        raise ValueError(
            "metakeras.distributed.initialize() found some torchrun variables "
            f"({', '.join(present)}) but not {', '.join(missing)}. Launch with "
            "`torchrun --nproc-per-node=N script.py`, or set all of "
            f"{', '.join(_TORCHRUN_ENV)}."
        )
    return True


def _select_gpu():
    """Makes GPU `LOCAL_RANK` this process's device, as `nccl` needs."""
    local = env_int("LOCAL_RANK", 0)
    count = torch.cuda.device_count()
    if local >= count:
        raise ValueError(
            f"backend 'nccl' needs one GPU per process, but LOCAL_RANK={local} "
            f"and {count} GPU(s) are visible. Launch at most {count} "
            "process(es) per node (`--nproc-per-node`), or use backend='gloo'."
        )
    torch.cuda.set_device(local)


def _join(backend, seconds):
    """Joins the process group, giving up after `seconds`."""
    try:
        dist.init_process_group(
            backend=backend, timeout=datetime.timedelta(seconds=seconds)
        )
    except (RuntimeError, ValueError) as error:
        raise RuntimeError(
            f"Process {os.environ['RANK']} of {os.environ['WORLD_SIZE']} could not "
            f"join the {backend} process group at {os.environ['MASTER_ADDR']}:"
            f"{os.environ['MASTER_PORT']} within {seconds:g} s: "
            f"{str(error).rstrip('.')}. Check "
            "that every process was started (same --nnodes, --nproc-per-node "
            "and --rdzv-endpoint on every node) and can reach that address."
        ) from error


def _resolve_backend(backend):
    if backend is None:
        backend = os.environ.get(_BACKEND_ENV) or None
    if backend is None:
        # The device Keras's torch backend picks: `KERAS_TORCH_DEVICE`, else
        # CUDA when available.
        default = "cuda" if torch.cuda.is_available() else "cpu"
        device = os.environ.get("KERAS_TORCH_DEVICE", default)
        cuda = device.startswith("cuda") and torch.cuda.is_available()
        backend = "nccl" if cuda and dist.is_nccl_available() else "gloo"
    if backend not in BACKENDS:
        raise ValueError(
            f"`backend` must be one of {BACKENDS} (or None to choose from the "
            f"device). Received: backend={backend!r}"
        )
    if not dist.is_backend_available(backend):
        raise ValueError(
            f"backend {backend!r} is not available in this PyTorch build "
            f"(torch {torch.__version__}); use 'gloo' on CPU."
        )
    return backend


def _resolve_timeout(timeout):
    source = "timeout"
    if timeout is None and os.environ.get(_TIMEOUT_ENV):
        source, timeout = _TIMEOUT_ENV, os.environ[_TIMEOUT_ENV]
        with contextlib.suppress(ValueError):  # else reported below
            timeout = float(timeout)
    if timeout is None:
        return DEFAULT_TIMEOUT_S
    if isinstance(timeout, datetime.timedelta):
        timeout = timeout.total_seconds()
    if not is_number(timeout, positive=True):
        raise ValueError(
            f"`{source}` must be a positive number of seconds or a "
            f"datetime.timedelta. Received: {timeout!r}"
        )
    return float(timeout)


def group_ready():
    """Whether a `torch.distributed` process group is initialized."""
    return dist.is_available() and dist.is_initialized()


def env_int(name, default):
    """The integer environment variable `name`, or `default` when unset."""
    value = os.environ.get(name)
    try:
        return int(value) if value is not None else default
    except ValueError:
        raise ValueError(
            f"The environment variable {name} must be an integer; it is {value!r}."
        ) from None


def _shutdown():
    if group_ready():
        # Shutting down anyway; a peer may already be gone.
        with contextlib.suppress(Exception):
            dist.destroy_process_group()
