"""Fresh Python processes for tests that run user code, without the import cost.

Tutorials and documentation blocks each run in an interpreter of their own,
as a user runs them. Starting one costs ~10 s, mostly importing PyTorch,
scikit-learn and pandas; these processes are forked instead from a server
(`multiprocessing`'s forkserver) that imported those once and did nothing
else. Keras and metakeras are not preloaded: each process imports them
itself, so Keras's choice of backend (environment, `keras.json`, import
order) is made as in a new interpreter.
"""

import multiprocessing
import os
import runpy
import sys

_PRELOAD = ["numpy", "scipy", "pandas", "sklearn", "torch", "torch._dynamo"]
try:
    _CONTEXT = multiprocessing.get_context("forkserver")
    _CONTEXT.set_forkserver_preload(_PRELOAD)
except ValueError:  # no forkserver (Windows): a new interpreter every time
    _CONTEXT = multiprocessing.get_context("spawn")


def _main(code, path, env, cwd, log):
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    with open(log, "w") as stream:
        os.dup2(stream.fileno(), 1)
        os.dup2(stream.fileno(), 2)
    if path is None:  # as `python -c code`
        sys.argv = ["-c"]
        sys.path.insert(0, "")
        exec(compile(code, "<string>", "exec"), {"__name__": "__main__"})
    else:  # as `python path`
        sys.argv = [path]
        sys.path.insert(0, os.path.dirname(path))
        runpy.run_path(path, run_name="__main__")


def run(*, code=None, path=None, env, cwd, log, timeout):
    """Runs `code` (as `python -c`) or the script `path` in a fresh process.

    Args:
        code: Python source, or `None` to run `path`.
        path: a script's path, or `None` to run `code`.
        env: the process's whole environment.
        cwd: its working directory.
        log: the file that receives its stdout and stderr.
        timeout: seconds before the process is killed.

    Returns:
        `(exit_code, output)`: the process's exit code (`None` if it was
        killed at the timeout) and the last 4,000 characters of its output.
    """
    process = _CONTEXT.Process(
        target=_main, args=(code, None if path is None else str(path), env, cwd, log)
    )
    process.start()
    process.join(timeout)
    if process.exitcode is None:
        process.kill()
        process.join()
        exit_code = None
    else:
        exit_code = process.exitcode
    with open(log, errors="replace") as stream:
        return exit_code, stream.read()[-4000:]
