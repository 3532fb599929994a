"""drconv: deploy Dynamic Region-Aware Convolution (DRConv) like an ordinary convolution.

`get_library_path` needs no torch; `DRConv2d`, `convert`, `region_conv` and the public
submodules (`drconv.models`, `drconv.export`, ...) load on first use, so that `import drconv`
stays light and a machine that only runs exported models imports drconv without torch.
"""

from __future__ import annotations

from typing import Any

from drconv.libraries import get_library_path

__version__ = "0.1.0"
__all__ = ["DRConv2d", "__version__", "convert", "get_library_path", "region_conv"]

# Where each lazy name lives. (The function `convert` lives in `conversion`: a submodule named
# `convert` would replace the function on the package once anything imported it.)
_LAZY = {"DRConv2d": "drconv.nn", "convert": "drconv.conversion", "region_conv": "drconv.ops"}
# The public submodules, reachable as `drconv.models` after a bare `import drconv`.
SUBMODULES = (
    "benchmark", "contract", "conversion", "cuda_kernel", "errors", "export", "info", "libraries",
    "model_names", "models", "nn", "onnx_file", "ops", "runtime", "summary", "verify",
)  # fmt: skip


def __getattr__(name: str) -> Any:
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in SUBMODULES:
        return importlib.import_module(f"drconv.{name}")
    raise AttributeError(f"module 'drconv' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY, *SUBMODULES})
