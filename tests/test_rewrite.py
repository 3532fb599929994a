"""The export's nodes and passes: MixtureDRConv2d written as one routed MixtureRegionConv2d (version 4),
IHWO filters and the folded BatchNormalization + ReLU where they are free (version 2), the lowering to
version 1 for TensorRT and CUDA, and their parity with PyTorch."""

import numpy as np
import onnx
import pytest
import torch

from drconv import DRConv2d
from drconv.errors import DrconvError
from drconv.export import rewrite, to_onnx
from drconv.export.onnx import CUSTOM_DOMAIN, CUSTOM_OP
from drconv.models import create
from drconv.runtime.ort import session

LAYOUT_ARGS = (CUSTOM_DOMAIN, CUSTOM_OP)


def _drconv_version(proto: onnx.ModelProto) -> int:
    return next(o.version for o in proto.opset_import if o.domain == CUSTOM_DOMAIN)


def _run(path, x: torch.Tensor) -> np.ndarray:
    return session(path, threads=2).run(None, {"input": x.numpy()})[0]


def _scaled(model: torch.nn.Module) -> torch.nn.Module:
    """Weights large enough that the logits spread out (default init gives near-equal ones)."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    return model.eval()


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """drconv-shufflenetv2-0.5x and three exports (exporting takes seconds: once).

    v2: the default (routed mixture nodes, BN + ReLU folded in, IHWO; drconv version 4); oihw: folded, OIHW;
    plain: OIHW, nothing folded (the mixture nodes still route themselves: version 4).
    """
    tmp = tmp_path_factory.mktemp("zoo")
    model = _scaled(create("drconv-shufflenetv2-0.5x"))
    sample = torch.randn(1, 3, 64, 64)
    return (
        model,
        to_onnx(model, sample, tmp / "v2.onnx"),
        to_onnx(model, sample, tmp / "oihw.onnx", layout="OIHW"),
        to_onnx(model, sample, tmp / "plain.onnx", layout="OIHW", fuse=False),
    )


def _region_convs(proto: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in proto.graph.node if n.op_type == CUSTOM_OP]


def _mixtures(proto: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in proto.graph.node if n.op_type == rewrite.MIXTURE_OP]


def _initializer(proto: onnx.ModelProto, name: str) -> np.ndarray:
    return next(onnx.numpy_helper.to_array(i) for i in proto.graph.initializer if i.name == name)


def test_zoo_export_writes_routed_mixtures_folds_bn_relu_and_is_ihwo_matching_torch(zoo):
    model, v2, oihw, plain = zoo
    p_v2, p_oihw, p_plain = (onnx.load(str(p)) for p in (v2, oihw, plain))
    assert rewrite.layouts(p_v2, *LAYOUT_ARGS) == ["IHWO"] * 32
    assert rewrite.layouts(p_oihw, *LAYOUT_ARGS) == rewrite.layouts(p_plain, *LAYOUT_ARGS) == ["OIHW"] * 32
    assert [_drconv_version(p) for p in (p_v2, p_oihw, p_plain)] == [4, 4, 4]
    for proto in (p_v2, p_oihw, p_plain):
        assert len(_mixtures(proto)) == 32 and not _region_convs(proto)
        assert not any(n.op_type in ("Mul", "Sigmoid", "MatMul") for n in proto.graph.node)
    for node in _mixtures(p_v2):
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        # X, (no coefficients: routed), basis, guide, B, routing, routing_bias
        assert len(node.input) == 7 and node.input[1] == "" and all(node.input[2:]) and attrs["activation"] == b"Relu"
    for node in _mixtures(p_plain):  # no B, no activation: the BatchNormalization and ReLU follow
        assert node.input[4] == "" and not any(a.name == "activation" for a in node.attribute)
    # Per region conv its BatchNormalization and ReLU are folded in; IHWO only permuted the basis.
    assert len(p_v2.graph.node) == len(p_oihw.graph.node) == len(p_plain.graph.node) - 2 * 32
    assert not any(n.op_type == "BatchNormalization" for n in p_v2.graph.node)
    assert sum(n.op_type == "BatchNormalization" for n in p_plain.graph.node) == 32
    # The basis is the mixture weight, scaled by 2 / M (and the BatchNormalization's scale).
    first = model.stage1_block1.conva_right
    layer, bn = first.conv, first.bn
    scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().numpy()
    oihw_basis = _initializer(p_oihw, _mixtures(p_oihw)[0].input[2])
    expected = layer.weight.detach().numpy().T.reshape(oihw_basis.shape) * (2 / 8) * scale.reshape(1, -1, 1, 1, 1)
    np.testing.assert_allclose(oihw_basis, expected, rtol=1e-5, atol=1e-6)
    ihwo_basis = _initializer(p_v2, _mixtures(p_v2)[0].input[2])
    np.testing.assert_allclose(ihwo_basis, oihw_basis.transpose(0, 2, 3, 4, 1), rtol=1e-6)
    # The routing: routing_fc's weight [R*M, C_in] transposed, and its bias.
    routing, routing_bias = (_initializer(p_v2, _mixtures(p_v2)[0].input[i]) for i in (5, 6))
    np.testing.assert_array_equal(routing, layer.routing_fc.weight.detach().numpy().T)
    np.testing.assert_array_equal(routing_bias, layer.routing_fc.bias.detach().numpy())
    x = torch.randn(2, 3, 96, 64)
    with torch.no_grad():
        expected = model(x).numpy()
    got = [_run(p, x) for p in (v2, oihw, plain)]
    for other in got[1:]:
        np.testing.assert_allclose(got[0], other, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(got[0], expected, atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize(("kernel", "layout"), [(1, "IHWO"), (3, "OIHW")])
def test_drconv2d_folds_its_epilogue_at_every_kernel_and_goes_ihwo_for_1x1_only(kernel, layout, tmp_path):
    # A k x k filter's taps are the generator Conv's spatial axes: a Transpose would cost what
    # IHWO saves. Its rows still run over (C_out, C_in), so the BatchNormalization folds in.
    torch.manual_seed(1)
    bn = torch.nn.BatchNorm2d(10)
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2), bn.weight.uniform_(0.5, 2)
        bn.bias.uniform_(-1, 1)
    net = torch.nn.Sequential(DRConv2d(6, 10, kernel, region_num=4), bn, torch.nn.ReLU()).eval()
    path = to_onnx(net, torch.randn(1, 6, 12, 12), tmp_path / "l.onnx")
    proto = onnx.load(str(path))
    assert rewrite.layouts(proto, *LAYOUT_ARGS) == [layout]
    assert not [n.op_type for n in proto.graph.node if n.op_type in ("BatchNormalization", "Relu")]
    (node,) = [n for n in proto.graph.node if n.domain == "drconv"]
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert len(node.input) == 4 and attributes["activation"] == b"Relu"
    x = torch.randn(3, 6, 9, 14)
    with torch.no_grad():
        expected = net(x).numpy()
    np.testing.assert_allclose(_run(path, x), expected, atol=1e-4, rtol=1e-4)
    # and lowered back to version 1 (drconv build, trtexec): the bias an Add, the activation a Relu
    assert rewrite.to_v1(proto, *LAYOUT_ARGS) == 1
    assert {"Add", "Relu"} <= {n.op_type for n in proto.graph.node}
    onnx.save(proto, str(tmp_path / "v1.onnx"))
    np.testing.assert_allclose(_run(tmp_path / "v1.onnx", x), expected, atol=1e-4, rtol=1e-4)


def test_to_v1_lowers_to_standard_nodes_with_the_same_outputs(zoo, tmp_path):
    _, path, _, _ = zoo
    proto = onnx.load(str(path))
    ops = ("Transpose", "Add", "Relu", "MatMul", "Reshape", "ReduceMean", "Gemm", "Sigmoid")
    counts = {op: sum(n.op_type == op for n in proto.graph.node) for op in ops}
    nodes = len(proto.graph.node)
    assert rewrite.to_v1(proto, *LAYOUT_ARGS) == 32
    assert rewrite.layouts(proto, *LAYOUT_ARGS) == ["OIHW"] * 32 and not _mixtures(proto)
    assert all(len(n.input) == 3 and not any(a.name == "activation" for a in n.attribute) for n in _region_convs(proto))
    # Each routing becomes ReduceMean, Gemm, Sigmoid and Reshape, each mixture MatMul + Reshape
    # (its IHWO basis permuted to OIHW, so no Transpose), the node's bias and ReLU an Add and a Relu.
    assert len(proto.graph.node) == nodes + 8 * 32
    added = {op: sum(n.op_type == op for n in proto.graph.node) - c for op, c in counts.items()}
    assert added == {
        "Transpose": 0,
        "Add": 32,
        "Relu": 32,
        "MatMul": 32,
        "Reshape": 64,
        "ReduceMean": 32,
        "Gemm": 32,
        "Sigmoid": 32,
    }
    assert _drconv_version(proto) == 1
    onnx.checker.check_model(proto)
    assert rewrite.to_v1(proto, *LAYOUT_ARGS) == 0  # nothing left to lower
    lowered = tmp_path / "lowered.onnx"
    onnx.save(proto, str(lowered))
    x = torch.randn(1, 3, 64, 96)
    np.testing.assert_allclose(_run(lowered, x), _run(path, x), atol=1e-5, rtol=1e-5)


def test_expand_mixture_keeps_the_layout_and_the_outputs(zoo, tmp_path):
    _, path, _, _ = zoo
    proto = onnx.load(str(path))
    assert rewrite.expand_mixture(proto, *LAYOUT_ARGS) == 32
    assert not _mixtures(proto) and rewrite.layouts(proto, *LAYOUT_ARGS) == ["IHWO"] * 32
    onnx.checker.check_model(proto)
    expanded = tmp_path / "expanded.onnx"
    onnx.save(proto, str(expanded))
    x = torch.randn(2, 3, 64, 64)
    np.testing.assert_allclose(_run(expanded, x), _run(path, x), atol=1e-5, rtol=1e-5)


def test_expand_routing_gives_version_3_nodes_with_the_same_outputs(zoo, tmp_path):
    _, path, _, _ = zoo
    proto = onnx.load(str(path))
    nodes = len(proto.graph.node)
    assert rewrite.expand_routing(proto, CUSTOM_DOMAIN) == 32
    assert len(proto.graph.node) == nodes + 4 * 32  # ReduceMean, Gemm, Sigmoid, Reshape each
    assert all(len(n.input) == 5 and n.input[1] for n in _mixtures(proto))  # coefficients again, no routing
    assert rewrite.expand_routing(proto, CUSTOM_DOMAIN) == 0
    onnx.checker.check_model(proto)
    expanded = tmp_path / "routing.onnx"
    onnx.save(proto, str(expanded))
    x = torch.randn(2, 3, 64, 32)
    np.testing.assert_allclose(_run(expanded, x), _run(path, x), atol=1e-5, rtol=1e-5)


def test_to_ihwo_copies_a_weight_that_another_node_reads(tmp_path):
    torch.manual_seed(2)
    net = torch.nn.Sequential(DRConv2d(6, 10, 1, region_num=4)).eval()
    proto = onnx.load(str(to_onnx(net, torch.randn(1, 6, 8, 8), tmp_path / "l.onnx", layout="OIHW", fuse=False)))
    # A second reader of the generator's grouped-conv weight (an Identity to a new output) must still see it unpermuted.
    region = next(n for n in proto.graph.node if n.op_type == CUSTOM_OP)
    producer = {o: n for n in proto.graph.node for o in n.output}
    conv = producer[producer[region.input[1]].input[0]]
    weight = conv.input[1]
    proto.graph.node.append(onnx.helper.make_node("Identity", [weight], ["weight_copy"]))
    proto.graph.output.append(onnx.helper.make_tensor_value_info("weight_copy", onnx.TensorProto.FLOAT, None))
    before = next(onnx.numpy_helper.to_array(i) for i in proto.graph.initializer if i.name == weight)
    assert rewrite.to_ihwo(proto, *LAYOUT_ARGS) == 1
    after = next(onnx.numpy_helper.to_array(i) for i in proto.graph.initializer if i.name == weight)
    np.testing.assert_array_equal(before, after)
    assert conv.input[1] != weight


def test_trt_build_parses_the_lowered_graph(zoo, tmp_path):
    """build_engine's parse step hands TensorRT a version-1 graph without functions (the plugin
    refuses version 2's additions; the parser would import a function before the plugin)."""
    from drconv.runtime import trt

    class Parser:  # records what TensorRT's OnnxParser would be given
        def parse(self, data, path=None):
            self.data, self.path = data, path
            return True

        def parse_from_file(self, path):
            self.data, self.path = None, path
            return True

    _, v2, _, plain = zoo
    parser = Parser()
    for path in (v2, plain):  # routed mixtures, with and without B and Relu folded in
        assert trt._parse(parser, path)
        assert parser.path == str(path)
        parsed = onnx.load_from_string(parser.data)
        assert rewrite.layouts(parsed, *LAYOUT_ARGS) == ["OIHW"] * 32 and not _mixtures(parsed)
        assert _drconv_version(parsed) == 1
        assert onnx.load(str(path)).functions and not parsed.functions
        assert all(len(n.input) == 3 and all(n.input) for n in _region_convs(parsed))
    v1 = to_onnx(torch.nn.Sequential(DRConv2d(3, 8, 1)).eval(), torch.randn(1, 3, 8, 8), tmp_path / "v1.onnx",
                 layout="OIHW", fuse=False)  # fmt: skip
    assert _drconv_version(onnx.load(str(v1))) == 1
    assert trt._parse(parser, v1) and not onnx.load_from_string(parser.data).functions  # its function stripped
    bare = to_onnx(torch.nn.Sequential(DRConv2d(3, 8, 1)).eval(), torch.randn(1, 3, 8, 8), tmp_path / "bare.onnx",
                   node_version=1)  # fmt: skip
    assert not onnx.load(str(bare)).functions
    assert trt._parse(parser, bare) and parser.data is None  # nothing to change: the file as it is


