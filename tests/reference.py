"""The oracle: the public implementation's formulation (all R filters everywhere, then select).

R times the work of the op under test; kept only here, to check it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def naive_region_conv(x, filters, guide, stride=(1, 1), padding=None, dilation=(1, 1)):
    n, regions, c_out, c_in, kh, kw = filters.shape
    if padding is None:
        padding = (dilation[0] * (kh // 2), dilation[1] * (kw // 2))
    outs = []
    for i in range(n):
        y = F.conv2d(
            x[i : i + 1],
            filters[i].reshape(regions * c_out, c_in, kh, kw),
            stride=stride,
            padding=padding,
            dilation=dilation,
        ).view(regions, c_out, *guide.shape[2:])
        region = guide[i].argmax(dim=0)  # first max wins
        one_hot = F.one_hot(region, regions).permute(2, 0, 1).to(y.dtype)  # [R, H, W]
        outs.append((y * one_hot.unsqueeze(1)).sum(dim=0))
    return torch.stack(outs)


def naive_guide_grad(x, filters, guide, grad_y, stride, padding, dilation):
    """The straight-through guide gradient, written from the formula, loop by loop."""
    n, regions = filters.shape[:2]
    grad = torch.empty_like(guide)
    for i in range(n):
        g = torch.stack(
            [
                (
                    F.conv2d(x[i : i + 1], filters[i, r], stride=stride, padding=padding, dilation=dilation)[0]
                    * grad_y[i]
                ).sum(0)
                for r in range(regions)
            ]
        )
        s = torch.softmax(guide[i], dim=0)
        grad[i] = s * (g - (s * g).sum(0, keepdim=True))
    return grad
