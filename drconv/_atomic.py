"""Files appear whole or not at all: written to a temporary file beside the target, then renamed.

Only regular files are replaced. A symlink is followed (its target is written, the link
stays), and anything else that exists at the path (a device such as /dev/null, a FIFO, a
socket, a directory) is refused: renaming over it would replace it with a regular file.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from drconv.errors import DrconvError


def target(path: str | os.PathLike) -> Path:
    """The file that writing `path` replaces: a symlink's final target (the link stays), else `path`."""
    path = Path(path)
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def check_writable(path: str | os.PathLike, what: str = "") -> str:
    """Fail early, before long work, where `path` cannot be written; return the hint for later errors."""
    given, path = Path(path), target(path)
    hint = f"; choose a writable location with {what}" if what else ""
    shown = given if given == path else f"{given} (a link to {path})"
    if path.is_dir():
        raise DrconvError(f"cannot write {shown}: it is a directory{hint}")
    if path.exists() and not path.is_file():
        raise DrconvError(
            f"cannot write {shown}: it exists and is not a regular file (a device, FIFO or socket), "
            f"so drconv will not replace it{hint}"
        )
    if not path.parent.is_dir():
        raise DrconvError(f"cannot write {shown}: directory {path.parent} does not exist{hint}")
    if not os.access(path.parent, os.W_OK):
        raise DrconvError(f"cannot write {shown}: directory {path.parent} is not writable{hint}")
    return hint


@contextmanager
def atomic_path(path: str | os.PathLike, what: str = "") -> Iterator[Path]:
    """Yield a temporary path in `path`'s folder; rename it onto `path` if the block succeeds.

    On any failure the temporary file is removed and `path` is left as it was. OSErrors
    become a DrconvError that names the file (`what` says which flag chose it, e.g. "-o").
    """
    hint = check_writable(path, what)
    path = target(path)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise DrconvError(f"cannot write {path}: {exc.strerror}{hint}") from None
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        raise DrconvError(f"cannot write {path}: {exc.strerror}") from None
    finally:
        with suppress(FileNotFoundError):
            tmp.unlink()


def write_bytes(path: str | os.PathLike, data: bytes, what: str = "") -> None:
    with atomic_path(path, what) as tmp:
        tmp.write_bytes(data)
