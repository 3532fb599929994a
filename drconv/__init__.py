"""drconv: deploy Dynamic Region-Aware Convolution (DRConv) like an ordinary convolution.

`get_library_path` needs no torch; `DRConv2d`, `convert` and `region_conv` load torch on
first use, so that a machine that only runs exported models imports drconv without it.
"""

from __future__ import annotations

from typing import Any

from drconv.libraries import get_library_path

__version__ = "0.1.0"
__all__ = ["DRConv2d", "__version__", "convert", "get_library_path", "region_conv"]

# Where each lazy name lives. (The function `convert` lives in `conversion`: a submodule named
# `convert` would replace the function on the package once anything imported it.)
_LAZY = {"DRConv2d": "drconv.nn", "convert": "drconv.conversion", "region_conv": "drconv.ops"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'drconv' has no attribute {name!r}")
