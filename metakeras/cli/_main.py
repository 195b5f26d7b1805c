"""`main`: parses the command line, runs the subcommand, reports its errors."""

import os
import sys

from metakeras.cli import _datasets, _demo, _evaluate, _train
from metakeras.cli._errors import CLIError
from metakeras.cli._parser import build_parser

# The function that runs each subcommand, given its parsed arguments.
_COMMANDS = {
    "demo": _demo.command,
    "train": _train.command,
    "evaluate": _evaluate.command,
    "datasets": _datasets.command,
}


def main(argv=None):
    """Runs the `metakeras` command.

    Args:
        argv: the arguments, without the program name. Defaults to `None`
            (`sys.argv[1:]`).

    Returns:
        The exit code: `0` on success, `1` for a missing file or dataset or a
        failure at run time, `2` for invalid options or values (argparse
        itself exits with `2` for unknown options), `130` when interrupted.

    Example:

    ```python
    from metakeras.cli import main
    main(["train", "--dataset", "digits", "--epochs", "1"])
    ```
    """
    args = build_parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except CLIError as error:
        print(f"metakeras {args.command}: error: {error}", file=sys.stderr)
        return error.code
    except BrokenPipeError:
        # The reader went away (`metakeras evaluate ... | head`): stop quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
