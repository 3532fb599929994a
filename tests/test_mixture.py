"""drconv::MixtureRegionConv2d in the ONNX Runtime library: filters mixed in the node from coefficients
(or, version 4, from its own routing of X) and a basis, against the PyTorch op on filters mixed here;
its refusals."""

import numpy as np
import onnx
import pytest
import torch
from onnx_graphs import as_numpy, mixture_node_model, ort_session, routed_mixture_node_model

from drconv import region_conv
from drconv._geometry import conv_out_size
from drconv.libraries import plugin_path

LIBRARY = plugin_path("onnxruntime")

# (N, C_in, C_out, R, M, k, stride, H, W): small maps with few pixels a region (the workers
# split the output channels), larger ones (blocks of pixels), more bases than the kernel
# holds at once (M > 16), C_out off the 16-channel vectors, 3x3 taps.
CASES = [
    (1, 96, 80, 16, 8, 1, 1, 4, 4),
    (1, 58, 58, 8, 8, 1, 1, 7, 7),
    (1, 24, 40, 8, 8, 1, 2, 13, 9),
    (2, 24, 24, 8, 8, 1, 1, 28, 28),
    (2, 6, 7, 4, 20, 3, 1, 11, 9),
    (1, 5, 33, 2, 3, 3, 2, 12, 12),
]


