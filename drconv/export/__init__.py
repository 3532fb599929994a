"""Export models with DRConv layers: ONNX (custom node or portable).

`to_onnx` and `describe` load torch on first use, so that torch-free code (the runtimes,
`drconv.export.rewrite`) can import from this package.
"""

from __future__ import annotations

from typing import Any

__all__ = ["describe", "to_onnx"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from drconv.export import onnx

        return getattr(onnx, name)
    raise AttributeError(f"module 'drconv.export' has no attribute {name!r}")
