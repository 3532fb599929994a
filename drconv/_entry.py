"""The `drconv` console script: an interrupt at any moment is one line and exit code 130.

This module is what the script imports first, and it imports nothing heavy itself, so the
SIGINT handler is in place before typer, rich or torch load.
"""

from __future__ import annotations

import os
import signal
import sys


class Interrupted(BaseException):
    """Raised by the SIGINT handler. Not a KeyboardInterrupt: the CLI framework turns that into
    "Aborted!" and exit 1, while this passes through it; `finally` blocks still run, so no
    partial file is left."""


def _on_sigint(signum: int, frame: object) -> None:
    raise Interrupted


def main() -> None:
    signal.signal(signal.SIGINT, _on_sigint)
    try:
        from drconv.cli import main as cli_main

        cli_main()
    except Interrupted:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not interrupt the exit
        sys.stdout.flush()
        sys.stderr.write("interrupted\n")
        sys.stderr.flush()
        # Cleanup has run on the way up; skip interpreter teardown, where an interrupted torch
        # can print tracebacks from its finalizers.
        os._exit(130)