def test_bad_layout_is_a_clear_error(tmp_path):
    with pytest.raises(DrconvError, match="layout must be one of IHWO, OIHW"):
        to_onnx(DRConv2d(2, 2, 1, 2), torch.randn(1, 2, 4, 4), tmp_path / "m.onnx", layout="HWIO")
    assert not (tmp_path / "m.onnx").exists()


def test_node_version_1_lowers_the_export_for_the_tensorrt_plugin(zoo, tmp_path):
    model, v2, _, _ = zoo
    path = to_onnx(model, torch.randn(1, 3, 64, 64), tmp_path / "v1.onnx", node_version=1)
    proto = onnx.load(str(path))
    assert _drconv_version(proto) == 1 and not _mixtures(proto)
    assert rewrite.layouts(proto, *LAYOUT_ARGS) == ["OIHW"] * 32
    assert all(len(n.input) == 3 and not any(a.name == "activation" for a in n.attribute) for n in _region_convs(proto))
    x = torch.randn(1, 3, 64, 96)
    np.testing.assert_allclose(_run(path, x), _run(v2, x), atol=1e-5, rtol=1e-5)
    with pytest.raises(DrconvError, match="node_version must be None"):
        to_onnx(model, torch.randn(1, 3, 64, 64), tmp_path / "v2.onnx", node_version=2)


