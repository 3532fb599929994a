"""A test double of DRConv-PyTorch's DRConv2d (github shallowtoil/DRConv-PyTorch), written from its structure.

Same submodule names, shapes and forward: every one of the R filters runs over the
whole map (one grouped conv over the batch), then each pixel keeps the output of the
first argmax region of `conv_guide`, through a one-hot mask (the guide trains through a
softmax straight-through gradient). Importable as a model
factory: `--model drconv_pytorch_double:tiny_net`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Correlation(nn.Module):
    """Stand-in for the original's parameter-free correlation module: a conv grouped by batch."""

    def forward(self, x: torch.Tensor, kernel: torch.Tensor, **kwargs) -> torch.Tensor:
        batch, channels = x.shape[:2]
        filters = kernel.reshape(-1, channels, kernel.shape[2], kernel.shape[3])  # [B*R*out, C, k, k]
        out = F.conv2d(x.reshape(1, batch * channels, x.shape[2], x.shape[3]), filters, groups=batch, **kwargs)
        return out.view(batch, -1, out.shape[2], out.shape[3])


def _one_hot(guide_feature: torch.Tensor) -> torch.Tensor:
    """[B, R, 1, H, W]: 1 at each pixel's first argmax region."""
    return torch.zeros_like(guide_feature).scatter_(1, guide_feature.argmax(dim=1, keepdim=True), 1).unsqueeze(2)


class AssignIndex(torch.autograd.Function):
    """Keep each pixel's region output; the guide learns through the softmax straight-through gradient.

    forward: [B, R, out, H, W], [B, R, H, W] -> sum over r of output * one_hot(first argmax).
    backward: the kernel gets grad * one_hot; with s = softmax(guide) and g_r = sum_o grad * output_r,
    the guide gets s_r * (g_r - sum_j s_j g_j).
    """

    @staticmethod
    def forward(ctx, output: torch.Tensor, guide_feature: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(output, guide_feature)
        return (output * _one_hot(guide_feature)).sum(dim=1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        output, guide_feature = ctx.saved_tensors
        grad_output = grad.unsqueeze(1) * _one_hot(guide_feature)
        per_region = (grad.unsqueeze(1) * output).sum(dim=2)
        softmax = torch.softmax(guide_feature, dim=1)
        grad_guide = softmax * (per_region - (softmax * per_region).sum(dim=1, keepdim=True))
        return grad_output, grad_guide


class DRConv2d(nn.Module):
    """DRConv-PyTorch's layer: kwargs (stride, padding, dilation) go to both the guide and the filters."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, region_num: int = 8, **kwargs) -> None:
        super().__init__()
        self.region_num = region_num
        self.conv_kernel = nn.Sequential(
            nn.AdaptiveAvgPool2d((kernel_size, kernel_size)),
            nn.Conv2d(in_channels, region_num * region_num, kernel_size=1),
            nn.Sigmoid(),
            nn.Conv2d(
                region_num * region_num, region_num * in_channels * out_channels, kernel_size=1, groups=region_num
            ),
        )
        self.conv_guide = nn.Conv2d(in_channels, region_num, kernel_size=kernel_size, **kwargs)
        self.corr = Correlation()
        self.kwargs = kwargs
        self.asign_index = AssignIndex.apply

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel = self.conv_kernel(x)
        kernel = kernel.view(kernel.size(0), -1, kernel.size(2), kernel.size(3))  # [B, R*in*out, k, k]
        output = self.corr(x, kernel, **self.kwargs)  # [B, R*out, Ho, Wo]
        output = output.view(output.size(0), self.region_num, -1, output.size(2), output.size(3))
        return self.asign_index(output, self.conv_guide(x))


def tiny_net() -> nn.Module:
    """Two DRConv-PyTorch layers around a plain conv, seeded; input [N, 3, H, W] (H, W >= 10)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return nn.Sequential(
            DRConv2d(3, 8, 3, region_num=4, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, stride=2, padding=1),
            DRConv2d(8, 6, 3, region_num=2, stride=2),
        )
