"""What is installed and built: versions, CUDA, and the paths of the native plugin libraries."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from pathlib import Path

import torch

from drconv import __version__
from drconv.errors import DrconvError
from drconv.ops import cpu_kernel_isa

# Library file names as `make plugins` builds them (plugins/CMakeLists.txt, later issues).
PLUGIN_FILES = {
    "onnxruntime": "libdrconv_onnxruntime.so",
    "tensorrt": "libdrconv_tensorrt.so",
}
_REPO_BUILD_DIR = Path(__file__).resolve().parent.parent / "build" / "plugins"


def package_version(*dists: str) -> str | None:
    """The installed version of the first of `dists` that is installed (e.g. onnxruntime or onnxruntime-gpu)."""
    for dist in dists:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def plugin_dirs() -> list[Path]:
    """Where plugin libraries are looked for, in order: $DRCONV_PLUGIN_DIR, the package, the repo build."""
    dirs = []
    if os.environ.get("DRCONV_PLUGIN_DIR"):
        dirs.append(Path(os.environ["DRCONV_PLUGIN_DIR"]))
    dirs += [Path(__file__).resolve().parent / "lib", _REPO_BUILD_DIR]
    return dirs


def plugin_path(backend: str) -> Path | None:
    """The built library for `backend` ('onnxruntime' or 'tensorrt'), or None if not built."""
    name = PLUGIN_FILES[backend]
    for directory in plugin_dirs():
        candidate = directory / name
        if candidate.is_file():
            return candidate
    return None


_BUILD_HINTS = {
    "onnxruntime": "run `make plugins`",
    "tensorrt": "run `make plugins` on a machine with the CUDA toolkit",
}


def require_plugin(backend: str) -> Path:
    """plugin_path(backend), or a DrconvError naming the library and the command that builds it."""
    path = plugin_path(backend)
    if path is None:
        raise DrconvError(
            f"the {backend} library {PLUGIN_FILES[backend]} is not built; {_BUILD_HINTS[backend]} "
            "(or set DRCONV_PLUGIN_DIR to the folder that holds it)"
        )
    return path


def gpu() -> dict | None:
    """The first CUDA device torch sees: name, compute capability, CUDA version; None without one."""
    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability(0)
    return {"name": torch.cuda.get_device_name(0), "compute_capability": f"{major}.{minor}", "cuda": torch.version.cuda}


def plugins() -> dict[str, str | None]:
    """Each plugin library's path, None where it is not built."""
    return {backend: (str(p) if (p := plugin_path(backend)) else None) for backend in PLUGIN_FILES}


def collect() -> dict:
    """Everything `drconv info` reports, JSON-ready."""
    cuda = torch.cuda.is_available()
    return {
        "drconv": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "executable": sys.executable,
        "torch": torch.__version__,
        "onnx": package_version("onnx"),
        "onnxruntime": package_version("onnxruntime", "onnxruntime-gpu"),
        "onnxscript": package_version("onnxscript"),
        "tensorrt": package_version("tensorrt", "tensorrt-cu12", "tensorrt-cu13"),
        "cuda_available": cuda,
        "cuda_device": torch.cuda.get_device_name(0) if cuda else None,
        "torch_threads": torch.get_num_threads(),
        "cpu_kernel_isa": cpu_kernel_isa(),
        "plugins": plugins(),
    }
