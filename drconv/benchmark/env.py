"""What a reader needs to trust a benchmark's figures: machine, threads, GPU, versions, revision."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from pathlib import Path

from drconv import __version__
from drconv.info import gpu, package_version, plugins, torch_op_isa

_REPO = Path(__file__).resolve().parent.parent.parent


def cpu_model() -> str:
    """The CPU's marketing name (from /proc/cpuinfo on Linux), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_revision() -> str | None:
    """HEAD of the drconv checkout this runs from, '+dirty' with uncommitted changes; None outside git."""
    try:
        rev = subprocess.run(
            ["git", "-C", str(_REPO), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(_REPO), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def collect(threads: int) -> dict:
    """The `env` block of a benchmark result."""
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "threads": threads,
        # How idle OpenMP (PyTorch) workers wait: unset is libgomp's default (spin, then sleep).
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "gpu": gpu(),
        "platform": platform.platform(),
        "versions": {
            "drconv": __version__,
            "python": platform.python_version(),
            "torch": package_version("torch"),
            "onnxruntime": package_version("onnxruntime", "onnxruntime-gpu"),
            "onnx": package_version("onnx"),
            "numpy": package_version("numpy"),
            "tensorrt": package_version("tensorrt", "tensorrt-cu12", "tensorrt-cu13"),
        },
        "git": git_revision(),
        "cpu_kernel_isa": torch_op_isa(),
        "plugins": plugins(),
    }
