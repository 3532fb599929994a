"""The DRConv layers (Chen et al., CVPR 2021), in the two filter-generator styles users have.

- `DRConv2d`: the seed's formulation (DRConv-PyTorch): its own k x k guide conv and a
  pooled two-conv filter generator.
- `MixtureDRConv2d`: the paper's released formulation (megvii-research/DRConv): filters
  are a per-sample mixture of M learned basis filters per region, and the guide comes
  from outside, so one guide can feed several region convs.

Both end in `region_conv`: each output pixel is convolved with its own region's filter,
the multiply-adds of one dense convolution.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from drconv import contract, ops  # ops registers torch.ops.drconv.region_conv, which the layers call
from drconv._geometry import IntOrPair, conv_out_size, normalize_params, pair, shape_text

__all__ = ["DRConv2d", "MixtureDRConv2d", "fit_guide"]


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


def _check_input(layer: str, x: torch.Tensor, channels: int) -> None:
    if x.dim() != 4 or x.shape[1] != channels:
        raise ValueError(f"{layer} expects input [N, {channels}, H, W], got shape {shape_text(x)}")


def fit_guide(guide: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The guide at the region conv's output size: as it is, or resized by nearest neighbour.

    Nearest neighbour (source index floor(i * in / out), PyTorch's "nearest") is how the
    paper's ShuffleNetV2 feeds one block's region map to a region conv of half its
    resolution; it commutes with the argmax, so resizing the guide resizes the region map.
    """
    if guide.dim() != 4:
        raise ValueError(f"guide must be 4-D [N, R, H, W], got shape {shape_text(guide)}")
    if guide.shape[2] == size[0] and guide.shape[3] == size[1]:
        return guide
    return F.interpolate(guide, size=[size[0], size[1]], mode="nearest")


