"""The paper's DRConv layer and the ShuffleNetV2 zoo: against a naive implementation, official checkpoints,
export, training."""

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from official_shufflenet import naive_forward, naive_mixture_region_conv, official_state_dict

from drconv import DRConv2d
from drconv.export import rewrite, to_onnx
from drconv.model_names import TWINS
from drconv.models import create
from drconv.nn import MixtureDRConv2d
from drconv.runtime.ort import session
from drconv.shufflenetv2 import ShuffleNetV2

ZOO = ["drconv-shufflenetv2-0.5x", "drconv-shufflenetv2-1.0x"]
WIDTH = {"drconv-shufflenetv2-0.5x": 0.5, "drconv-shufflenetv2-1.0x": 1.0}


@pytest.mark.parametrize(
    ("c_in", "c_out", "kernel", "stride", "padding", "dilation", "regions", "guide_size", "bias"),
    [
        (6, 5, 1, 1, 0, 1, 8, (9, 11), False),
        (4, 7, 3, 1, 1, 1, 3, (9, 11), True),
        (5, 3, 3, 2, 1, 1, 4, (9, 11), False),  # guide at the input size, region map resized to 5x6
        (3, 4, 1, 1, 0, 1, 8, (5, 6), True),  # guide smaller than the output: upsampled
        (4, 4, 3, 1, 2, 2, 2, (9, 11), False),
    ],
)
def test_mixture_layer_matches_naive(c_in, c_out, kernel, stride, padding, dilation, regions, guide_size, bias):
    torch.manual_seed(0)
    layer = MixtureDRConv2d(
        c_in, c_out, kernel, regions, num_basis=3, stride=stride, padding=padding, dilation=dilation, bias=bias
    ).double()
    with torch.no_grad():
        layer.routing_fc.weight.normal_()  # away from the near-uniform init, so the mixture matters
        if bias:
            layer.bias.normal_()
    x = torch.randn(2, c_in, 9, 11, dtype=torch.float64)
    guide = torch.randn(2, regions, *guide_size, dtype=torch.float64)
    mask = guide.argmax(1)
    want = naive_mixture_region_conv(
        x,
        layer.weight,
        layer.routing_fc.weight,
        layer.routing_fc.bias,
        mask,
        kernel,
        stride,
        padding,
        dilation,
        layer.bias,
    )
    got = layer(x, guide)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_mixture_layer_gradients_reach_every_parameter():
    torch.manual_seed(1)
    layer = MixtureDRConv2d(4, 6, 1, 4, bias=True).double()
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64, requires_grad=True)
    guide = torch.randn(2, 4, 16, 16, dtype=torch.float64, requires_grad=True)
    layer(x, guide).square().sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert x.grad.abs().sum() > 0 and guide.grad.abs().sum() > 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_mixture_layer_hands_over_ihwo_filters_in_inference(dtype):
    torch.manual_seed(2)
    layer = MixtureDRConv2d(6, 5, 3, 4, num_basis=3, padding=1).to(dtype)
    with torch.no_grad():
        layer.routing_fc.weight.normal_()
    x, guide = torch.randn(2, 6, 9, 11, dtype=dtype), torch.randn(2, 4, 9, 11, dtype=dtype)
    tolerance = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 1e-12, "atol": 1e-12}
    training_filters, training_y = layer.region_filters(x), layer(x, guide)  # grad enabled: OIHW
    assert training_filters.is_contiguous()
    with torch.no_grad():
        filters = layer.region_filters(x)
        assert filters.permute(0, 1, 3, 4, 5, 2).is_contiguous()  # IHWO memory, OIHW view
        torch.testing.assert_close(filters, training_filters, **tolerance)
        torch.testing.assert_close(layer(x, guide), training_y, **tolerance)
        # The IHWO copy of the weight follows the weight: changed in place, or replaced.
        layer.weight.mul_(2)
        torch.testing.assert_close(layer.region_filters(x), 2 * training_filters, **tolerance)
        layer.weight = torch.nn.Parameter(layer.weight / 4)
        torch.testing.assert_close(layer.region_filters(x), training_filters / 2, **tolerance)


def test_mixture_layer_rejects_a_wrong_guide():
    layer = MixtureDRConv2d(4, 4, 1, 8)
    with pytest.raises(ValueError, match=r"guide \[2, 8, H, W\]"):
        layer(torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8))


def test_drconv2d_takes_an_outside_guide_and_a_bias():
    torch.manual_seed(2)
    layer = DRConv2d(4, 5, 3, region_num=3, bias=True).double()
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    outside = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    own = layer(x)
    shared = layer(x, outside)
    from reference import naive_region_conv

    filters = layer.region_filters(x)
    torch.testing.assert_close(own, naive_region_conv(x, filters, layer.guide(x)) + layer.bias.view(1, -1, 1, 1))
    torch.testing.assert_close(shared, naive_region_conv(x, filters, outside) + layer.bias.view(1, -1, 1, 1))
    assert not torch.allclose(own, shared)