def _filters(z: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """[N, R, C_out, C_in, k, k] from coefficients [N, R, M] and an OIHW basis [M, C_out, C_in, k, k]."""
    return torch.einsum("nrm,moikl->nroikl", z, basis)


@pytest.mark.parametrize("layout", ["OIHW", "IHWO"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "n{}c{}k{}R{}M{}k{}s{}_{}x{}".format(*c))
def test_mixture_node_matches_the_op_on_mixed_filters(case, layout):
    n, c_in, c_out, regions, bases, k, stride, h, w = case
    torch.manual_seed(sum(case))
    pad = k // 2
    x, guide_in = torch.randn(n, c_in, h, w), torch.randn(n, regions, h + 8, w + 8)
    z, basis = torch.rand(n, regions, bases), torch.randn(bases, c_out, c_in, k, k) / (c_in * k * k) ** 0.5
    bias = torch.randn(c_out)
    h_out, w_out = (conv_out_size(size, k, stride, pad, 1) for size in (h, w))
    guide = torch.nn.functional.adaptive_avg_pool2d(guide_in, (h_out, w_out))
    given = basis.permute(0, 2, 3, 4, 1) if layout == "IHWO" else basis
    model = mixture_node_model((stride, stride), (pad,) * 4, layout, bias=True, activation="Relu")
    feeds = dict(zip(("X", "coefficients", "basis", "guide", "B"), as_numpy(x, z, given, guide, bias), strict=True))
    (got,) = ort_session(model, LIBRARY).run(None, feeds)
    conv = region_conv(x, _filters(z, basis), guide, stride=stride, padding=pad)
    expected = torch.relu(conv + bias.view(1, -1, 1, 1))
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-4, rtol=1e-4)
    assert (got == 0).mean() > 0.1 and (got > 0).mean() > 0.1  # both sides of the ReLU seen


def _run(x, z, basis, guide):
    feeds = dict(zip(("X", "coefficients", "basis", "guide"), as_numpy(x, z, basis, guide), strict=True))
    return ort_session(mixture_node_model(), LIBRARY).run(None, feeds)


@pytest.mark.parametrize(
    ("shapes", "message"),
    [
        (((1, 3, 5, 5), (1, 2, 4, 1), (4, 6, 3, 1, 1), (1, 2, 5, 5)), "coefficients must be 3-D"),
        (((1, 3, 5, 5), (1, 2, 4), (4, 6, 3, 1), (1, 2, 5, 5)), "basis must be 5-D"),
        (((1, 3, 5, 5), (1, 2, 4), (5, 6, 3, 1, 1), (1, 2, 5, 5)), r"coefficients dim 2 \(M\) must equal basis dim 0"),
        (((1, 3, 5, 5), (1, 2, 4), (4, 6, 7, 1, 1), (1, 2, 5, 5)), r"MixtureRegionConv2d: filters dim 3 \(C_in\).*"),
        (((2, 3, 5, 5), (1, 2, 4), (4, 6, 3, 1, 1), (2, 2, 5, 5)), "same batch size.*coefficients x basis"),
        (((1, 3, 5, 5), (1, 2, 4), (4, 6, 3, 1, 1), (1, 3, 5, 5)), "number of regions"),
    ],
)
def test_mismatched_inputs_are_refused_with_the_node_named(shapes, message):
    tensors = [torch.randn(s) for s in shapes]
    with pytest.raises(Exception, match=message):
        _run(*tensors)


def test_a_graph_of_version_2_cannot_use_the_node():
    """MixtureRegionConv2d came with drconv version 3: a graph importing 2 is refused, not misread."""
    model = mixture_node_model()
    next(o for o in model.opset_import if o.domain == "drconv").version = 2
    with pytest.raises(Exception, match="MixtureRegionConv2d"):
        ort_session(model, LIBRARY)


def _routed_feeds(x, basis, guide, routing, routing_bias=None):
    names = ("X", "basis", "guide", "routing", "routing_bias")[: 4 + (routing_bias is not None)]
    given = [t for t in (x, basis, guide, routing, routing_bias) if t is not None]
    return dict(zip(names, as_numpy(*given), strict=True))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("layout", ["OIHW", "IHWO"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "n{}c{}k{}R{}M{}k{}s{}_{}x{}".format(*c))
def test_routed_node_computes_its_coefficients_from_x(case, layout, threads):
    """Version 4: coefficients = sigmoid(mean_hw(X) @ routing + routing_bias), in the node."""
    n, c_in, c_out, regions, bases, k, stride, h, w = case
    torch.manual_seed(sum(case) + threads)
    pad = k // 2
    x = torch.randn(n, c_in, h, w) + torch.randn(n, c_in, 1, 1)  # means far from 0
    basis = torch.randn(bases, c_out, c_in, k, k) / (c_in * k * k) ** 0.5
    routing, routing_bias = torch.randn(c_in, regions * bases), torch.randn(regions * bases)
    h_out, w_out = (conv_out_size(size, k, stride, pad, 1) for size in (h, w))
    guide = torch.randn(n, regions, h_out, w_out)
    given = basis.permute(0, 2, 3, 4, 1).contiguous() if layout == "IHWO" else basis
    for bias in (routing_bias, None):
        linear = x.mean((2, 3)) @ routing + (0 if bias is None else bias)
        z = torch.sigmoid(linear).reshape(n, regions, bases)
        assert z.std() > 0.1  # the routing matters
        model = routed_mixture_node_model((stride, stride), (pad,) * 4, layout, routing_bias=bias is not None)
        (got,) = ort_session(model, LIBRARY, threads).run(None, _routed_feeds(x, given, guide, routing, bias))
        want = region_conv(x, _filters(z, basis), guide, stride=stride, padding=pad)
        np.testing.assert_allclose(got, want.numpy(), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    ("routing_shape", "bias_shape", "message"),
    [
        ((3, 7), (8,), r"routing must be 2-D \[C_in, R \* M\] = \[3, 8\] \(C_in from X, R from the guide"),
        ((4, 8), (8,), r"routing must be 2-D \[C_in, R \* M\] = \[3, 8\]"),
        ((3, 8), (7,), r"routing_bias must be 1-D \[R \* M\] = \[8\]"),
        ((3, 8), (1, 8), r"routing_bias must be 1-D"),
    ],
)
def test_routed_node_refuses_mismatched_routing(routing_shape, bias_shape, message):
    x, basis, guide = torch.randn(1, 3, 5, 5), torch.randn(4, 6, 3, 1, 1), torch.randn(1, 2, 5, 5)
    feeds = _routed_feeds(x, basis, guide, torch.randn(routing_shape), torch.randn(bias_shape))
    with pytest.raises(Exception, match="MixtureRegionConv2d: input " + message):
        ort_session(routed_mixture_node_model(), LIBRARY).run(None, feeds)


def _node_with_inputs(names):
    model = routed_mixture_node_model()
    node = model.graph.node[0]
    del node.input[:]
    node.input.extend(names)
    kept = {i.name: i for i in model.graph.input}
    del model.graph.input[:]
    shapes = {"X": (1, 3, 5, 5), "coefficients": (1, 2, 4), "basis": (4, 6, 3, 1, 1), "guide": (1, 2, 5, 5)}
    shapes |= {"routing": (3, 8), "routing_bias": (8,)}
    model.graph.input.extend(
        kept.get(n) or onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in names if n
    )
    return model, {n: np.random.default_rng(0).standard_normal(shapes[n]).astype(np.float32) for n in names if n}


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["X", "coefficients", "basis", "guide", "", "routing"], "give the coefficients or the routing, not both"),
        (["X", "", "basis", "guide"], "input coefficients is missing \\(and the node has no routing\\)"),
        (["X", "coefficients", "basis", "guide", "", "", "routing_bias"], "input routing_bias needs the routing input"),
    ],
)
def test_coefficients_and_routing_are_one_or_the_other(names, message):
    model, feeds = _node_with_inputs(names)
    with pytest.raises(Exception, match="MixtureRegionConv2d: " + message):
        ort_session(model, LIBRARY).run(None, feeds)


