"""Parameters and multiply-adds in `drconv summary`: the counting convention, against counts made by hand.

The expected counts here are written out from the layer shapes, block by block, so that
they check `drconv.summary`'s hooks rather than repeat them.
"""

import json

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from drconv import models
from drconv.cli import app
from drconv.nn import DRConv2d, MixtureDRConv2d
from drconv.summary import count_multiply_adds, layer_costs, run_summary

# ShuffleNetV2's channels (stem, three stages, last conv) and blocks per stage, as published.
SHUFFLENET_CHANNELS = {0.5: (24, 48, 96, 192, 1024), 1.0: (24, 116, 232, 464, 1024)}
SHUFFLENET_BLOCKS = (4, 8, 4)
CLASSES = 1000


def half(size: int) -> int:
    """Output size of a stride-2 conv or pool with "same" padding (3x3 pad 1)."""
    return (size - 1) // 2 + 1


def shufflenet_by_hand(width: float, regions: int | None, h: int, w: int, basis: int = 8) -> int:
    """Multiply-adds per image of ShuffleNetV2 (DRConv blocks when regions is set) on an h x w input."""
    stem, *stages, last = SHUFFLENET_CHANNELS[width]
    h, w = half(h), half(w)
    total = stem * 3 * 3 * 3 * h * w  # conv_first, 3x3 stride 2 (its bias not counted)
    h, w = half(h), half(w)  # maxpool: not counted

    def region_or_plain(c_in: int, c_out: int, pixels: int) -> int:
        """A 1x1 conv of the right branch: plain, or a region conv at one filter per pixel plus its routing."""
        ops = c_out * c_in * pixels
        if regions is not None:
            ops += c_in * regions * basis  # routing_fc on the channel means
            ops += regions * basis * c_out * c_in  # R filters, each a mix of M basis filters
        return ops

    c_in = stem
    for c_out, blocks in zip(stages, SHUFFLENET_BLOCKS, strict=True):
        for i in range(blocks):
            stride = 2 if i == 0 else 1
            branch_in = c_in if stride == 2 else c_in // 2
            mid = c_out // 2
            h_out, w_out = (half(h), half(w)) if stride == 2 else (h, w)
            if regions is not None:
                total += regions * branch_in * h * w  # masknet, the block's 1x1 guide
            total += region_or_plain(branch_in, mid, h * w)  # conva_right
            total += mid * 3 * 3 * h_out * w_out  # convb_right, depthwise 3x3
            total += region_or_plain(mid, c_out - branch_in, h_out * w_out)  # convc_right
            if stride == 2:
                total += c_in * 3 * 3 * h_out * w_out  # conva_left, depthwise 3x3 stride 2
                total += c_in * c_in * h_out * w_out  # convb_left, 1x1
            h, w, c_in = h_out, w_out, c_out
    total += last * stages[-1] * h * w  # conv_last, 1x1
    return total + last * CLASSES  # classifier


def tiny_by_hand(h: int, w: int) -> int:
    """Multiply-adds per image of drconv-tiny: strided 3x3 convs, each followed by a 3x3 DRConv2d."""
    total = 0
    c_in = 3
    for c_out, regions in ((24, None), (48, 8), (96, 4), (192, 2)):
        h, w = half(h), half(w)
        total += c_out * c_in * 9 * h * w  # the stride-2 3x3 conv
        c_in = c_out
        if regions is not None:
            c = c_out
            total += regions * c * 9 * h * w  # guide conv, 3x3, R channels
            total += regions * regions * c * 9  # filter generator: 1x1 conv to R*R on the 3x3 pooled map
            total += regions * c * c * regions * 9  # then 1x1 to R*C*C grouped by R (R inputs each), on 3x3
            total += c * c * 9 * h * w  # the region conv at one filter per pixel
    return total + 192 * CLASSES


@pytest.mark.parametrize(("name", "expected"), [("shufflenetv2-0.5x", 40.48e6), ("shufflenetv2-1.0x", 145.81e6)])
def test_plain_twins_match_the_shufflenetv2_paper(name, expected):
    count = count_multiply_adds(models.load_model(name), torch.zeros(1, 3, 224, 224))
    assert abs(count - expected) / expected < 0.005
    width = 0.5 if name.endswith("0.5x") else 1.0
    assert count == shufflenet_by_hand(width, None, 224, 224)


@pytest.mark.parametrize("width", [0.5, 1.0])
@pytest.mark.parametrize(("h", "w"), [(64, 64), (32, 96)])
def test_drconv_shufflenet_equals_hand_count(width, h, w):
    net = models.load_model(f"drconv-shufflenetv2-{width}x")
    assert count_multiply_adds(net, torch.randn(1, 3, h, w)) == shufflenet_by_hand(width, 8, h, w)


def test_drconv_tiny_equals_hand_count():
    net = models.load_model("drconv-tiny")
    for h, w in ((32, 32), (48, 40)):
        assert count_multiply_adds(net, torch.randn(1, 3, h, w)) == tiny_by_hand(h, w)


@pytest.mark.parametrize("name", ["drconv-shufflenetv2-0.5x", "drconv-tiny"])
def test_count_is_per_image(name):
    net = models.load_model(name)
    one = count_multiply_adds(net, torch.randn(1, 3, 64, 64))
    assert count_multiply_adds(net, torch.randn(3, 3, 64, 64)) == one


