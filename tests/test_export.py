"""drconv.export.to_onnx: the graph each mode writes, dynamic axes, checks, atomic writes."""

import os

import onnx
import pytest
import torch

from drconv import DRConv2d
from drconv.errors import DrconvError
from drconv.export import describe, to_onnx
from drconv.export.onnx import adaptive_avg_pool2d
from drconv.models import create


@pytest.fixture(scope="module")
def tiny():
    return create("drconv-tiny").eval()


@pytest.fixture(scope="module")
def tiny_custom(tiny, tmp_path_factory):
    return to_onnx(tiny, torch.randn(1, 3, 64, 64), tmp_path_factory.mktemp("onnx") / "tiny.onnx")


def _shape(value):
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in value.type.tensor_type.shape.dim]


def test_custom_mode_one_node_per_drconv_layer(tiny, tiny_custom):
    proto = onnx.load(str(tiny_custom))
    nodes = [n for n in proto.graph.node if n.domain == "drconv"]
    layers = [m for m in tiny.modules() if isinstance(m, DRConv2d)]
    assert len(nodes) == len(layers) == 3
    assert {n.op_type for n in nodes} == {"RegionConv2d"}
    # version 2: each 3x3 layer's BatchNormalization and ReLU folded into its node, filters OIHW
    assert {o.domain: o.version for o in proto.opset_import}["drconv"] == 2
    assert not [n for n in proto.graph.node if n.op_type == "BatchNormalization"]
    for node, layer in zip(nodes, layers, strict=True):
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs["strides"] == list(layer.stride)
        assert attrs["pads"] == [layer.padding[0], layer.padding[1], layer.padding[0], layer.padding[1]]
        assert attrs["dilations"] == list(layer.dilation)
        assert attrs["plugin_version"] == b"1"
        assert attrs["activation"] == b"Relu" and attrs["filter_layout"] == b"OIHW"
        assert len(node.input) == 4 and len(node.output) == 1
    # The guide conv and filter generator stay standard ops.
    assert all(n.domain in ("", "ai.onnx", "drconv") for n in proto.graph.node)


def test_custom_node_output_has_type_and_symbolic_shape(tiny_custom):
    proto = onnx.load(str(tiny_custom))
    outputs = {n.output[0] for n in proto.graph.node if n.domain == "drconv"}
    infos = {v.name: v for v in proto.graph.value_info if v.name in outputs}
    assert set(infos) == outputs
    for value in infos.values():
        assert value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        shape = _shape(value)
        assert shape[0] == "batch" and isinstance(shape[1], int)
        assert "height" in shape[2] and "width" in shape[3]


def test_dynamic_axes_are_named(tiny_custom):
    proto = onnx.load(str(tiny_custom))
    assert _shape(proto.graph.input[0]) == ["batch", 3, "height", "width"]
    assert _shape(proto.graph.output[0]) == ["batch", 1000]


@pytest.mark.parametrize("out", [1, 2, 3, 5, 7])
def test_adaptive_pool_decomposition_matches_pytorch(out):
    """Every window PyTorch uses, output sizes above the input's included."""
    torch.manual_seed(0)
    for h, w in ((1, 1), (3, 7), (5, 5), (13, 4), (28, 29)):
        x = torch.randn(2, 3, h, w, dtype=torch.float64)
        for size in (out, (out, None), (1, out)):
            expected = torch.nn.functional.adaptive_avg_pool2d(x, size)
            torch.testing.assert_close(adaptive_avg_pool2d(x, size), expected, rtol=0, atol=1e-12)


def test_exported_pools_are_a_few_nodes(tiny_custom):
    """drconv-tiny's three k x k pools and its global pool: no per-window index arithmetic
    (each small node costs ONNX Runtime microseconds per call)."""
    proto = onnx.load(str(tiny_custom))
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("ReduceMean") == 1  # the classifier's global pool
    assert not {"Floor", "Sign", "Abs"} & set(ops)
    assert len(ops) < 150


