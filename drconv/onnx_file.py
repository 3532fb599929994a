"""Reading an .onnx file, the one way every command and runtime does it (no torch here)."""

from __future__ import annotations

import os
from pathlib import Path

import onnx

from drconv.errors import DrconvError

__all__ = ["load"]


def load(path: str | os.PathLike, external_data: bool = False) -> onnx.ModelProto:
    """The model in `path`, or a one-line DrconvError: no such file, an empty one, or not an ONNX model.

    `external_data`: also read the tensors stored beside the file (False reads the graph only).
    """
    path = Path(path)
    if not path.is_file():
        raise DrconvError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise DrconvError(f"{path} is empty (0 bytes); export a model into it with `drconv export`")
    try:
        proto = onnx.load(str(path), load_external_data=external_data)
    except Exception:  # onnx raises protobuf's DecodeError and others for a file that is not ONNX
        proto = None
    # An empty file parses as an empty ModelProto: no IR version, no graph.
    if proto is None or not proto.ir_version or not proto.graph.node:
        raise DrconvError(f"{path} is not an ONNX model; export one with `drconv export`")
    return proto