class _RegionConvLayer(nn.Module):
    """What both layers share: geometry, the optional bias, the region conv call."""

    # No `from __future__ import annotations` in this module: TorchScript (torch.jit.script of
    # DRConv2d and the zoo, for libtorch deployments) reads these annotations as objects.
    bias: torch.Tensor | None

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrPair,
        region_num: int,
        stride: IntOrPair,
        padding: IntOrPair | None,
        dilation: IntOrPair,
        bias: bool,
    ) -> None:
        super().__init__()
        _check_positive(in_channels=in_channels, out_channels=out_channels, region_num=region_num)
        kernel = pair(kernel_size, "kernel_size")
        if min(kernel) < 1:
            raise ValueError(f"kernel_size must be >= 1, got {kernel}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel
        self.region_num = region_num
        self.stride, self.padding, self.dilation = normalize_params(kernel, stride, padding, dilation)
        if bias:
            self.bias = nn.Parameter(torch.zeros(out_channels))
        else:
            self.register_parameter("bias", None)

    def output_size(self, x: torch.Tensor) -> tuple[int, int]:
        """(H_out, W_out) of the region conv on input x."""
        return (
            conv_out_size(x.shape[2], self.kernel_size[0], self.stride[0], self.padding[0], self.dilation[0]),
            conv_out_size(x.shape[3], self.kernel_size[1], self.stride[1], self.padding[1], self.dilation[1]),
        )

    def _region_conv(self, x: torch.Tensor, filters: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        # The registered op itself (the geometry is normalized already): TorchScript calls it too.
        y = torch.ops.drconv.region_conv(
            x,
            filters,
            fit_guide(guide, self.output_size(x)),
            [self.stride[0], self.stride[1]],
            [self.padding[0], self.padding[1]],
            [self.dilation[0], self.dilation[1]],
        )
        bias = self.bias
        return y if bias is None else y + bias.view(1, -1, 1, 1)

    def fitted_guide(self, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        """The guide the region conv routes by, [N, R, H_out, W_out] (resized where needed)."""
        return fit_guide(guide, self.output_size(x))

    def region_map(self, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        """Region index of every output pixel, [N, H_out, W_out] (the first argmax of the guide)."""
        return self.fitted_guide(x, guide).argmax(dim=1)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"region_num={self.region_num}, stride={self.stride}, padding={self.padding}, "
            f"dilation={self.dilation}, bias={self.bias is not None}"
        )


class DRConv2d(_RegionConvLayer):
    """A drop-in convolution whose filter changes per region of each sample (the seed's formulation).

    1. A k x k "guide" convolution maps x to R channels; each output pixel belongs
       to the region of its largest guide value.
    2. A filter generator (adaptive average pool to k x k, 1x1 conv to R*R with
       sigmoid, 1x1 conv grouped by R to R*C_out*C_in) makes R filters per sample.
    3. `region_conv` convolves every pixel with its region's filter.

    Padding None means "same" (dilation * (k // 2)). There is no bias by default, like
    the reference implementation; `bias=True` adds one after the region conv.
    `forward(x, guide)` takes a guide computed elsewhere instead of the layer's own.
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
        bias: bool = False,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, region_num, stride, padding, dilation, bias)
        kernel = self.kernel_size
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

    def forward(self, x: torch.Tensor, guide: torch.Tensor | None = None) -> torch.Tensor:
        _check_input("DRConv2d", x, self.in_channels)
        if guide is None:
            guide = self.guide(x)
        return self._region_conv(x, self.region_filters(x), guide)

    def fitted_guide(self, x: torch.Tensor, guide: torch.Tensor | None = None) -> torch.Tensor:
        return super().fitted_guide(x, self.guide(x) if guide is None else guide)

    def region_map(self, x: torch.Tensor, guide: torch.Tensor | None = None) -> torch.Tensor:
        return super().region_map(x, self.guide(x) if guide is None else guide)


class MixtureDRConv2d(_RegionConvLayer):
    """The paper's DRConv: per region, a per-sample mixture of M basis filters; the guide from outside.

    With z = 2 * sigmoid(routing_fc(mean_hw(x))) / M, of shape [N, R*M], region r's
    filter for sample n is sum_m z[n, r*M + m] * weight[:, m], where `weight` is
    [C_out*C_in*kh*kw, M]. `forward(x, guide)` takes the guide [N, R, H', W']; at
    another size than the output it is resized by nearest neighbour (`fit_guide`).

    Parameter names and shapes are those of megvii-research/DRConv's `DRConv`
    (`weight`, `bias`, `routing_fc`), so its checkpoints load as they are. Padding
    defaults to 0, as there and in nn.Conv2d.
    """

    # The exported node's constant inputs, buffers while drconv.export traces the layer: the
    # initializers then carry these names.
    NODE_BUFFERS = ("node_basis", "node_routing", "node_routing_bias")

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrPair = 1,
        region_num: int = 8,
        num_basis: int = 8,
        stride: IntOrPair = 1,
        padding: IntOrPair | None = 0,
        dilation: IntOrPair = 1,
        bias: bool = False,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, region_num, stride, padding, dilation, bias)
        _check_positive(num_basis=num_basis)
        self.num_basis = num_basis
        kh, kw = self.kernel_size
        self.weight = nn.Parameter(torch.empty(out_channels * in_channels * kh * kw, num_basis))
        self.routing_fc = nn.Linear(in_channels, region_num * num_basis)
        self.reset_parameters()
        # The filter layout, set only while drconv.export traces the layer: it then writes one
        # MixtureRegionConv2d node whose constant inputs are buffers NODE_BUFFERS (`node_inputs`).
        self._node_layout: str | None = None

    def reset_parameters(self) -> None:
        # The released model's initialisation: He-uniform basis filters, near-uniform routing.
        bound = math.sqrt(6.0 / (self.in_channels * self.kernel_size[0] * self.kernel_size[1]))
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.normal_(self.routing_fc.weight, 0.0, 0.01)
        nn.init.zeros_(self.routing_fc.bias)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def mixture(self, x: torch.Tensor) -> torch.Tensor:
        """The mixing coefficients z [N, R*M]."""
        return 2.0 * torch.sigmoid(self.routing_fc(x.mean((2, 3)))) / self.num_basis

    def region_filters(self, x: torch.Tensor) -> torch.Tensor:
        """Per-sample, per-region filters [N, R, C_out, C_in, kh, kw].

        In eager CPU inference their memory is IHWO ([N, R, C_in, kh, kw, C_out], returned as
        a permuted view): the CPU kernel reads that layout as it is, where OIHW filters
        would be packed on every call (docs/region_conv_op.md). The mixture then multiplies
        by a copy of `weight` in IHWO order, kept until `weight` changes.
        """
        kh, kw = self.kernel_size
        if torch.jit.is_scripting() or not self._ihwo_inference(x):
            # [N*R, M] times weight (the ONNX export writes the layer as one node: `_as_node`).
            filters = F.linear(self.mixture(x).reshape(-1, self.num_basis), self.weight)
            return filters.view(-1, self.region_num, self.out_channels, self.in_channels, kh, kw)
        return ops.mixed_filters(self.mixture(x).reshape(-1, self.region_num, self.num_basis), self._ihwo_basis())

    @torch.jit.unused
    def _ihwo_inference(self, x: torch.Tensor) -> bool:
        """Eager CPU inference, where nothing traces the graph (an export keeps OIHW: its
        rewrite makes the node's filters IHWO at no cost, drconv.export.rewrite)."""
        return (
            x.device.type == "cpu"
            and not (torch.is_grad_enabled() and self.weight.requires_grad)
            and not torch.compiler.is_compiling()
            and not torch.compiler.is_exporting()
            and not torch.jit.is_tracing()
            and not torch.jit.is_scripting()
        )

    @torch.jit.unused
    def _ihwo_basis(self) -> torch.Tensor:
        """`weight` [C_out*C_in*kh*kw, M] as the IHWO basis [M, C_in, kh, kw, C_out], cached for as
        long as `weight` is the same tensor, with the same data, at the same version."""
        weight = self.weight
        cached = getattr(self, "_ihwo_cache", None)
        # The cache holds the weight itself: an address and a version alone could match a new
        # weight allocated where a freed one was.
        if cached is None or cached[0] is not weight or cached[1] != (weight.data_ptr(), weight._version):
            kh, kw = self.kernel_size
            basis = weight.detach().t().reshape(self.num_basis, self.out_channels, self.in_channels, kh, kw)
            cached = (weight, (weight.data_ptr(), weight._version), basis.permute(0, 2, 3, 4, 1).contiguous())
            self._ihwo_cache = cached
        return cached[2]

    @torch.jit.unused
    def node_inputs(self, layout: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The constant inputs of the drconv::MixtureRegionConv2d node this layer is (docs/region_conv_op.md):
        basis [M, one filter] in `layout` ("OIHW" or "IHWO") with the mixture's 2 / M folded in,
        routing [C_in, R * M] and routing_bias [R * M], the node computing sigmoid(mean_hw(x) @
        routing + routing_bias) as this layer's `mixture` does before its 2 / M."""
        kh, kw = self.kernel_size
        with torch.no_grad():
            weight = self.weight.detach()
            basis = (weight * (2.0 / self.num_basis)).t()
            basis = basis.reshape(self.num_basis, self.out_channels, self.in_channels, kh, kw)
            if layout == "IHWO":
                basis = basis.permute(0, 2, 3, 4, 1)
            routing = self.routing_fc.weight.detach().t()
            return basis.contiguous(), routing.contiguous(), self.routing_fc.bias.detach().clone()

    @torch.jit.unused
    def _as_node(self, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        """The layer as one MixtureRegionConv2d node, for the ONNX exporter (drconv.export)."""
        basis, routing, routing_bias = (getattr(self, name) for name in self.NODE_BUFFERS)
        guide = self.fitted_guide(x, guide)
        # In the contract's input order: X, coefficients (none: the node routes itself), basis,
        # guide, B, routing, routing_bias.
        return torch.onnx.ops.symbolic(
            f"{contract.DOMAIN}::{contract.MIXTURE.name}",
            (x, None, basis, guide, self.bias, routing, routing_bias),
            {
                "strides": list(self.stride),
                "pads": [self.padding[0], self.padding[1], self.padding[0], self.padding[1]],
                "dilations": list(self.dilation),
                "filter_layout": self._node_layout,
            },
            dtype=x.dtype,
            shape=(x.shape[0], self.out_channels, guide.shape[2], guide.shape[3]),
            version=contract.MIXTURE.input_since[contract.MixtureInput.ROUTING],
        )

    def forward(self, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        _check_input("MixtureDRConv2d", x, self.in_channels)
        if guide.dim() != 4 or guide.shape[0] != x.shape[0] or guide.shape[1] != self.region_num:
            raise ValueError(
                f"MixtureDRConv2d expects a guide [{x.shape[0]}, {self.region_num}, H, W], "
                f"got shape {shape_text(guide)}"
            )
        if not torch.jit.is_scripting() and getattr(self, "_node_layout", None) is not None:
            return self._as_node(x, guide)
        if not torch.jit.is_scripting() and self._ihwo_inference(x):
            # The filters are mixed inside the CPU kernel, never written out as a tensor.
            y = torch.ops.drconv.mixture_region_conv(
                x,
                self.mixture(x).reshape(-1, self.region_num, self.num_basis),
                self._ihwo_basis(),
                self.fitted_guide(x, guide),
                [self.stride[0], self.stride[1]],
                [self.padding[0], self.padding[1]],
                [self.dilation[0], self.dilation[1]],
            )
            return y if self.bias is None else y + self.bias.view(1, -1, 1, 1)
        return self._region_conv(x, self.region_filters(x), guide)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", num_basis={self.num_basis}"