def test_portable_mode_uses_only_standard_ops(tiny, tmp_path):
    path = to_onnx(tiny, torch.randn(1, 3, 64, 64), tmp_path / "p.onnx", mode="portable")
    proto = onnx.load(str(path))
    assert {n.domain for n in proto.graph.node} <= {"", "ai.onnx"}
    assert {o.domain for o in proto.opset_import} <= {"", "ai.onnx"}
    ops = {n.op_type for n in proto.graph.node}
    assert {"MatMul", "ArgMax", "Where"} <= ops
    assert _shape(proto.graph.input[0])[0] == "batch"
    onnx.checker.check_model(proto, full_check=True)


def test_static_fixes_every_axis(tiny, tmp_path):
    path = to_onnx(tiny, torch.randn(2, 3, 48, 40), tmp_path / "s.onnx", dynamic=False)
    proto = onnx.load(str(path))
    assert _shape(proto.graph.input[0]) == [2, 3, 48, 40]
    assert _shape(proto.graph.output[0]) == [2, 1000]


def test_describe_summarises(tiny_custom):
    d = describe(tiny_custom)
    assert d["ops"]["drconv::RegionConv2d"] == 3
    assert len(d["custom_nodes"]) == 3
    assert d["inputs"] == {"input": ["batch", 3, "height", "width"]}
    assert d["bytes"] == os.path.getsize(tiny_custom)


def test_model_mode_is_restored(tmp_path):
    model = create("drconv-tiny").train()
    to_onnx(model, torch.randn(1, 3, 32, 32), tmp_path / "m.onnx")
    assert model.training


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "fast"}, "mode must be one of"),
        ({"opset": 16}, "opset 16 is not supported: choose 18 to"),
        ({"opset": onnx.defs.onnx_opset_version() + 1}, "the newest the installed onnx"),
        ({"sample_input": torch.randn(3, 64, 64)}, "4-D tensor"),
    ],
)
def test_bad_arguments(tiny, tmp_path, kwargs, message):
    args = {"model": tiny, "sample_input": torch.randn(1, 3, 32, 32), "path": tmp_path / "x.onnx", **kwargs}
    with pytest.raises(DrconvError, match=message):
        to_onnx(**args)
    assert not (tmp_path / "x.onnx").exists()


def test_an_opset_the_converter_cannot_reach_is_an_error(tiny, tmp_path, monkeypatch):
    """onnxscript falls back to the first opset when it cannot convert: never pass that off as done."""
    real_export = torch.onnx.export

    def stuck_at_18(program, **kwargs):
        return real_export(program, **{**kwargs, "opset_version": 18})

    monkeypatch.setattr(torch.onnx, "export", stuck_at_18)
    with pytest.raises(DrconvError, match=r"could not convert the model to opset 20 \(it stays at opset 18\)"):
        to_onnx(tiny, torch.randn(1, 3, 32, 32), tmp_path / "x.onnx", opset=20)
    assert list(tmp_path.iterdir()) == []


def test_untraceable_input_is_one_clear_error(tiny, tmp_path):
    with pytest.raises(DrconvError, match=r"could not trace|expects input"):
        to_onnx(tiny, torch.randn(1, 5, 64, 64), tmp_path / "x.onnx")
    assert list(tmp_path.iterdir()) == []


def test_unwritable_path_leaves_nothing(tiny, tmp_path):
    with pytest.raises(DrconvError, match="cannot write"):
        to_onnx(tiny, torch.randn(1, 3, 32, 32), "/proc/drconv-test.onnx")
    with pytest.raises(DrconvError, match="does not exist"):
        to_onnx(tiny, torch.randn(1, 3, 32, 32), tmp_path / "missing" / "x.onnx")
    with pytest.raises(DrconvError, match="is a directory"):
        to_onnx(tiny, torch.randn(1, 3, 32, 32), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_the_old_file_and_no_temp(tiny, tmp_path, monkeypatch):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"previous export")

    def broken_save(proto, path):
        with open(path, "wb") as f:
            f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(onnx, "save", broken_save)
    with pytest.raises(DrconvError, match="No space left"):
        to_onnx(tiny, torch.randn(1, 3, 32, 32), target)
    assert target.read_bytes() == b"previous export"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]
