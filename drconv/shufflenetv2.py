"""ShuffleNetV2 with the paper's DRConv blocks, and its plain twin (the baseline of every comparison).

The structure, module names and parameter shapes follow megvii-research/DRConv's
`ShuffleNetV2_pytorch.py`, so its checkpoints load with `load_state_dict(strict=True)`:
in each block the right branch's two 1x1 convs are region convs (`MixtureDRConv2d`)
that share one guide, the block's 1x1 `masknet`. The plain twin has ordinary 1x1 convs
there and no masknet. Unlike the release (fixed 224), the head pools globally, so any
input whose height and width are multiples of 32 works.
"""

from typing import Final

import torch
from torch import nn

from drconv._geometry import shape_text
from drconv.nn import MixtureDRConv2d

__all__ = ["WIDTHS", "ShuffleBlock", "ShuffleNetV2"]

# Channels of the stem, the three stages and the last conv, per width multiplier.
WIDTHS = {0.5: (24, 48, 96, 192, 1024), 1.0: (24, 116, 232, 464, 1024)}
STAGE_BLOCKS = (4, 8, 4)
REGIONS = 8
BASIS = 8
TOTAL_STRIDE = 32


class ConvBN(nn.Module):
    """conv, BatchNorm, optional ReLU; the conv a region conv when `regions` is set (names as released)."""

    region: Final[bool]  # Final: TorchScript compiles only the branch this instance takes

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel: int,
        stride: int = 1,
        groups: int = 1,
        bias: bool = False,
        relu: bool = True,
        regions: int | None = None,
    ) -> None:
        super().__init__()
        self.region = regions is not None
        if regions is not None:
            self.conv: nn.Module = MixtureDRConv2d(
                c_in, c_out, kernel, region_num=regions, num_basis=BASIS, stride=stride, padding=kernel // 2, bias=bias
            )
        else:
            self.conv = nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=bias)
        self.bn = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True) if relu else nn.Identity()

    def forward(self, x: torch.Tensor, guide: torch.Tensor | None = None) -> torch.Tensor:
        if self.region:
            if guide is None:
                raise ValueError("a region conv needs its block's guide")
            x = self.conv(x, guide)
        else:
            x = self.conv(x)
        return self.relu(self.bn(x))


class ShuffleBlock(nn.Module):
    """One ShuffleNetV2 unit. Stride 1: even channels pass, odd ones take the branch. Stride 2: both branches."""

    # Final: TorchScript compiles only the branches this block has.
    two_branches: Final[bool]
    has_guide: Final[bool]

    def __init__(self, c_in: int, c_out: int, stride: int, regions: int | None) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        self.stride = stride
        self.two_branches = stride == 2
        self.has_guide = regions is not None
        branch_in = c_in if stride == 2 else c_in // 2
        mid = c_out // 2
        if regions is not None:
            self.masknet = nn.Conv2d(branch_in, regions, 1, bias=False)
        else:
            self.register_module("masknet", None)
        self.conva_right = ConvBN(branch_in, mid, 1, regions=regions)
        self.convb_right = ConvBN(mid, mid, 3, stride, groups=mid, relu=False)
        self.convc_right = ConvBN(mid, c_out - branch_in, 1, regions=regions)
        if stride == 2:
            self.conva_left = ConvBN(c_in, c_in, 3, stride, groups=c_in, relu=False)
            self.convb_left = ConvBN(c_in, c_in, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.two_branches:
            passed = self.convb_left(self.conva_left(x))
        else:
            passed, x = x[:, 0::2], x[:, 1::2]
        # The released code takes the argmax of softmax(masknet(x)); the softmax moves no
        # argmax, and the region conv's straight-through gradient applies it itself.
        guide: torch.Tensor | None = None
        if self.has_guide:
            guide = self.masknet(x)
        x = self.conva_right(x, guide)
        x = self.convb_right(x)
        x = self.convc_right(x, guide)
        return torch.cat((passed, x), 1)


class ShuffleNetV2(nn.Module):
    """ShuffleNetV2 (width 0.5 or 1.0), with DRConv blocks (regions=8, the paper's) or plain (regions=None).

    Input [N, 3, H, W] with H and W multiples of 32; output logits [N, num_classes].
    """

    input_multiple: Final[int] = TOTAL_STRIDE

    def __init__(self, width: float = 0.5, regions: int | None = REGIONS, num_classes: int = 1000) -> None:
        super().__init__()
        if width not in WIDTHS:
            raise ValueError(f"width must be one of {', '.join(map(str, WIDTHS))}, got {width}")
        channels = WIDTHS[width]
        self.name = f"{'drconv-' if regions else ''}shufflenetv2-{width}x"
        self.conv_first = ConvBN(3, channels[0], 3, stride=2, bias=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        c_in = channels[0]
        for stage, blocks in enumerate(STAGE_BLOCKS, start=1):
            c_out = channels[stage]
            for i in range(1, blocks + 1):
                block = ShuffleBlock(c_in if i == 1 else c_out, c_out, 2 if i == 1 else 1, regions)
                self.add_module(f"stage{stage}_block{i}", block)
            c_in = c_out
        self.conv_last = ConvBN(channels[3], channels[4], 1, bias=True)
        self.globalpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels[4], num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear) and m is self.classifier:
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"{self.name} expects input [N, 3, H, W], got shape {shape_text(x)}")
        if x.shape[2] % self.input_multiple or x.shape[3] % self.input_multiple:
            raise ValueError(
                f"{self.name} needs H and W to be multiples of {self.input_multiple}, got {x.shape[2]}x{x.shape[3]}"
            )
        x = self.maxpool(self.conv_first(x))
        # The blocks in order, in a loop TorchScript unrolls; hasattr, not isinstance, tells them
        # apart because TorchScript decides hasattr on a submodule when it compiles.
        for child in self.children():
            if hasattr(child, "two_branches"):
                x = child(x)
        x = self.conv_last(x)
        return self.classifier(self.globalpool(x).flatten(1))
