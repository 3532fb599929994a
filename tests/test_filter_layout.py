"""filter_layout: IHWO exports where it is free, the OIHW lowering for TensorRT and CUDA, and their parity."""

import numpy as np
import onnx
import pytest
import torch

from drconv import DRConv2d
from drconv.export import filter_layout, to_onnx
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
    """drconv-shufflenetv2-0.5x and its exports in both layouts (exporting takes seconds: once)."""
    tmp = tmp_path_factory.mktemp("zoo")
    model = _scaled(create("drconv-shufflenetv2-0.5x"))
    sample = torch.randn(1, 3, 64, 64)
    return model, to_onnx(model, sample, tmp / "ihwo.onnx"), to_onnx(model, sample, tmp / "oihw.onnx", layout="OIHW")


def test_zoo_export_is_ihwo_and_matches_oihw_and_torch(zoo):
    model, ihwo, oihw = zoo
    p_ihwo, p_oihw = onnx.load(str(ihwo)), onnx.load(str(oihw))
    assert filter_layout.layouts(p_ihwo, *LAYOUT_ARGS) == ["IHWO"] * 32
    assert filter_layout.layouts(p_oihw, *LAYOUT_ARGS) == ["OIHW"] * 32
    assert (_drconv_version(p_ihwo), _drconv_version(p_oihw)) == (2, 1)
    # The same graph but for permuted weights: no node added.
    assert len(p_ihwo.graph.node) == len(p_oihw.graph.node)
    x = torch.randn(2, 3, 96, 64)
    with torch.no_grad():
        expected = model(x).numpy()
    got_ihwo, got_oihw = _run(ihwo, x), _run(oihw, x)
    np.testing.assert_allclose(got_ihwo, got_oihw, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(got_ihwo, expected, atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize(("kernel", "layout"), [(1, "IHWO"), (3, "OIHW")])
def test_drconv2d_generator_is_ihwo_for_1x1_only(kernel, layout, tmp_path):
    # A 3x3 filter's taps are the generator Conv's spatial axes: a Transpose would cost what IHWO saves.
    torch.manual_seed(1)
    layer = DRConv2d(6, 10, kernel, region_num=4).eval()
    path = to_onnx(layer, torch.randn(1, 6, 12, 12), tmp_path / "l.onnx")
    assert filter_layout.layouts(onnx.load(str(path)), *LAYOUT_ARGS) == [layout]
    x = torch.randn(3, 6, 9, 14)
    with torch.no_grad():
        expected = layer(x).numpy()
    np.testing.assert_allclose(_run(path, x), expected, atol=1e-4, rtol=1e-4)


def test_to_oihw_lowers_with_a_transpose_and_the_same_outputs(zoo, tmp_path):
    _, path, _ = zoo
    proto = onnx.load(str(path))
    nodes = len(proto.graph.node)
    assert filter_layout.to_oihw(proto, *LAYOUT_ARGS) == 32
    assert filter_layout.layouts(proto, *LAYOUT_ARGS) == ["OIHW"] * 32
    assert len(proto.graph.node) == nodes + 32
    assert sum(n.op_type == "Transpose" for n in proto.graph.node) >= 32
    assert _drconv_version(proto) == 1
    onnx.checker.check_model(proto)
    assert filter_layout.to_oihw(proto, *LAYOUT_ARGS) == 0  # nothing left to lower
    lowered = tmp_path / "lowered.onnx"
    onnx.save(proto, str(lowered))
    x = torch.randn(1, 3, 64, 96)
    np.testing.assert_allclose(_run(lowered, x), _run(path, x), atol=1e-5, rtol=1e-5)


def test_to_ihwo_copies_a_weight_that_another_node_reads(zoo):
    _, _, path = zoo
    proto = onnx.load(str(path))
    # A second reader of the first mixture weight (an Identity to a new output) must still see it unpermuted.
    region = next(n for n in proto.graph.node if n.op_type == CUSTOM_OP)
    producer = {o: n for n in proto.graph.node for o in n.output}
    gemm = producer[producer[region.input[1]].input[0]]
    weight = gemm.input[1]
    proto.graph.node.append(onnx.helper.make_node("Identity", [weight], ["weight_copy"]))
    proto.graph.output.append(onnx.helper.make_tensor_value_info("weight_copy", onnx.TensorProto.FLOAT, None))
    before = next(onnx.numpy_helper.to_array(i) for i in proto.graph.initializer if i.name == weight)
    assert filter_layout.to_ihwo(proto, *LAYOUT_ARGS) == 32
    after = next(onnx.numpy_helper.to_array(i) for i in proto.graph.initializer if i.name == weight)
    np.testing.assert_array_equal(before, after)
    assert gemm.input[1] != weight


def test_trt_build_parses_the_lowered_graph(zoo):
    """build_engine's parse step hands TensorRT an OIHW graph; the plugin refuses IHWO."""
    from drconv.runtime import trt

    class Parser:  # records what TensorRT's OnnxParser would be given
        def parse(self, data, path=None):
            self.data, self.path = data, path
            return True

        def parse_from_file(self, path):
            self.data, self.path = None, path
            return True

    _, ihwo, oihw = zoo
    parser = Parser()
    assert trt._parse(parser, ihwo)
    assert parser.path == str(ihwo)
    parsed = onnx.load_from_string(parser.data)
    assert filter_layout.layouts(parsed, *LAYOUT_ARGS) == ["OIHW"] * 32
    assert trt._parse(parser, oihw) and parser.data is None  # nothing to lower: the file as it is


def test_trt_ep_export_stays_oihw(tmp_path):
    model = create("drconv-shufflenetv2-0.5x").eval()
    path = to_onnx(model, torch.randn(1, 3, 64, 64), tmp_path / "m.onnx", trt_ep=True)
    proto = onnx.load(str(path))
    assert {n.op_type for n in proto.graph.node if n.domain == "trt.plugins"} == {CUSTOM_OP}
    assert all(
        onnx.helper.get_attribute_value(a) == b"OIHW"
        for n in proto.graph.node
        if n.domain == "trt.plugins"
        for a in n.attribute
        if a.name == "filter_layout"
    )


def test_bad_layout_is_a_clear_error(tmp_path):
    from drconv.errors import DrconvError

    with pytest.raises(DrconvError, match="layout must be one of IHWO, OIHW"):
        to_onnx(DRConv2d(2, 2, 1, 2), torch.randn(1, 2, 4, 4), tmp_path / "m.onnx", layout="HWIO")
    assert not (tmp_path / "m.onnx").exists()
