"""Argument normalisation and validation for the region-wise convolution.

Kept apart from the op registration so the eager wrapper, the kernels and the fake
implementation all apply one rule set (the op contract in docs/region_conv_op.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

IntOrPair = int | Sequence[int]


def pair(value: IntOrPair, name: str) -> tuple[int, int]:
    """Turn an int or an (h, w) pair into a pair, rejecting anything else."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an int or an (h, w) pair of ints, got {value!r}")
    if isinstance(value, int):
        return _in_int64(value, name), _in_int64(value, name)
    try:
        items = tuple(value)
    except TypeError:
        raise ValueError(f"{name} must be an int or an (h, w) pair of ints, got {value!r}") from None
    if len(items) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in items):
        raise ValueError(f"{name} must be an int or an (h, w) pair of ints, got {value!r}")
    return _in_int64(items[0], name), _in_int64(items[1], name)


def _in_int64(value: int, name: str) -> int:
    """The op's arguments are int64: a larger int is a ValueError here, not a TypeError in the binding."""
    if not -(2**63) <= value < 2**63:
        raise ValueError(f"{name} {value} does not fit in int64")
    return value


def shape_text(x: torch.Tensor) -> str:
    """A tensor's shape as Python prints a tuple, (1, 2, 3), in code TorchScript compiles too."""
    sizes = [str(v) for v in x.shape]
    return "(" + ", ".join(sizes) + ("," if len(sizes) == 1 else "") + ")"


def conv_out_size(size: int, kernel: int, stride: int, pad: int, dilation: int) -> int:
    """The ONNX/PyTorch convolution output size formula."""
    return (size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1


@dataclass(frozen=True)
class Geometry:
    """Every size the kernels need, derived once from the inputs."""

    n: int
    c_in: int
    h: int
    w: int
    regions: int
    c_out: int
    kh: int
    kw: int
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    h_out: int
    w_out: int


def normalize_params(
    kernel: tuple[int, int],
    stride: IntOrPair,
    padding: IntOrPair | None,
    dilation: IntOrPair,
) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """Resolve int/pair/None arguments to pairs and check their ranges."""
    s = pair(stride, "stride")
    d = pair(dilation, "dilation")
    if s[0] < 1 or s[1] < 1:
        raise ValueError(f"stride must be >= 1, got {s}")
    if d[0] < 1 or d[1] < 1:
        raise ValueError(f"dilation must be >= 1, got {d}")
    if padding is None:
        p = (d[0] * (kernel[0] // 2), d[1] * (kernel[1] // 2))
    else:
        p = pair(padding, "padding")
    if p[0] < 0 or p[1] < 0:
        raise ValueError(f"padding must be >= 0, got {p}")
    return s, p, d


def check_tensors(**tensors: object) -> None:
    """Reject anything that is not a tensor, by argument name."""
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")


def check_inputs(
    x: torch.Tensor,
    filters: torch.Tensor,
    guide: torch.Tensor,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
) -> Geometry:
    """Validate the three tensors against each other; raise ValueError naming what is wrong."""
    check_tensors(x=x, filters=filters, guide=guide)
    if x.dim() != 4:
        raise ValueError(f"x must be 4-D [N, C_in, H, W], got shape {tuple(x.shape)}")
    if filters.dim() != 6:
        raise ValueError(f"filters must be 6-D [N, R, C_out, C_in, kh, kw], got shape {tuple(filters.shape)}")
    if guide.dim() != 4:
        raise ValueError(f"guide must be 4-D [N, R, H_out, W_out], got shape {tuple(guide.shape)}")
    if not (x.dtype == filters.dtype == guide.dtype):
        raise ValueError(f"x, filters and guide must share one dtype, got {x.dtype}, {filters.dtype}, {guide.dtype}")
    if not x.dtype.is_floating_point:
        raise ValueError(f"x, filters and guide must be floating point, got {x.dtype}")
    if not (x.device == filters.device == guide.device):
        raise ValueError(
            f"x, filters and guide must be on one device, got {x.device}, {filters.device}, {guide.device}"
        )
    n, c_in, h, w = x.shape
    fn, regions, c_out, fc, kh, kw = filters.shape
    gn, gr, gh, gw = guide.shape
    if fn != n or gn != n:
        raise ValueError(
            f"batch size mismatch: x has N={n}, filters N={fn}, guide N={gn} "
            f"(shapes {tuple(x.shape)}, {tuple(filters.shape)}, {tuple(guide.shape)})"
        )
    if fc != c_in:
        raise ValueError(
            f"filters C_in={fc} (shape {tuple(filters.shape)}) does not match x C_in={c_in} (shape {tuple(x.shape)})"
        )
    if regions < 1:
        raise ValueError(f"filters must hold at least one region (R >= 1), got shape {tuple(filters.shape)}")
    if gr != regions:
        raise ValueError(
            f"guide R={gr} (shape {tuple(guide.shape)}) does not match filters R={regions} "
            f"(shape {tuple(filters.shape)})"
        )
    if kh < 1 or kw < 1:
        raise ValueError(f"filters kernel size must be >= 1, got shape {tuple(filters.shape)}")
    s = pair(stride, "stride")
    p = pair(padding, "padding")
    d = pair(dilation, "dilation")
    if min(s) < 1 or min(d) < 1 or min(p) < 0:
        raise ValueError(f"need stride >= 1, dilation >= 1, padding >= 0; got {s}, {d}, {p}")
    h_out = conv_out_size(h, kh, s[0], p[0], d[0])
    w_out = conv_out_size(w, kw, s[1], p[1], d[1])
    if h_out < 1 or w_out < 1:
        raise ValueError(
            f"x spatial size {h}x{w} is too small for kernel {kh}x{kw} with stride {s}, "
            f"padding {p}, dilation {d} (output would be {h_out}x{w_out})"
        )
    if gh != h_out or gw != w_out:
        raise ValueError(
            f"guide spatial size {gh}x{gw} (shape {tuple(guide.shape)}) must equal the output size "
            f"{h_out}x{w_out} of x {tuple(x.shape)} with kernel {kh}x{kw}, stride {s}, padding {p}, "
            f"dilation {d}"
        )
    return Geometry(n, c_in, h, w, regions, c_out, kh, kw, s, p, d, h_out, w_out)