@pytest.fixture(scope="module", params=ZOO)
def loaded(request):
    """A zoo model with random official-layout weights loaded strictly, in float64."""
    name = request.param
    sd = official_state_dict(WIDTH[name], seed=3)
    model = create(name)
    model.load_state_dict(sd, strict=True)
    return name, sd, model.eval()


def test_official_state_dict_loads_strictly_and_matches_naive_forward(loaded):
    name, sd, model = loaded
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == {k: tuple(v.shape) for k, v in sd.items()}
    x = torch.randn(2, 3, 64, 96, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        got = model.double()(x)
        want = naive_forward({k: v.double() if v.is_floating_point() else v for k, v in sd.items()}, x, WIDTH[name])
    model.float()
    assert got.shape == (2, 1000)
    assert want.abs().max() > 0.1  # the weights make a signal worth comparing
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


def test_plain_twin_loads_the_plain_layout():
    for name, twin in TWINS.items():
        sd = official_state_dict(WIDTH[name], seed=5, regions=False)
        model = create(twin)
        model.load_state_dict(sd, strict=True)
        assert not any(isinstance(m, MixtureDRConv2d) for m in model.modules())


_EXPORTS: dict[tuple[str, str], object] = {}


def _export(name, model, mode, directory):
    """Each zoo model is exported once per mode (an export takes ~15 s here)."""
    if (name, mode) not in _EXPORTS:
        _EXPORTS[name, mode] = to_onnx(model, torch.randn(1, 3, 64, 64), directory / f"{name}-{mode}.onnx", mode=mode)
    return _EXPORTS[name, mode]


@pytest.mark.parametrize("mode", ["custom", "portable"])
def test_export_matches_pytorch_in_onnx_runtime(loaded, mode, tmp_path_factory):
    name, _, model = loaded
    path = _export(name, model, mode, tmp_path_factory.mktemp("zoo"))
    proto = onnx.load(str(path))
    custom = [n for n in proto.graph.node if n.domain == "drconv"]
    assert len(custom) == (32 if mode == "custom" else 0)
    sess = session(path, threads=2)
    for shape in ((1, 3, 64, 64), (3, 3, 96, 64)):  # the traced size, then another batch and size
        x = torch.randn(shape, generator=torch.Generator().manual_seed(6))
        with torch.no_grad():
            want = model(x).numpy()
        got = sess.run(None, {"input": x.numpy()})[0]
        assert np.abs(want).max() > 0.1
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)


def _producer(proto, name):
    return next(n for n in proto.graph.node if name in n.output)


def test_custom_graph_computes_each_guide_once(loaded, tmp_path_factory):
    name, _, model = loaded
    proto = onnx.load(str(_export(name, model, "custom", tmp_path_factory.mktemp("zoo"))))
    guides = {}
    for node in proto.graph.node:
        if node.domain != "drconv":
            continue
        guide = node.input[3 if node.op_type == rewrite.MIXTURE_OP else 2]  # after the coefficients and basis
        source = _producer(proto, guide)
        resized = source.op_type == "Resize"
        if resized:
            source = _producer(proto, source.input[0])
        assert source.op_type == "Conv"  # the block's masknet
        guides.setdefault(source.name, []).append(resized)
    assert len(guides) == 16  # one guide per block
    assert all(len(uses) == 2 for uses in guides.values())  # read by both region convs of its block
    assert sum(uses == [False, True] for uses in guides.values()) == 3  # the stride-2 blocks resize for the second


def test_input_size_must_be_a_multiple_of_32():
    with pytest.raises(ValueError, match="multiples of 32"):
        create("shufflenetv2-0.5x")(torch.randn(1, 3, 70, 64))


def test_training_reduces_the_loss():
    torch.manual_seed(7)
    model = ShuffleNetV2(0.5, regions=8, num_classes=10).train()
    x = torch.randn(8, 3, 64, 64)
    target = torch.randint(0, 10, (8,))
    # Adam: SGD at lr 0.1 with momentum 0.9 oscillated on an AMD EPYC (the trajectory is
    # chaotic at that step size and follows each CPU's BLAS rounding); Adam falls by 100x on both.
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(20):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.5 * losses[0]
    masknet = model.stage2_block2.masknet.weight
    assert masknet.grad is not None and masknet.grad.abs().sum() > 0  # the guide learns too


def test_every_described_model_has_a_builder():
    from drconv import model_names, models

    assert set(models._BUILDERS) == set(model_names.DESCRIPTIONS)
    assert models.names() == model_names.names()
