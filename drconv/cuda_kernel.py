"""The shared CUDA kernel as a PyTorch extension, compiled on first use where torch has CUDA.

It is the kernel the TensorRT plugin and the ONNX Runtime CUDA op run
(plugins/common/region_conv_cuda.cu); PyTorch's own `region_conv` on CUDA tensors still
takes the bucketed torch path. Used by the GPU tests and benchmarks/bench_cuda.py.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from drconv._geometry import check_inputs, pair
from drconv.errors import DrconvError

_CSRC = Path(__file__).resolve().parent / "csrc"
# The shared kernel: copied into the package by setup.py; an editable install has the checkout's.
_COMMON = next(
    (d for d in (_CSRC / "common", _CSRC.parents[1] / "plugins" / "common") if (d / "region_conv_cuda.cu").is_file()),
    _CSRC / "common",
)
_SOURCES = [_CSRC / "region_conv_cuda_torch.cpp", _COMMON / "region_conv_cuda.cu"]


@functools.cache
def extension():
    """The compiled module (torch.utils.cpp_extension.load; cached under TORCH_EXTENSIONS_DIR)."""
    if not torch.cuda.is_available():
        raise DrconvError("the CUDA kernel needs torch with CUDA and a GPU (torch.cuda.is_available() is False)")
    missing = [str(p) for p in _SOURCES if not p.is_file()]
    if missing:
        raise DrconvError(f"CUDA kernel sources not found ({', '.join(missing)}): reinstall drconv")
    from torch.utils.cpp_extension import load

    return load(
        name="drconv_cuda_kernel",
        sources=[str(p) for p in _SOURCES],
        extra_include_paths=[str(_COMMON), str(_CSRC)],
        extra_cflags=["-O3"],
        extra_cuda_cflags=["-O3"],
        verbose=False,
    )


def _checked(x, filters, guide, stride, padding, dilation) -> tuple[list[int], list[int], list[int]]:
    """Bad input raises ValueError here, before the extension: a C++ exception thrown out of
    a JIT-built extension crashed the process on a GPU machine whose compiler's C++ runtime
    differs from PyTorch's (seen on an H200, torch 2.11), so the binding's own checks are
    only a backstop."""
    stride, padding, dilation = pair(stride, "stride"), pair(padding, "padding"), pair(dilation, "dilation")
    check_inputs(x, filters, guide, stride, padding, dilation)
    if not x.is_cuda:
        raise ValueError(f"region_conv_cuda: inputs must be CUDA tensors, got {x.device}")
    if x.dtype not in (torch.float32, torch.float16):
        raise ValueError(f"region_conv_cuda: float32 or float16 inputs, got {x.dtype}")
    most = extension().max_regions  # kCudaMaxRegions (region_conv_cuda.h), as the kernel was built
    if filters.shape[1] > most:
        raise ValueError(f"region_conv_cuda: the CUDA kernel takes at most {most} regions, got R={filters.shape[1]}")
    return list(stride), list(padding), list(dilation)


def region_conv_cuda(x, filters, guide, stride=(1, 1), padding=(1, 1), dilation=(1, 1)) -> torch.Tensor:
    """y = the region-wise conv of CUDA tensors with the shared kernel (float32 or float16)."""
    return extension().forward(x, filters, guide, *_checked(x, filters, guide, stride, padding, dilation))


def bucket_cuda(x, filters, guide, stride=(1, 1), padding=(1, 1), dilation=(1, 1)):
    """The kernel's first two steps alone: (counts [N, R], region [N, P], order [N, P]), int32.

    counts: pixels per region; region: each output pixel's region; order: each sample's
    pixel indices listed region by region. For timing the steps apart and testing them.
    """
    return tuple(extension().bucket(x, filters, guide, *_checked(x, filters, guide, stride, padding, dilation)))
