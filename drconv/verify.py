"""Check an exported ONNX model against PyTorch on one random input."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch

from drconv.errors import DrconvError
from drconv.runtime.ort import image_input, session

__all__ = ["OutputError", "VerifyReport", "verify_onnx"]


@dataclass(frozen=True)
class OutputError:
    name: str
    shape: tuple[int, ...]
    max_abs: float
    max_rel: float
    ok: bool


@dataclass(frozen=True)
class VerifyReport:
    input_shape: tuple[int, ...]
    atol: float
    rtol: float
    outputs: list[OutputError]

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outputs)


def _input_shape(proto: onnx.ModelProto, batch: int, size: int) -> tuple[int, ...]:
    """The graph's input shape with its symbolic axes set to `batch` and `size`."""
    _, dims = image_input(proto)
    fill = (batch, None, size, size)
    shape = []
    for axis, dim in enumerate(dims):
        if dim is not None:
            shape.append(dim)
        elif fill[axis] is None:
            raise DrconvError("the ONNX input's channel axis is symbolic; export with a fixed channel count")
        else:
            shape.append(fill[axis])
    return tuple(shape)


def verify_onnx(
    path: str | os.PathLike,
    model: torch.nn.Module,
    batch: int = 2,
    size: int = 64,
    atol: float = 1e-4,
    rtol: float = 1e-3,
    seed: int = 0,
    providers: list[str] | None = None,
) -> VerifyReport:
    """Run `model` (PyTorch) and `path` (ONNX Runtime) on one random input and compare.

    Symbolic axes take `batch` and `size`, which should differ from the exported ones so
    the dynamic axes are exercised. An output passes when |ort - torch| <= atol + rtol*|torch|
    everywhere (numpy.allclose's rule).
    """
    path = Path(path)
    if batch < 1 or size < 1:
        raise DrconvError(f"batch and size must be >= 1, got {batch} and {size}")
    sess = session(path, providers=providers)
    shape = _input_shape(onnx.load(str(path), load_external_data=False), batch, size)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    model = model.eval()
    try:
        with torch.no_grad():
            expected = model(x)
    except (RuntimeError, ValueError) as exc:
        raise DrconvError(f"the PyTorch model cannot run on input {shape}: {str(exc).splitlines()[0]}") from exc
    expected = [expected] if isinstance(expected, torch.Tensor) else list(expected)
    try:
        actual = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    except Exception as exc:
        raise DrconvError(f"ONNX Runtime failed on input {shape}: {str(exc).strip().splitlines()[0]}") from None
    if len(actual) != len(expected):
        raise DrconvError(f"{path} has {len(actual)} outputs but the model returns {len(expected)}")
    results = []
    for out, ref_t, meta in zip(actual, expected, sess.get_outputs(), strict=True):
        ref = ref_t.detach().cpu().numpy()
        if out.shape != ref.shape:
            raise DrconvError(f"output {meta.name}: ONNX Runtime gives shape {out.shape}, PyTorch {ref.shape}")
        diff = np.abs(out.astype(np.float64) - ref.astype(np.float64))
        scale = np.abs(ref.astype(np.float64))
        both_nan = np.isnan(out) & np.isnan(ref)
        ok = bool(np.all((diff <= atol + rtol * scale) | both_nan))
        diff = np.where(both_nan, 0.0, diff)
        # A NaN on one side only makes these NaN, which is what the user should see.
        max_abs = float(diff.max(initial=0.0))
        max_rel = float((diff / np.maximum(scale, np.finfo(np.float32).tiny)).max(initial=0.0))
        results.append(OutputError(meta.name, tuple(out.shape), max_abs, max_rel, ok))
    return VerifyReport(shape, atol, rtol, results)