# drconv::mixture_region_conv, the PyTorch op MixtureDRConv2d calls in CPU inference: the CPU
# kernel mixes the filters itself. Cases for each of its paths at 2 workers: output-channel
# windows (small maps), bands of rows (28x28, 32x40 with 3x3 taps), samples (N = 2), the phased
# path (windows wider than C_out at 12 channels); and all of them on one worker.
OP_CASES = [*CASES, (1, 40, 48, 8, 8, 3, 1, 32, 40), (1, 10, 12, 3, 8, 1, 1, 5, 5)]


def _ihwo(basis: torch.Tensor) -> torch.Tensor:
    return basis.permute(0, 2, 3, 4, 1).contiguous()


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case", OP_CASES, ids=lambda c: "n{}c{}k{}R{}M{}k{}s{}_{}x{}".format(*c))
def test_mixture_op_matches_region_conv_on_mixed_filters(case, threads):
    n, c_in, c_out, regions, bases, k, stride, h, w = case
    torch.manual_seed(sum(case))
    pad = k // 2
    x, z = torch.randn(n, c_in, h, w), torch.rand(n, regions, bases)
    basis = torch.randn(bases, c_out, c_in, k, k) / (c_in * k * k) ** 0.5
    h_out, w_out = (conv_out_size(size, k, stride, pad, 1) for size in (h, w))
    guide = torch.randn(n, regions, h_out, w_out)
    want = region_conv(x, _filters(z, basis), guide, stride=stride, padding=pad)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got = torch.ops.drconv.mixture_region_conv(x, z, _ihwo(basis), guide, [stride] * 2, [pad] * 2, [1, 1])
    finally:
        torch.set_num_threads(before)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_mixture_op_float64_and_gradients():
    torch.manual_seed(5)
    x = torch.randn(2, 3, 6, 5, dtype=torch.float64, requires_grad=True)
    z = torch.rand(2, 4, 3, dtype=torch.float64, requires_grad=True)
    basis = torch.randn(3, 3, 3, 3, 5, dtype=torch.float64, requires_grad=True)  # IHWO, C_out = 5
    guide = torch.randn(2, 4, 6, 5, dtype=torch.float64)

    def op(x, z, basis):
        return torch.ops.drconv.mixture_region_conv(x, z, basis, guide, [1, 1], [1, 1], [1, 1])

    with torch.no_grad():
        oihw = basis.permute(0, 4, 1, 2, 3)
        torch.testing.assert_close(op(x, z, basis), region_conv(x, _filters(z, oihw), guide))
    assert torch.autograd.gradcheck(op, (x, z, basis))


def test_mixture_op_registration():
    x, z, basis, guide = (
        torch.randn(1, 4, 5, 5),
        torch.rand(1, 2, 3),
        torch.randn(3, 4, 1, 1, 6),
        torch.randn(1, 2, 5, 5),
    )
    torch.library.opcheck(
        torch.ops.drconv.mixture_region_conv.default,
        (x, z, basis, guide, [1, 1], [0, 0], [1, 1]),
        test_utils=("test_schema", "test_faketensor", "test_autograd_registration"),
    )


@pytest.mark.parametrize(
    ("z_shape", "basis_shape", "message"),
    [
        ((1, 2), (3, 4, 1, 1, 6), r"coefficients must be 3-D \[N, R, M\]"),
        ((1, 2, 3), (3, 4, 1, 6), r"basis must be 5-D \[M, C_in, kh, kw, C_out\]"),
        ((1, 2, 2), (3, 4, 1, 1, 6), r"coefficients M=2 does not match basis M=3"),
        ((1, 2, 3), (3, 5, 1, 1, 6), r"C_in"),
    ],
)
def test_mixture_op_refuses_bad_shapes(z_shape, basis_shape, message):
    x, guide = torch.randn(1, 4, 5, 5), torch.randn(1, 2, 5, 5)
    with pytest.raises(ValueError, match=message):
        torch.ops.drconv.mixture_region_conv(
            x, torch.rand(*z_shape), torch.randn(*basis_shape), guide, [1, 1], [0, 0], [1, 1]
        )
