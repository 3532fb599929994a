"""Every file drconv writes goes through drconv._atomic: whole or not at all, regular files only."""

import os
import socket
import stat
from pathlib import Path

import pytest

from drconv._atomic import check_writable, write_bytes
from drconv.errors import DrconvError


def test_a_symlink_is_followed_and_kept(tmp_path):
    real = tmp_path / "real.json"
    real.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    write_bytes(link, b"new")
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert real.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.json", "real.json"]  # no temp file left


def test_a_dangling_symlink_creates_its_target(tmp_path):
    link = tmp_path / "out.json"
    link.symlink_to(tmp_path / "made.json")
    write_bytes(link, b"x")
    assert link.is_symlink() and (tmp_path / "made.json").read_bytes() == b"x"


def test_a_fifo_is_refused_and_kept(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(DrconvError, match="not a regular file"):
        write_bytes(fifo, b"x", "-o")
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["pipe"]


def test_a_socket_and_a_link_to_one_are_refused(tmp_path):
    path = tmp_path / "s.sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        link = tmp_path / "to-socket"
        link.symlink_to(path)
        for target in (path, link):
            with pytest.raises(DrconvError, match="not a regular file"):
                write_bytes(target, b"x")
        assert stat.S_ISSOCK(path.lstat().st_mode) and link.is_symlink()


def test_a_device_is_refused_before_anything_is_written():
    # Only the check runs here: a test must never risk replacing /dev/null.
    null = Path("/dev/null")
    assert stat.S_ISCHR(null.stat().st_mode)
    with pytest.raises(DrconvError, match=r"cannot write /dev/null: it exists and is not a regular file.*-o"):
        check_writable(null, "-o")


def test_export_onto_a_device_node_keeps_it(tmp_path):
    """A character device like /dev/null, made in a temp dir (the system's own is never at risk)."""
    import subprocess

    from test_cli import DRCONV

    if os.geteuid() != 0:
        pytest.skip("making a device node needs root (os.mknod); the refusal itself is checked above")
    device = tmp_path / "null"
    os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    result = subprocess.run(
        [DRCONV, "export", "-o", str(device), "--input-shape", "1,3,32,32"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: cannot write {device}: it exists and is not a regular file")
    assert stat.S_ISCHR(device.lstat().st_mode) and [p.name for p in tmp_path.iterdir()] == ["null"]