def test_layers_own_parameters_and_kinds():
    net = models.load_model("drconv-shufflenetv2-0.5x")
    layers = {layer.name: layer for layer in layer_costs(net, torch.randn(1, 3, 64, 64))}
    region = layers["stage1_block2.conva_right.conv"]
    assert region.kind == "MixtureDRConv2d"
    assert region.parameters == 24 * 24 * 8  # its basis filters only: routing_fc is a layer of its own
    assert layers["stage1_block2.conva_right.conv.routing_fc"].kind == "Linear"
    assert layers["stage1_block2.masknet"].kind == "Conv2d"
    assert layers["classifier"].multiply_adds == 1024 * CLASSES
    # Every counted module with weights is listed once, and together they hold those weights.
    counted = [m for m in net.modules() if isinstance(m, nn.Conv2d | nn.Linear | MixtureDRConv2d)]
    assert len(layers) == len(counted)
    assert sum(layer.parameters for layer in layers.values()) == sum(
        p.numel() for m in counted for p in m.parameters(recurse=False)
    )


def test_run_summary_totals_and_region_shares():
    net = models.load_model("drconv-shufflenetv2-0.5x")
    x = torch.randn(2, 3, 64, 64)
    report = run_summary(net, x, repeats=1)
    assert report.multiply_adds == count_multiply_adds(net, x) == sum(layer.multiply_adds for layer in report.layers)
    assert report.parameters == sum(p.numel() for p in net.parameters())
    mixtures = [layer for layer in report.drconv_layers if layer.layer.startswith("MixtureDRConv2d(")]
    assert len(mixtures) == 2 * sum(SHUFFLENET_BLOCKS)
    for layer in mixtures:
        assert layer.regions == 8 and len(layer.region_share) == 8
        assert sum(layer.region_share) == pytest.approx(1.0)
    # no hook outlives the summary
    assert all(not m._forward_hooks for m in net.modules())


class _GuidedByHand(nn.Module):
    """A DRConv2d fed an outside guide, as a user may wire one."""

    def __init__(self) -> None:
        super().__init__()
        self.guide = nn.Conv2d(8, 4, 1, bias=False)
        self.conv = DRConv2d(8, 8, 3, region_num=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x, guide=self.guide(x))


def test_drconv2d_with_outside_guide():
    net = _GuidedByHand().eval()
    x = torch.randn(2, 8, 10, 12)
    report = run_summary(net, x, repeats=1)
    (layer,) = report.drconv_layers
    assert sum(layer.region_share) == pytest.approx(1.0)
    # the layer's own guide conv did not run, so it is not counted; the outside one is
    pixels = 10 * 12
    expected = 4 * 8 * pixels + 4 * 4 * 8 * 9 + 4 * 8 * 8 * 4 * 9 + 8 * 8 * 9 * pixels
    assert report.multiply_adds == expected == count_multiply_adds(net, x)


def test_drconv2d_own_guide_counted_once_in_summary():
    net = models.load_model("drconv-tiny")
    x = torch.randn(1, 3, 32, 32)
    report = run_summary(net, x, repeats=1)
    # the region-share hook recomputes each DRConv2d's guide; that must not count again
    assert report.multiply_adds == tiny_by_hand(32, 32)
    assert [layer.name for layer in report.layers].count("features.2.0.guide") == 1


def test_hooks_removed_after_error():
    net = models.load_model("drconv-tiny")
    with pytest.raises(ValueError):
        count_multiply_adds(net, torch.randn(1, 3, 16, 16))
    with pytest.raises(ValueError):
        run_summary(net, torch.randn(1, 3, 16, 16))
    assert all(not m._forward_hooks for m in net.modules())


runner = CliRunner()


@pytest.mark.parametrize(
    ("name", "shape"), [("drconv-shufflenetv2-0.5x", (2, 3, 64, 64)), ("drconv-tiny", (1, 3, 48, 48))]
)
def test_cli_json(name, shape):
    result = runner.invoke(app, ["summary", "--json", "-m", name, "--input-shape", ",".join(map(str, shape))])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)  # nothing but the object on stdout
    net = models.load_model(name)
    assert data["model"] == name and data["input_shape"] == list(shape)
    assert isinstance(data["parameters"], int) and isinstance(data["multiply_adds"], int)
    assert data["parameters"] == sum(p.numel() for p in net.parameters())
    assert data["multiply_adds"] == count_multiply_adds(net, torch.randn(shape))
    assert sum(layer["multiply_adds"] for layer in data["layers"]) == data["multiply_adds"]
    for layer in data["layers"]:
        assert set(layer) >= {"name", "kind", "output_shape", "parameters", "multiply_adds"}
    assert data["drconv_layers"]
    for layer in data["drconv_layers"]:
        assert set(layer) >= {"name", "regions", "region_share"}
        assert sum(layer["region_share"]) == pytest.approx(1.0)


def test_cli_table_shows_multiply_adds():
    result = runner.invoke(app, ["summary", "-m", "shufflenetv2-0.5x"])
    assert result.exit_code == 0, result.output
    assert "multiply-adds 40.48M per image" in result.stdout
    assert "parameters 1,367,840" in result.stdout