class _MixtureNet(torch.nn.Module):
    """A guide conv feeding a MixtureDRConv2d (3x3, stride 2, its own bias), then BatchNorm and ReLU."""

    def __init__(self) -> None:
        super().__init__()
        from drconv.nn import MixtureDRConv2d

        self.guide = torch.nn.Conv2d(5, 4, 3, padding=1)
        self.conv = MixtureDRConv2d(5, 7, 3, region_num=4, num_basis=3, stride=2, padding=1, bias=True)
        self.bn = torch.nn.BatchNorm2d(7)
        with torch.no_grad():
            self.conv.bias.uniform_(-1, 1)
            self.bn.running_mean.uniform_(-1, 1), self.bn.running_var.uniform_(0.5, 2), self.bn.weight.uniform_(0.5, 2)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x, self.guide(x))))


@pytest.mark.parametrize(("layout", "fuse"), [("IHWO", True), ("OIHW", False)])
def test_a_strided_3x3_mixture_with_its_own_bias_exports_as_one_node(layout, fuse, tmp_path):
    torch.manual_seed(4)
    net = _MixtureNet().eval()
    path = to_onnx(net, torch.randn(1, 5, 12, 10), tmp_path / "m.onnx", layout=layout, fuse=fuse)
    proto = onnx.load(str(path))
    (node,) = _mixtures(proto)
    assert rewrite.layouts(proto, *LAYOUT_ARGS) == [layout] and node.input[4]  # B: the layer's bias (and BN's)
    assert any(n.op_type == "BatchNormalization" for n in proto.graph.node) != fuse
    x = torch.randn(3, 5, 15, 9)
    with torch.no_grad():
        expected = net(x).numpy()
    np.testing.assert_allclose(_run(path, x), expected, atol=1e-4, rtol=1e-4)
