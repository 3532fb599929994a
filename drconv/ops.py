"""`drconv::region_conv`: the region-wise convolution as one registered PyTorch op.

`drconv::mixture_region_conv` is the same with the filters a mixture of basis filters
(`MixtureDRConv2d` in inference), mixed inside the CPU kernel (docs/region_conv_op.md).

The op is declared here, with its fake implementation beside it; its CPU kernel and its
autograd are C++, registered with the dispatcher by drconv._C (TORCH_LIBRARY_IMPL in
drconv/csrc/region_conv_torch.cpp), so an eager call is one dispatcher call with no
Python on the way to the kernel. Other devices run the torch-ops implementation below.
torch.export and torch.compile see a single node, and the ONNX exporter translates it
to one `drconv::RegionConv2d` node. The contract is in docs/region_conv_op.md.
"""

from __future__ import annotations

import torch

from drconv import _torch_kernels
from drconv._geometry import IntOrPair, check_inputs, check_tensors, normalize_params
from drconv.errors import MissingDependency

__all__ = ["cpu_kernel_isa", "region_conv"]

_lib = torch.library.Library("drconv", "FRAGMENT")
_lib.define(
    "region_conv(Tensor x, Tensor filters, Tensor guide, int[] stride, int[] padding, int[] dilation) -> Tensor"
)

_lib.define(
    "mixture_region_conv(Tensor x, Tensor coefficients, Tensor basis, Tensor guide, int[] stride, int[] padding, "
    "int[] dilation) -> Tensor"
)

try:  # the C++ kernels; importing the library registers them
    from drconv import _C  # type: ignore[attr-defined]
except ImportError as error:  # an isolated (torch-free) build, or a broken install
    raise MissingDependency(
        f"drconv's PyTorch kernel drconv._C is not installed ({error}): this drconv was built without torch; "
        "reinstall it into this environment with `pip install --no-build-isolation .` (torch installed first)"
    ) from error


def cpu_kernel_isa() -> str:
    """The instruction set the float32 CPU kernel runs on this CPU: avx512, avx2 or baseline."""
    return _C.cpu_isa()


@torch.library.impl(_lib, "region_conv", "CompositeExplicitAutograd")
def _forward(
    x: torch.Tensor,
    filters: torch.Tensor,
    guide: torch.Tensor,
    stride: list[int],
    padding: list[int],
    dilation: list[int],
) -> torch.Tensor:
    """The op on devices without a C++ kernel (CPU has one): torch ops, one GEMM per region."""
    geo = check_inputs(x, filters, guide, stride, padding, dilation)
    if geo.n == 0 or geo.c_out == 0:
        return x.new_zeros(geo.n, geo.c_out, geo.h_out, geo.w_out)
    return _torch_kernels.forward(x, filters, guide, geo)


@torch.library.register_fake("drconv::region_conv", lib=_lib)
def _region_conv_fake(x, filters, guide, stride, padding, dilation):
    geo = check_inputs(x, filters, guide, stride, padding, dilation)
    return x.new_empty(geo.n, geo.c_out, geo.h_out, geo.w_out)


def mixed_filters(coefficients: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """filters[n, r] = sum over m of coefficients[n, r, m] * basis[m], from coefficients [N, R, M]
    and an IHWO basis [M, C_in, kh, kw, C_out]: [N, R, C_out, C_in, kh, kw], an OIHW view of IHWO memory."""
    m, c_in, kh, kw, c_out = basis.shape
    ihwo = torch.matmul(coefficients, basis.reshape(m, -1))
    return ihwo.view(coefficients.shape[0], coefficients.shape[1], c_in, kh, kw, c_out).permute(0, 1, 5, 2, 3, 4)


@torch.library.impl(_lib, "mixture_region_conv", "CompositeExplicitAutograd")
def _mixture_forward(x, coefficients, basis, guide, stride, padding, dilation):
    """`drconv::mixture_region_conv` on devices without a C++ kernel (the CPU kernel mixes inside)."""
    return torch.ops.drconv.region_conv(x, mixed_filters(coefficients, basis), guide, stride, padding, dilation)


@torch.library.register_fake("drconv::mixture_region_conv", lib=_lib)
def _mixture_region_conv_fake(x, coefficients, basis, guide, stride, padding, dilation):
    return _region_conv_fake(x, mixed_filters(coefficients, basis), guide, stride, padding, dilation)


@torch.library.custom_op("drconv::region_conv_backward", mutates_args=())
def _region_conv_backward(
    grad_y: torch.Tensor,
    x: torch.Tensor,
    filters: torch.Tensor,
    guide: torch.Tensor,
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    need_x: bool,
    need_filters: bool,
    need_guide: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    geo = check_inputs(x, filters, guide, stride, padding, dilation)
    grads = _torch_kernels.backward(grad_y, x, filters, guide, geo, need_x, need_filters, need_guide)
    # A custom op cannot return None: an empty tensor stands for "not requested".
    return tuple(g if g is not None else x.new_empty(0) for g in grads)  # type: ignore[return-value]


@_region_conv_backward.register_fake
def _region_conv_backward_fake(grad_y, x, filters, guide, stride, padding, dilation, need_x, need_filters, need_guide):
    def like(t: torch.Tensor, needed: bool) -> torch.Tensor:
        return torch.empty_like(t) if needed else x.new_empty(0)

    return like(x, need_x), like(filters, need_filters), like(guide, need_guide)


def region_conv(
    x: torch.Tensor,
    filters: torch.Tensor,
    guide: torch.Tensor,
    stride: IntOrPair = 1,
    padding: IntOrPair | None = None,
    dilation: IntOrPair = 1,
) -> torch.Tensor:
    """Convolve every output pixel with the filter of its own region.

    Args:
        x: input [N, C_in, H, W].
        filters: per-sample, per-region filters [N, R, C_out, C_in, kh, kw].
        guide: guided feature [N, R, H_out, W_out]; a pixel's region is the first
            argmax over R (NaN counts as the maximum).
        stride, padding, dilation: int or (h, w); padding None means
            dilation * (k // 2) on each side.

    Returns:
        y [N, C_out, H_out, W_out], with the multiply-adds of one dense convolution.

    Raises:
        ValueError: on any shape, dtype, device or parameter mismatch.
    """
    # The op validates shapes itself (direct torch.ops calls included); here only what
    # it cannot see: non-tensor arguments and the int/pair/None convenience forms.
    check_tensors(x=x, filters=filters, guide=guide)
    if filters.dim() != 6:
        raise ValueError(f"filters must be 6-D [N, R, C_out, C_in, kh, kw], got shape {tuple(filters.shape)}")
    s, p, d = normalize_params((filters.shape[4], filters.shape[5]), stride, padding, dilation)
    return torch.ops.drconv.region_conv(x, filters, guide, list(s), list(p), list(d))
