"""The machine a benchmark ran on: threads, cores, and how busy it was.

Timings taken beside another busy process are meaningless: on 2 cores,
PyTorch's default of one thread per core makes both processes wait for each
other (20x slower was measured, see `threads.py`). Every benchmark calls
`check_quiet` before it measures, which refuses to run while other processes
keep the cores it needs busy (unless `--allow-busy`), and `stamp`s its table with the
thread count and the load it saw, so every figure carries its conditions.
"""

import os
import time

# Refuse to time when other processes use more than this share of the cores.
BUSY_SHARE = 0.25


def add_arguments(parser):
    """Adds `--allow-busy` to a benchmark's argument parser."""
    parser.add_argument(
        "--allow-busy",
        action="store_true",
        help="measure even when other processes keep the cores busy "
        "(recorded in the CSV; figures are then not comparable)",
    )


def busy_cores(seconds=1.0):
    """Cores in use by all processes over `seconds` (Linux), else the load average."""
    try:
        first = _cpu_times()
        time.sleep(seconds)
        second = _cpu_times()
    except OSError:
        return os.getloadavg()[0]
    total = second[0] - first[0]
    idle = second[1] - first[1]
    return (os.cpu_count() or 1) * (1 - idle / total) if total > 0 else 0.0


def check_quiet(args):
    """Exits with a message if the machine is busy, unless `--allow-busy`.

    Returns:
        A dict describing the machine, for `stamp`.
    """
    import torch

    cores = os.cpu_count() or 1
    busy = busy_cores()
    state = {
        "torch_threads": torch.get_num_threads(),
        "cpu_cores": cores,
        "busy_cores_before": round(busy, 2),
        "allow_busy": bool(getattr(args, "allow_busy", False)),
    }
    # The cores this run's threads need must be free: with one thread per
    # core that is a quiet machine; a one-thread run may share 2 cores with
    # one other one-thread process (threads.py: 5% slower, not 20x).
    spare = cores * (1 + BUSY_SHARE) - state["torch_threads"]
    if busy > spare and not state["allow_busy"]:
        raise SystemExit(
            f"the machine is busy: {busy:.1f} of {cores} cores were in use by other "
            f"processes in the last second, and this run uses "
            f"{state['torch_threads']} threads. PyTorch's threads would compete with "
            "them and the timings would mean little (up to 20x slower on 2 cores). "
            "Rerun when the machine is quiet, or pass --allow-busy to measure anyway "
            "(recorded in the CSV)."
        )
    return state


def stamp(table, state):
    """Adds the machine state as columns of a results table (in place)."""
    for key, value in state.items():
        table[key] = value
    return table


def append(table, path, state):
    """Stamps `table` with the machine state and appends it to the CSV `path`.

    The earlier rows keep their own stamps; the file is replaced atomically.
    """
    import pandas as pd

    from metakeras._io import atomic_path

    stamp(table, state)
    if os.path.exists(path):
        table = pd.concat([pd.read_csv(path), table], ignore_index=True)
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)


def _cpu_times():
    with open("/proc/stat") as f:
        fields = [float(v) for v in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    return sum(fields[:8]), idle
