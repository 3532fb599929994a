"""The paper's DRConv-ShuffleNetV2, written from its released structure for the tests alone.

`official_state_dict` lays out random weights under the release's key names and shapes
(megvii-research/DRConv, ShuffleNetV2_pytorch.py and DRConv.py), built here from the block
arithmetic rather than from drconv's modules; `naive_forward` runs them functionally
with the R-filter formulation (every region's filter everywhere, then select), the
mixture as an einsum and the region map resized by index arithmetic.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

WIDTHS = {0.5: (24, 48, 96, 192, 1024), 1.0: (24, 116, 232, 464, 1024)}
BLOCKS = (4, 8, 4)
R = M = 8


def blocks(width: float):
    """(key prefix, input channels, output channels, stride) of every block."""
    channels = WIDTHS[width]
    out = []
    for stage, count in enumerate(BLOCKS, start=1):
        for i in range(1, count + 1):
            c_in = channels[stage - 1] if i == 1 else channels[stage]
            out.append((f"stage{stage}_block{i}", c_in, channels[stage], 2 if i == 1 else 1))
    return out


def _bn(sd, prefix, c, g):
    sd[f"{prefix}.bn.weight"] = 1 + 0.1 * torch.randn(c, generator=g)
    sd[f"{prefix}.bn.bias"] = 0.1 * torch.randn(c, generator=g)
    sd[f"{prefix}.bn.running_mean"] = 0.1 * torch.randn(c, generator=g)
    sd[f"{prefix}.bn.running_var"] = 0.5 + torch.rand(c, generator=g)
    sd[f"{prefix}.bn.num_batches_tracked"] = torch.tensor(7)


def _w(g, *shape, fan_in):
    return torch.randn(*shape, generator=g) / fan_in**0.5


def official_state_dict(width: float, seed: int = 0, regions: bool = True) -> dict[str, torch.Tensor]:
    """Random weights under the released key names (regions=False: the plain twin's layout)."""
    g = torch.Generator().manual_seed(seed)
    channels = WIDTHS[width]
    sd: dict[str, torch.Tensor] = {}
    sd["conv_first.conv.weight"] = _w(g, channels[0], 3, 3, 3, fan_in=27)
    sd["conv_first.conv.bias"] = 0.1 * torch.randn(channels[0], generator=g)
    _bn(sd, "conv_first", channels[0], g)

    def region_conv(prefix, c_in, c_out):
        if regions:
            sd[f"{prefix}.conv.weight"] = _w(g, c_out * c_in, M, fan_in=c_in)
            sd[f"{prefix}.conv.routing_fc.weight"] = _w(g, R * M, c_in, fan_in=c_in)
            sd[f"{prefix}.conv.routing_fc.bias"] = 0.1 * torch.randn(R * M, generator=g)
        else:
            sd[f"{prefix}.conv.weight"] = _w(g, c_out, c_in, 1, 1, fan_in=c_in)
        _bn(sd, prefix, c_out, g)

    for prefix, c_in, c_out, stride in blocks(width):
        branch = c_in if stride == 2 else c_in // 2
        mid = c_out // 2
        if regions:
            sd[f"{prefix}.masknet.weight"] = _w(g, R, branch, 1, 1, fan_in=branch)
        region_conv(f"{prefix}.conva_right", branch, mid)
        sd[f"{prefix}.convb_right.conv.weight"] = _w(g, mid, 1, 3, 3, fan_in=9)
        _bn(sd, f"{prefix}.convb_right", mid, g)
        region_conv(f"{prefix}.convc_right", mid, c_out - branch)
        if stride == 2:
            sd[f"{prefix}.conva_left.conv.weight"] = _w(g, c_in, 1, 3, 3, fan_in=9)
            _bn(sd, f"{prefix}.conva_left", c_in, g)
            sd[f"{prefix}.convb_left.conv.weight"] = _w(g, c_in, c_in, 1, 1, fan_in=c_in)
            _bn(sd, f"{prefix}.convb_left", c_in, g)
    sd["conv_last.conv.weight"] = _w(g, channels[4], channels[3], 1, 1, fan_in=channels[3])
    sd["conv_last.conv.bias"] = 0.1 * torch.randn(channels[4], generator=g)
    _bn(sd, "conv_last", channels[4], g)
    sd["classifier.weight"] = _w(g, 1000, channels[4], fan_in=channels[4])
    sd["classifier.bias"] = 0.1 * torch.randn(1000, generator=g)
    return sd


def nearest(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[N, H, W] integer map resized by nearest neighbour: source index floor(i * in / out)."""
    rows = torch.arange(size[0]) * mask.shape[1] // size[0]
    cols = torch.arange(size[1]) * mask.shape[2] // size[1]
    return mask[:, rows][:, :, cols]


def naive_mixture_region_conv(x, weight, fc_w, fc_b, mask, kernel, stride=1, padding=0, dilation=1, bias=None):
    """The official DRConv, R filters everywhere: filters mixed by einsum, then one-hot select by mask."""
    n, c_in = x.shape[:2]
    regions_m = fc_w.shape[0]
    m = weight.shape[1]
    regions = regions_m // m
    c_out = weight.shape[0] // (c_in * kernel * kernel)
    z = 2 * torch.sigmoid(x.mean((2, 3)) @ fc_w.t() + fc_b) / m
    filters = torch.einsum("nrm,km->nrk", z.view(n, regions, m), weight)
    filters = filters.reshape(n, regions, c_out, c_in, kernel, kernel)
    outs = []
    for i in range(n):
        y = F.conv2d(x[i : i + 1], filters[i].flatten(0, 1), None, stride, padding, dilation)
        y = y.view(regions, c_out, *y.shape[2:])
        region = mask[i] if mask.shape[1:] == y.shape[2:] else nearest(mask[i : i + 1], y.shape[2:])[0]
        one_hot = F.one_hot(region, regions).permute(2, 0, 1).to(y.dtype)
        outs.append((y * one_hot.unsqueeze(1)).sum(0))
    y = torch.stack(outs)
    return y if bias is None else y + bias.view(1, -1, 1, 1)


def _bn_apply(sd, prefix, x, relu):
    x = F.batch_norm(
        x,
        sd[f"{prefix}.bn.running_mean"],
        sd[f"{prefix}.bn.running_var"],
        sd[f"{prefix}.bn.weight"],
        sd[f"{prefix}.bn.bias"],
        False,
        0.0,
        1e-5,
    )
    return F.relu(x) if relu else x


def _drconv(sd, prefix, x, mask):
    y = naive_mixture_region_conv(
        x,
        sd[f"{prefix}.conv.weight"],
        sd[f"{prefix}.conv.routing_fc.weight"],
        sd[f"{prefix}.conv.routing_fc.bias"],
        mask,
        1,
    )
    return _bn_apply(sd, prefix, y, True)


def _conv(sd, prefix, x, stride=1, padding=0, groups=1, relu=True):
    y = F.conv2d(x, sd[f"{prefix}.conv.weight"], sd.get(f"{prefix}.conv.bias"), stride, padding, 1, groups)
    return _bn_apply(sd, prefix, y, relu)


def naive_forward(sd: dict[str, torch.Tensor], x: torch.Tensor, width: float) -> torch.Tensor:
    """The released forward, functionally, with the released channel split and argmax(softmax(masknet))."""
    x = F.max_pool2d(_conv(sd, "conv_first", x, 2, 1), 3, 2, 1)
    for prefix, c_in, _, stride in blocks(width):
        if stride == 2:
            proj = _conv(sd, f"{prefix}.conva_left", x, 2, 1, groups=c_in, relu=False)
            proj = _conv(sd, f"{prefix}.convb_left", proj)
        else:
            n, c, h, w = x.shape  # the release's channel_shuffle_v2, reshape for reshape
            halves = x.reshape(n * c // 2, 2, h * w).permute(1, 0, 2).reshape(2, n, c // 2, h, w)
            proj, x = halves[0], halves[1]
        mask = torch.softmax(F.conv2d(x, sd[f"{prefix}.masknet.weight"]), 1).argmax(1)
        x = _drconv(sd, f"{prefix}.conva_right", x, mask)
        x = _conv(sd, f"{prefix}.convb_right", x, stride, 1, groups=x.shape[1], relu=False)
        x = _drconv(sd, f"{prefix}.convc_right", x, mask)
        x = torch.cat((proj, x), 1)
    x = _conv(sd, "conv_last", x)
    return F.linear(x.mean((2, 3)), sd["classifier.weight"], sd["classifier.bias"])
