"""Region-wise convolution written with PyTorch tensor ops, for any device.

Pixels are bucketed by (sample, region) and each bucket is one GEMM with its own
filter, so the multiply-adds equal one dense convolution, not R of them. On the CPU the
op's forward is the C++ kernel (drconv._C); this path is its forward on every other
device (CUDA included: the shared CUDA kernel is not registered with the op yet), the
backward everywhere, and the tests' second implementation of the forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from drconv._geometry import Geometry


def region_index(guide: torch.Tensor) -> torch.Tensor:
    """Region of each output pixel, [N, H_out*W_out] int64.

    torch.argmax returns the first maximum and treats NaN as the maximum, so the
    index is always in [0, R) even for a NaN guide.
    """
    return guide.argmax(dim=1).flatten(1)


def sort_by_region(guide: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """Permutation of all N*L pixels grouped by (sample, region), and each group's size."""
    n, regions = guide.shape[:2]
    key = region_index(guide) + regions * torch.arange(n, device=guide.device).unsqueeze(1)
    key = key.flatten()
    order = torch.argsort(key, stable=True)
    counts = torch.bincount(key, minlength=n * regions).tolist()
    return order, counts


def patch_rows(x: torch.Tensor, geo: Geometry, order: torch.Tensor) -> torch.Tensor:
    """im2col rows [len(order), kh*kw*C] in (kh, kw, C) order for the pixels in `order`.

    A channels-last strided view makes every patch row a gather of kh runs of
    contiguous memory, and only the requested pixels are copied.
    """
    ph, pw = geo.padding
    xp = F.pad(x, (pw, pw, ph, ph)).permute(0, 2, 3, 1).contiguous()
    s_n, s_h, s_w, s_c = xp.stride()
    view = xp.as_strided(
        (geo.n, geo.h_out, geo.w_out, geo.kh, geo.kw, geo.c_in),
        (
            s_n,
            geo.stride[0] * s_h,
            geo.stride[1] * s_w,
            geo.dilation[0] * s_h,
            geo.dilation[1] * s_w,
            s_c,
        ),
    )
    pixels = geo.h_out * geo.w_out
    sample, pixel = order // pixels, order % pixels
    return view[sample, pixel // geo.w_out, pixel % geo.w_out].reshape(len(order), -1)


def filter_rows(filters: torch.Tensor) -> torch.Tensor:
    """Filters as [N*R, C_out, kh*kw*C_in], matching patch_rows' column order."""
    n, regions, c_out = filters.shape[:3]
    return filters.permute(0, 1, 2, 4, 5, 3).reshape(n * regions, c_out, -1)


def _segments(counts: list[int]):
    start = 0
    for seg, count in enumerate(counts):
        if count:
            yield seg, slice(start, start + count)
        start += count


def forward(x: torch.Tensor, filters: torch.Tensor, guide: torch.Tensor, geo: Geometry) -> torch.Tensor:
    pixels = geo.h_out * geo.w_out
    order, counts = sort_by_region(guide)
    rows = patch_rows(x, geo, order)
    weights = filter_rows(filters)
    out = rows.new_empty(geo.n * pixels, geo.c_out)
    for seg, span in _segments(counts):
        torch.mm(rows[span], weights[seg].t(), out=out[span])
    y = torch.empty_like(out).index_copy_(0, order, out)
    return y.view(geo.n, geo.h_out, geo.w_out, geo.c_out).permute(0, 3, 1, 2).contiguous()


def all_region_outputs(x: torch.Tensor, filters: torch.Tensor, geo: Geometry) -> torch.Tensor:
    """What every region's filter would output at every pixel, [N, R, C_out, H_out, W_out].

    R times the work of the op: only the guide gradient needs it.
    """
    weight = filters.reshape(geo.n * geo.regions * geo.c_out, geo.c_in, geo.kh, geo.kw)
    y = F.conv2d(
        x.reshape(1, geo.n * geo.c_in, geo.h, geo.w),
        weight,
        stride=geo.stride,
        padding=geo.padding,
        dilation=geo.dilation,
        groups=geo.n,
    )
    return y.view(geo.n, geo.regions, geo.c_out, geo.h_out, geo.w_out)


def backward(
    grad_y: torch.Tensor,
    x: torch.Tensor,
    filters: torch.Tensor,
    guide: torch.Tensor,
    geo: Geometry,
    need_x: bool,
    need_filters: bool,
    need_guide: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    grad_x = grad_filters = grad_guide = None
    if geo.n == 0 or geo.c_in == 0:  # y does not depend on anything: every gradient is zero
        return (
            torch.zeros_like(x) if need_x else None,
            torch.zeros_like(filters) if need_filters else None,
            torch.zeros_like(guide) if need_guide else None,
        )
    grad_y = grad_y.contiguous()
    if need_x or need_filters:
        pixels = geo.h_out * geo.w_out
        order, counts = sort_by_region(guide)
        grads = grad_y.permute(0, 2, 3, 1).reshape(geo.n * pixels, geo.c_out)[order]
        weights = filter_rows(filters)
        if need_x:
            d_rows = grads.new_empty(geo.n * pixels, weights.shape[2])
            for seg, span in _segments(counts):
                torch.mm(grads[span], weights[seg], out=d_rows[span])
            cols = torch.empty_like(d_rows).index_copy_(0, order, d_rows)
            cols = cols.view(geo.n, geo.h_out, geo.w_out, geo.kh, geo.kw, geo.c_in)
            cols = cols.permute(0, 5, 3, 4, 1, 2).reshape(geo.n, -1, pixels)
            grad_x = F.fold(
                cols,
                (geo.h, geo.w),
                (geo.kh, geo.kw),
                dilation=geo.dilation,
                padding=geo.padding,
                stride=geo.stride,
            )
        if need_filters:
            rows = patch_rows(x, geo, order)
            d_weights = torch.zeros_like(weights)
            for seg, span in _segments(counts):
                torch.mm(grads[span].t(), rows[span], out=d_weights[seg])
            grad_filters = d_weights.view(geo.n, geo.regions, geo.c_out, geo.kh, geo.kw, geo.c_in).permute(
                0, 1, 2, 5, 3, 4
            )
            grad_filters = grad_filters.contiguous()
    if need_guide:
        # Straight-through: the hard argmax routes the forward, a softmax over R
        # carries the gradient (DRConv paper, eq. 5).
        per_region = (all_region_outputs(x, filters, geo) * grad_y.unsqueeze(1)).sum(dim=2)
        soft = torch.softmax(guide, dim=1)
        grad_guide = soft * (per_region - (soft * per_region).sum(dim=1, keepdim=True))
    return grad_x, grad_filters, grad_guide
