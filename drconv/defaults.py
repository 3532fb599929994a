"""Defaults the library and the command line share, torch-free so that the CLI reads them
without loading torch. Each lives here once; the functions and the options name it."""

from __future__ import annotations

# The default-domain ONNX opset the exporter writes, and the oldest it can: converting down
# fails on ReduceMean/ReduceSum axes inputs.
ONNX_OPSET = 18
# A model's input when none is given: one 224x224 RGB image, as the paper's models take.
INPUT_SHAPE = (1, 3, 224, 224)
# The least share of pixels each DRConv layer must route as PyTorch did (drconv verify).
MIN_AGREEMENT = 0.999
# TensorRT's builder workspace, MiB.
WORKSPACE_MB = 1024
# `drconv benchmark --layer`: regions, kernel size and batch when not given.
LAYER_REGIONS, LAYER_KERNEL, LAYER_BATCH = 8, 3, 1


def shape_text(shape: tuple[int, ...]) -> str:
    """(1, 3, 224, 224) -> '1,3,224,224', as --input-shape takes it."""
    return ",".join(map(str, shape))
