"""The one exception type for mistakes a user can fix (bad files, bad specs, missing libraries)."""

from __future__ import annotations

# The extra of pyproject.toml that installs each optional module.
EXTRAS = {
    "torch": "torch",
    "onnxscript": "torch",
    "onnxruntime": "cpu",
    "matplotlib": "plot",
    "tensorrt": "tensorrt",
    "tritonclient": "serve",
    "pytriton": "serve",
}
_EXTRA_NOTES = {
    "torch": " (for the CPU build: pip install torch==2.13.0 first)",
    "cpu": " (or drconv[gpu] on a CUDA machine, never both)",
}


class DrconvError(Exception):
    """A user-facing error: the CLI prints its message as one line and exits with `exit_code`."""

    exit_code = 1


class UsageError(DrconvError):
    """A bad argument value the command line could not check by itself: exit code 2, as for usage errors."""

    exit_code = 2


class MissingDependency(DrconvError, ImportError):
    """An optional part of drconv is not installed; still an ImportError for `try: import` callers."""


def missing_dependency(exc: ImportError, what: str = "this") -> MissingDependency | None:
    """The one-line error for an ImportError of an optional module (None for anything else).

    `what` names what needed it, e.g. "drconv export"."""
    if isinstance(exc, MissingDependency):
        return exc
    module = (getattr(exc, "name", None) or "").split(".")[0]
    if module not in EXTRAS:
        return None
    extra = EXTRAS[module]
    return MissingDependency(
        f"{what} needs {module}, which is not installed: pip install 'drconv[{extra}]'{_EXTRA_NOTES.get(extra, '')}"
    )
