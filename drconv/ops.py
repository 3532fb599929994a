"""`drconv::region_conv`: the region-wise convolution as one registered PyTorch op.

One op (torch.library.custom_op) with its fake implementation and autograd beside
it, so torch.export and torch.compile see a single node and the ONNX exporter can
translate it to one `drconv::RegionConv2d` node. The contract is in
docs/region_conv_op.md.
"""

from __future__ import annotations

import torch

from drconv import _torch_kernels
from drconv._geometry import IntOrPair, check_inputs, check_tensors, normalize_params

try:  # the fused C++ CPU kernel; built by `make` (pip install -e .)
    from drconv import _C  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - exercised only on installs without a compiler
    _C = None

__all__ = ["native_cpu_kernel_available", "region_conv"]


def native_cpu_kernel_available() -> bool:
    """Whether the fused C++ CPU forward kernel (drconv._C) was built."""
    return _C is not None


def _uses_native(x: torch.Tensor) -> bool:
    return _C is not None and x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)


def _forward(
    x: torch.Tensor,
    filters: torch.Tensor,
    guide: torch.Tensor,
    stride: list[int],
    padding: list[int],
    dilation: list[int],
) -> torch.Tensor:
    geo = check_inputs(x, filters, guide, stride, padding, dilation)
    if geo.n == 0 or geo.c_out == 0:
        return x.new_zeros(geo.n, geo.c_out, geo.h_out, geo.w_out)
    if _uses_native(x):
        return _C.region_conv_forward(
            x.contiguous(), filters.contiguous(), guide.contiguous(), stride, padding, dilation
        )
    return _torch_kernels.forward(x, filters, guide, geo)


# The op's implementation on every device; also called directly in eager inference
# (region_conv's _eager_inference).
_region_conv = torch.library.custom_op("drconv::region_conv", mutates_args=())(_forward)


@_region_conv.register_fake
def _region_conv_fake(x, filters, guide, stride, padding, dilation):
    geo = check_inputs(x, filters, guide, stride, padding, dilation)
    return x.new_empty(geo.n, geo.c_out, geo.h_out, geo.w_out)


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


def _setup_context(ctx, inputs, output):
    x, filters, guide, stride, padding, dilation = inputs
    ctx.save_for_backward(x, filters, guide)
    ctx.conv = (stride, padding, dilation)


def _backward(ctx, grad_y):
    x, filters, guide = ctx.saved_tensors
    need_x, need_filters, need_guide = ctx.needs_input_grad[:3]
    grads = torch.ops.drconv.region_conv_backward(
        grad_y, x, filters, guide, *ctx.conv, need_x, need_filters, need_guide
    )
    grads = [g if needed else None for g, needed in zip(grads, (need_x, need_filters, need_guide), strict=True)]
    return *grads, None, None, None


_region_conv.register_autograd(_backward, setup_context=_setup_context)


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
    if _eager_inference(x, filters, guide):
        return _forward(x, filters, guide, list(s), list(p), list(d))
    return torch.ops.drconv.region_conv(x, filters, guide, list(s), list(p), list(d))


def _plain_keys() -> tuple[object, ...]:
    with torch.inference_mode():
        inference = torch._C._dispatch_keys(torch.empty(0))
    return torch._C._dispatch_keys(torch.empty(0)), inference


def _eager_inference(*tensors: torch.Tensor) -> bool:
    """Whether this call may run the op's CPU implementation directly, without the dispatcher.

    The op's dispatch (autograd wrapper, redispatch, backend wrapper, all in Python) costs
    ~0.1 ms a call at 64x56x56 in a serving loop, 4-7% of the op (docs/performance.md);
    in eager inference on plain CPU tensors it does nothing, so it is skipped. Anything
    that must see the op (autograd, tracing, export, torch.compile, dispatch or function
    modes, functorch, tensor subclasses, autocast) takes the op as before; so does any
    torch whose private introspection functions this relies on are missing.
    """
    try:
        plain = _PLAIN_KEYS
        if (
            torch.compiler.is_compiling()  # first: Dynamo folds it, and must not trace what follows
            or torch._C._len_torch_dispatch_stack() > 0
            or torch._C._is_torch_function_mode_enabled()
            or torch._C._functorch.peek_interpreter_stack() is not None
            or torch.jit.is_tracing()
            or torch.is_autocast_enabled("cpu")
        ):
            return False
        grad = torch.is_grad_enabled()
        return all(
            type(t) is torch.Tensor
            and torch._C._dispatch_keys(t) in plain
            and _uses_native(t)
            and not (grad and t.requires_grad)
            for t in tensors
        )
    except (AttributeError, TypeError, RuntimeError):  # pragma: no cover - a torch without these internals
        return False


_PLAIN_KEYS = _plain_keys()
