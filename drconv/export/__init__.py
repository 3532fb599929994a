"""Export models with DRConv layers: ONNX (custom node or portable)."""

from drconv.export.onnx import describe, to_onnx

__all__ = ["describe", "to_onnx"]
