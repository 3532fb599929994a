"""The `drconv` console script: an interrupt at any moment is one line and exit code 130.

This module is what the script imports first, and it imports nothing heavy itself, so the
SIGINT handler is in place before typer, rich or torch load.
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType


class Interrupted(BaseException):
    """Raised by the SIGINT handler. Not a KeyboardInterrupt: the CLI framework turns that into
    "Aborted!" and exit 1, while this passes through it; `finally` blocks still run, so no
    partial file is left."""


# How long an interrupt that came during a finalizer waits before it is raised again.
RETRY_S = 0.01


def _in_finalizer(frame: FrameType | None) -> bool:
    while frame is not None:
        if frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    if _in_finalizer(frame):
        # Python prints and drops an exception raised in a finalizer ("Exception ignored in
        # <function StorageWeakRef.__del__>"), and the command would run on: raise it a
        # moment later instead, outside the finalizer.
        signal.signal(signal.SIGALRM, _on_sigint)
        signal.setitimer(signal.ITIMER_REAL, RETRY_S)
        return
    raise Interrupted


def main() -> None:
    signal.signal(signal.SIGINT, _on_sigint)
    try:
        from drconv.cli import main as cli_main

        cli_main()
    except Interrupted:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not interrupt the exit
        signal.setitimer(signal.ITIMER_REAL, 0)  # nor a retry still pending (_on_sigint)
        sys.stdout.flush()
        sys.stderr.write("interrupted\n")
        sys.stderr.flush()
        # Cleanup has run on the way up; skip interpreter teardown, where an interrupted torch
        # can print tracebacks from its finalizers.
        os._exit(130)
