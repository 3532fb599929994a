"""The repository itself: nothing large is tracked by accident (profiler dumps once were, 11.6 MB)."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 1 << 20  # bytes; figures and benchmark JSON under docs/ may be larger


def _tracked() -> list[str]:
    result = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=60)
    return [name for name in result.stdout.decode().split("\0") if name]


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="not a git checkout")
def test_no_file_over_1_mb_is_tracked_outside_docs():
    files = _tracked()
    assert "pyproject.toml" in files  # the listing works
    large = [
        f"{name} ({(ROOT / name).stat().st_size / 1e6:.1f} MB)"
        for name in files
        if not name.startswith("docs/") and (ROOT / name).is_file() and (ROOT / name).stat().st_size > LIMIT
    ]
    assert not large, f"tracked files over 1 MB (profiler dumps? build outputs?): {', '.join(large)}"


def test_the_openvino_pin_is_one_version_everywhere():
    """The extension links one exact OpenVINO: the install files and the messages name that one."""
    from drconv.libraries import OPENVINO_VERSION

    pins = re.findall(r"openvino==([\w.]+)", (ROOT / "requirements" / "cpu.txt").read_text())
    pins += re.findall(r"openvino==([\w.]+)", (ROOT / "pyproject.toml").read_text())
    pins += re.findall(r"openvino==([\w.]+)", (ROOT / "README.md").read_text())
    assert len(pins) >= 4 and set(pins) == {OPENVINO_VERSION}
