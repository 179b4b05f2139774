"""The one exception a command raises to stop with a message and an exit code."""


class CliError(Exception):
    """Shown to the user as ``heaptrail COMMAND: message``; the process exits with
    ``exit_code`` (2: bad usage or input, 1: the operation failed)."""

    def __init__(self, message, exit_code=1):
        super().__init__(message)
        self.exit_code = exit_code
