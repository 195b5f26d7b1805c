"""The error the `metakeras` command reports in one line, without a traceback."""


class CLIError(Exception):
    """A user mistake or missing input: printed without a traceback.

    `metakeras.cli.main` prints it as `metakeras <command>: error: <message>`
    and returns its `code` as the exit code.

    Args:
        message: what went wrong and what to do about it.
        code: the exit code. Defaults to `2` (bad usage); `1` is used for
            missing files and failures at run time.
    """

    def __init__(self, message, code=2):
        super().__init__(message)
        self.code = code
