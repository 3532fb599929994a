"""The one exception type for mistakes a user can fix (bad files, bad specs, missing libraries)."""


class DrconvError(Exception):
    """A user-facing error: the CLI prints its message as one line and exits with `exit_code`."""

    exit_code = 1
