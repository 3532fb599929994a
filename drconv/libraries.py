"""Where drconv's native libraries are: the ONNX Runtime custom-op library and the TensorRT plugin.

No torch here: a machine that only runs exported models (numpy, onnx, onnxruntime) imports
this through `drconv.get_library_path` and `drconv.runtime.ort`.
"""

from __future__ import annotations

import os
from pathlib import Path

from drconv.errors import DrconvError

# Library file names as `make plugins` builds them (plugins/CMakeLists.txt).
PLUGIN_FILES = {
    "onnxruntime": "libdrconv_onnxruntime.so",
    "tensorrt": "libdrconv_tensorrt.so",
}
_REPO_BUILD_DIR = Path(__file__).resolve().parent.parent / "build" / "plugins"

_BUILD_HINTS = {
    "onnxruntime": "run `make plugins`",
    "tensorrt": "run `make plugins` on a machine with the CUDA toolkit",
}


def plugin_dirs() -> list[Path]:
    """Where plugin libraries are looked for, in order: $DRCONV_PLUGIN_DIR, the package, the repo build."""
    dirs = []
    if os.environ.get("DRCONV_PLUGIN_DIR"):
        dirs.append(Path(os.environ["DRCONV_PLUGIN_DIR"]))
    dirs += [Path(__file__).resolve().parent / "lib", _REPO_BUILD_DIR]
    return dirs


def plugin_path(backend: str) -> Path | None:
    """The built library for `backend` ('onnxruntime' or 'tensorrt'), or None if not built."""
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
        raise DrconvError(
            f"the {backend} library {PLUGIN_FILES[backend]} is not built; {_BUILD_HINTS[backend]} "
            "(or set DRCONV_PLUGIN_DIR to the folder that holds it)"
        )
    return path


def get_library_path(backend: str = "onnxruntime") -> str:
    """The path of drconv's native library for `backend`, to hand to the runtime yourself.

    `backend`: "onnxruntime" (for `SessionOptions.register_custom_ops_library`) or
    "tensorrt" (for `trtexec --dynamicPlugins` or `IPluginRegistry.load_library`).
    Raises DrconvError when the library is not built.
    """
    return str(require_plugin(backend))
