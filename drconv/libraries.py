"""Where drconv's native libraries are: the ONNX Runtime custom-op library, the TensorRT plugin and
the OpenVINO extension.

No torch here: a machine that only runs exported models (numpy, onnx, onnxruntime) imports
this through `drconv.get_library_path` and `drconv.runtime.ort`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from drconv.errors import DrconvError

# Library file names as plugins/CMakeLists.txt builds them.
PLUGIN_FILES = {
    "onnxruntime": "libdrconv_onnxruntime.so",
    "tensorrt": "libdrconv_tensorrt.so",
    "openvino": "libdrconv_openvino.so",
}
# The OpenVINO release the extension is built against (it links that exact libopenvino):
# requirements/cpu.txt and pyproject.toml pin the same (tests/test_repository.py).
OPENVINO_VERSION = "2026.4.1"
# Where the build puts them (setup.py: the package's lib/, an editable install's too).
PACKAGE_LIB_DIR = Path(__file__).resolve().parent / "lib"

_BUILD_HINTS = {
    "onnxruntime": "reinstall drconv (`pip install .`, or `make plugins` in a checkout)",
    "tensorrt": "reinstall drconv on a machine with the CUDA toolkit (nvcc)",
    "openvino": f"pip install openvino=={OPENVINO_VERSION}, then reinstall drconv (`make plugins` in a checkout)",
}


def plugin_dirs() -> list[Path]:
    """Where plugin libraries are looked for, in order: $DRCONV_PLUGIN_DIR, then the package's lib/."""
    dirs = []
    if os.environ.get("DRCONV_PLUGIN_DIR"):
        dirs.append(Path(os.environ["DRCONV_PLUGIN_DIR"]))
    dirs.append(PACKAGE_LIB_DIR)
    return dirs


def build_info() -> dict[str, Any] | None:
    """The package's lib/build_info.json: which libraries the build made, and why any was left out."""
    try:
        return json.loads((PACKAGE_LIB_DIR / "build_info.json").read_text())
    except (OSError, ValueError):
        return None


def plugin_path(backend: str) -> Path | None:
    """The built library for `backend` ('onnxruntime', 'tensorrt' or 'openvino'), or None if not built."""
    if backend not in PLUGIN_FILES:
        raise DrconvError(f"unknown library {backend!r}; choose one of {', '.join(PLUGIN_FILES)}")
    name = PLUGIN_FILES[backend]
    for directory in plugin_dirs():
        candidate = directory / name
        if candidate.is_file():
            return candidate
    return None


def require_plugin(backend: str) -> Path:
    """plugin_path(backend), or a DrconvError naming the library and the command that builds it."""
    path = plugin_path(backend)
    if path is None:
        reason = ((build_info() or {}).get("left_out") or {}).get(backend)
        why = f" (left out of this build: {reason})" if reason else ""
        raise DrconvError(
            f"the {backend} library {PLUGIN_FILES[backend]} is not built{why}; {_BUILD_HINTS[backend]} "
            "(or set DRCONV_PLUGIN_DIR to the folder that holds it)"
        )
    return path


def get_library_path(backend: str = "onnxruntime") -> str:
    """The path of drconv's native library for `backend`, to hand to the runtime yourself.

    `backend`: "onnxruntime" (for `SessionOptions.register_custom_ops_library`),
    "tensorrt" (for `trtexec --dynamicPlugins` or `IPluginRegistry.load_library`) or
    "openvino" (for `openvino.Core().add_extension`).
    Raises DrconvError when the library is not built.
    """
    return str(require_plugin(backend))
