"""DRConv2d: the Dynamic Region-Aware Convolution layer (Chen et al., CVPR 2021)."""

from __future__ import annotations

import torch
from torch import nn

from drconv._geometry import IntOrPair, normalize_params, pair
from drconv.ops import region_conv


class DRConv2d(nn.Module):
    """A drop-in convolution whose filter changes per region of each sample.

    1. A k x k "guide" convolution maps x to R channels; each output pixel belongs
       to the region of its largest guide value.
    2. A filter generator (adaptive average pool to k x k, 1x1 conv to R*R with
       sigmoid, 1x1 conv grouped by R to R*C_out*C_in) makes R filters per sample.
    3. `region_conv` convolves every pixel with its region's filter.

    The layer has no bias, like the reference implementation; follow it with a
    BatchNorm or add one yourself.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrPair = 3,
        region_num: int = 8,
        stride: IntOrPair = 1,
        padding: IntOrPair | None = None,
        dilation: IntOrPair = 1,
    ) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("region_num", region_num)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        kernel = pair(kernel_size, "kernel_size")
        if min(kernel) < 1:
            raise ValueError(f"kernel_size must be >= 1, got {kernel}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel
        self.region_num = region_num
        self.stride, self.padding, self.dilation = normalize_params(kernel, stride, padding, dilation)

        self.guide = nn.Conv2d(
            in_channels,
            region_num,
            kernel,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
        )
        self.filter_generator = nn.Sequential(
            nn.AdaptiveAvgPool2d(kernel),
            nn.Conv2d(in_channels, region_num * region_num, 1),
            nn.Sigmoid(),
            nn.Conv2d(region_num * region_num, region_num * out_channels * in_channels, 1, groups=region_num),
        )

    def region_filters(self, x: torch.Tensor) -> torch.Tensor:
        """Per-sample, per-region filters [N, R, C_out, C_in, kh, kw]."""
        kh, kw = self.kernel_size
        return self.filter_generator(x).view(x.shape[0], self.region_num, self.out_channels, self.in_channels, kh, kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"DRConv2d expects input [N, {self.in_channels}, H, W], got shape {tuple(x.shape)}")
        return region_conv(x, self.region_filters(x), self.guide(x), self.stride, self.padding, self.dilation)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"region_num={self.region_num}, stride={self.stride}, padding={self.padding}, "
            f"dilation={self.dilation}"
        )
