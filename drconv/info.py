"""What is installed and built: versions, CUDA, the CPU kernel and the native libraries (see drconv.libraries)."""

from __future__ import annotations

import platform
import sys
from importlib import metadata

from drconv import __version__
from drconv.libraries import PLUGIN_FILES, build_info, plugin_path


def package_version(*dists: str) -> str | None:
    """The installed version of the first of `dists` that is installed (e.g. onnxruntime or onnxruntime-gpu)."""
    for dist in dists:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def _torch():
    """torch, or None where it is not installed (a machine that only runs exported models)."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def gpu() -> dict | None:
    """The first CUDA device torch sees: name, compute capability, CUDA version; None without one (or torch)."""
    torch = _torch()
    if torch is None or not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability(0)
    return {"name": torch.cuda.get_device_name(0), "compute_capability": f"{major}.{minor}", "cuda": torch.version.cuda}


def plugins() -> dict[str, str | None]:
    """Each plugin library's path, None where it is not built."""
    return {backend: (str(p) if (p := plugin_path(backend)) else None) for backend in PLUGIN_FILES}


def plugins_left_out() -> dict[str, str]:
    """Why the build left a library out, by library (from the package's build_info.json)."""
    return dict((build_info() or {}).get("left_out") or {})


def torch_op_isa() -> str | None:
    """The torch op's CPU kernel ISA; None without torch or without drconv._C (a torch-free build)."""
    if _torch() is None:
        return None
    try:
        from drconv.ops import cpu_kernel_isa
    except ImportError:
        return None
    return cpu_kernel_isa()


def collect() -> dict:
    """Everything `drconv info` reports, JSON-ready; the torch entries None where torch is not installed."""
    torch = _torch()
    found = gpu()
    return {
        "drconv": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "executable": sys.executable,
        "torch": torch.__version__ if torch is not None else None,
        "onnx": package_version("onnx"),
        "onnxruntime": package_version("onnxruntime", "onnxruntime-gpu"),
        "openvino": package_version("openvino"),
        "onnxscript": package_version("onnxscript"),
        "tensorrt": package_version("tensorrt", "tensorrt-cu12", "tensorrt-cu13"),
        "cuda_available": found is not None,
        "cuda_device": found["name"] if found else None,
        "torch_threads": torch.get_num_threads() if torch is not None else None,
        "cpu_kernel_isa": torch_op_isa(),
        "plugins": plugins(),
        "plugins_left_out": plugins_left_out(),
    }
