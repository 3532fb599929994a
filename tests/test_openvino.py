"""The OpenVINO extension (libdrconv_openvino.so): loaded into openvino.Core, drconv's custom exports
read by OpenVINO's ONNX frontend and run on its CPU plugin against PyTorch, lone nodes against the
reference op, and the refusals (bad shapes and attributes, no extension)."""

import json

import numpy as np
import onnx
import openvino
import pytest
import torch
from onnx_graphs import mixture_node_model, region_conv_node_model, routed_mixture_node_model
from test_cli import run

from drconv import get_library_path, libraries, region_conv
from drconv.errors import DrconvError
from drconv.export import to_onnx
from drconv.export.rewrite import TO_IHWO
from drconv.models import create
from drconv.runtime import openvino as ov_runtime

NODE_INPUTS = ("X", "filters", "guide", "B")


def _compiled(proto: onnx.ModelProto, tmp_path, threads: int = 2):
    path = tmp_path / "node.onnx"
    onnx.save(proto, str(path))
    return ov_runtime.compile(path, threads=threads)


def _symbolic(*ranks: int) -> tuple[list[str], ...]:
    """Declared shapes with every dimension symbolic (OpenVINO's CPU plugin needs the ranks)."""
    return tuple([f"d{i}_{j}" for j in range(rank)] for i, rank in enumerate(ranks))


def test_the_extension_loads_into_a_core_and_its_frontend_reads_the_node(tmp_path):
    core = openvino.Core()
    core.add_extension(get_library_path("openvino"))
    path = tmp_path / "node.onnx"
    onnx.save(region_conv_node_model(declare_shapes=_symbolic(4, 6, 4)), str(path))
    ops = {op.get_type_name() for op in core.read_model(str(path)).get_ops()}
    assert "RegionConv2d" in ops


@pytest.mark.parametrize("name", ["drconv-tiny", "drconv-shufflenetv2-0.5x"])
def test_custom_exports_match_pytorch_at_other_batches_and_sizes(name, tmp_path):
    torch.manual_seed(0)
    model = create(name).eval()
    path = to_onnx(model, torch.randn(1, 3, 64, 64), tmp_path / "m.onnx")
    compiled = ov_runtime.compile(path, threads=2)
    for shape in ((1, 3, 64, 64), (3, 3, 96, 64)):
        x = torch.randn(shape)
        with torch.no_grad():
            expected = model(x).numpy()
        got = compiled(x.numpy())[0]
        # drconv-tiny's logits reach ~1e3 at its initialisation: atol 1e-3 is 1e-6 of them, as in test_ort.
        np.testing.assert_allclose(got, expected, atol=1e-3 if name == "drconv-tiny" else 1e-4, rtol=1e-4)


# (N, C_in, C_out, R, (kh, kw), stride, padding, dilation, (H, W), layout, bias and ReLU)
NODE_CASES = [
    (1, 3, 4, 2, (3, 3), (1, 1), (1, 1), (1, 1), (9, 11), "OIHW", False),
    (2, 5, 17, 8, (1, 1), (1, 1), (0, 0), (1, 1), (7, 7), "IHWO", True),
    (1, 24, 24, 8, (1, 1), (2, 2), (0, 0), (1, 1), (14, 13), "IHWO", True),
    (3, 4, 6, 3, (3, 3), (2, 1), (1, 2), (2, 1), (12, 10), "OIHW", True),
    (1, 6, 40, 16, (5, 5), (1, 1), (2, 2), (1, 1), (8, 9), "IHWO", False),
    (2, 2, 3, 1, (3, 1), (1, 2), (0, 1), (1, 3), (6, 8), "OIHW", False),
    (1, 96, 96, 8, (1, 1), (1, 1), (0, 0), (1, 1), (7, 7), "IHWO", True),
]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case", NODE_CASES, ids=lambda c: "n{}c{}k{}R{}_{}s{}p{}d{}_{}_{}_{}".format(*c))
def test_lone_nodes_match_the_reference_op(case, threads, tmp_path):
    n, c_in, c_out, regions, kernel, stride, pad, dilation, (h, w), layout, epilogue = case
    torch.manual_seed(n + c_in + c_out + regions)
    ho = (h + 2 * pad[0] - dilation[0] * (kernel[0] - 1) - 1) // stride[0] + 1
    wo = (w + 2 * pad[1] - dilation[1] * (kernel[1] - 1) - 1) // stride[1] + 1
    x, filters = torch.randn(n, c_in, h, w), torch.randn(n, regions, c_out, c_in, *kernel)
    guide, bias = torch.randn(n, regions, ho, wo), torch.randn(c_out)
    expected = region_conv(x, filters, guide, stride, pad, dilation)
    if epilogue:
        expected = torch.relu(expected + bias.view(1, -1, 1, 1))
    proto = region_conv_node_model(
        stride,
        (pad[0], pad[1], pad[0], pad[1]),
        dilation,
        declare_shapes=_symbolic(4, 6, 4, 1)[: 3 + epilogue],
        filter_layout=layout,
        bias=epilogue,
        activation="Relu" if epilogue else None,
    )
    given = filters.permute(TO_IHWO).contiguous() if layout == "IHWO" else filters
    feeds = [t.numpy() for t in (x, given, guide, bias)[: 3 + epilogue]]
    got = _compiled(proto, tmp_path, threads)(feeds)[0]
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-4, rtol=1e-4)


def test_a_zoo_export_runs_the_extension_operations_only(tmp_path):
    """The zoo's MixtureRegionConv2d nodes stay one operation each (filters mixed in the kernel)."""
    path = to_onnx(create("drconv-shufflenetv2-0.5x").eval(), torch.randn(1, 3, 64, 64), tmp_path / "zoo.onnx")
    core = ov_runtime.core()  # kept while its model lives: the extension's code is in the Core's library
    ops = [op.get_type_name() for op in core.read_model(str(path)).get_ops()]
    assert ops.count("MixtureRegionConv2d") == 32 and "RegionConv2d" not in ops and "Sigmoid" not in ops


def _mixture_model(routed: bool, basis_shape, extra_inputs=()):
    proto = routed_mixture_node_model(filter_layout="IHWO") if routed else mixture_node_model(filter_layout="IHWO")
    ranks = {"X": 4, "coefficients": 3, "basis": 5, "guide": 4, "routing": 2, "routing_bias": 1}
    node = proto.graph.node[0]
    for name, index in extra_inputs:  # inputs the node should not have, for the refusals
        node.input.extend([""] * (index + 1 - len(node.input)))
        node.input[index] = name
        proto.graph.input.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    for value in proto.graph.input:  # OpenVINO needs the ranks
        shape = list(basis_shape) if value.name == "basis" else [f"{value.name}{i}" for i in range(ranks[value.name])]
        value.CopyFrom(onnx.helper.make_tensor_value_info(value.name, onnx.TensorProto.FLOAT, shape))
    return proto


@pytest.mark.parametrize("routed", [False, True])
def test_mixture_nodes_match_the_reference(routed, tmp_path):
    n, c_in, c_out, regions, bases, h, w = 2, 12, 20, 4, 3, 7, 6
    torch.manual_seed(3)
    x, guide = torch.randn(n, c_in, h, w), torch.randn(n, regions, h, w)
    basis = torch.randn(bases, c_in, 1, 1, c_out)  # IHWO
    routing, routing_bias = torch.randn(c_in, regions * bases), torch.randn(regions * bases)
    z = torch.sigmoid(x.mean((2, 3)) @ routing + routing_bias).reshape(n, regions, bases)
    filters = torch.einsum("nrm,mihwo->nroihw", z, basis)
    expected = region_conv(x, filters, guide)
    feeds = [x, basis, guide, routing, routing_bias] if routed else [x, z, basis, guide]
    for threads in (1, 2):
        got = _compiled(_mixture_model(routed, basis.shape), tmp_path, threads)([t.numpy() for t in feeds])[0]
        np.testing.assert_allclose(got, expected.numpy(), atol=1e-4, rtol=1e-4)


def test_mixture_nodes_refuse_bad_routing_and_inputs(tmp_path):
    x, basis, guide = (
        np.zeros((1, 3, 5, 5), np.float32),
        np.zeros((4, 3, 1, 1, 6), np.float32),
        np.zeros((1, 2, 5, 5), np.float32),
    )
    compiled = _compiled(_mixture_model(True, basis.shape), tmp_path)
    routing = r"MixtureRegionConv2d: input routing must be 2-D \[C_in, R \* M\] = \[3, 8\]"
    with pytest.raises(RuntimeError, match=routing):
        compiled([x, basis, guide, np.zeros((3, 7), np.float32), np.zeros(7, np.float32)])
    path = tmp_path / "both.onnx"
    onnx.save(_mixture_model(False, basis.shape, [("routing", 5)]), str(path))
    with pytest.raises(DrconvError, match="MixtureRegionConv2d: give the coefficients or the routing, not both"):
        ov_runtime.compile(path)


@pytest.mark.parametrize(
    ("shapes", "message"),
    [
        (((2, 3, 9, 9), (1, 2, 4, 3, 3, 3), (2, 2, 9, 9)), "same batch size"),
        (((1, 3, 9, 9), (1, 2, 4, 5, 3, 3), (1, 2, 9, 9)), r"filters dim 3 \(C_in\) must equal X dim 1"),
        (((1, 3, 9, 9), (1, 2, 4, 3, 3, 3), (1, 3, 9, 9)), "guide dim 1 must equal the number of regions"),
        (((1, 3, 9, 9), (1, 2, 4, 3, 3, 3), (1, 2, 8, 9)), "guide must be 9x9"),
        (((1, 3, 2, 2), (1, 2, 4, 3, 5, 5), (1, 2, 1, 1)), "RegionConv2d:"),
    ],
)
def test_mismatched_shapes_are_refused_with_the_node_named(shapes, message, tmp_path):
    feeds = [np.zeros(s, np.float32) for s in shapes]
    dynamic = _compiled(region_conv_node_model(pads=(1, 1, 1, 1), declare_shapes=_symbolic(4, 6, 4)), tmp_path)
    with pytest.raises(RuntimeError, match=message):
        dynamic(feeds)
    # Declared static shapes are checked when the graph is read.
    path = tmp_path / "static.onnx"
    onnx.save(region_conv_node_model(pads=(1, 1, 1, 1), declare_shapes=shapes), str(path))
    with pytest.raises(DrconvError, match=f"OpenVINO cannot read .*{message}"):
        ov_runtime.compile(path)


@pytest.mark.parametrize(
    ("attrs", "message"),
    [
        ({"strides": (0, 1)}, "strides must be >= 1"),
        ({"pads": (1, 0, 2, 0)}, "symmetric"),
        ({"pads": (1, 1)}, "pads must have 4 values"),
        ({"filter_layout": "XYZW"}, 'filter_layout must be "OIHW" or "IHWO"'),
        ({"activation": "Tanh"}, 'activation must be "" or "Relu"'),
        ({"filter_layout": [1, 2]}, "filter_layout must be a string"),
        ({"activation": 3}, "activation must be a string"),
        ({"strides": (1.0, 1.0)}, "strides must be ints"),  # FLOATS: an error, not the default
    ],
)
def test_bad_attributes_are_refused_when_the_graph_is_read(attrs, message, tmp_path):
    path = tmp_path / "bad.onnx"
    onnx.save(region_conv_node_model(declare_shapes=_symbolic(4, 6, 4), **attrs), str(path))
    with pytest.raises(DrconvError, match=f"OpenVINO cannot read {path}: RegionConv2d: attribute .*{message}"):
        ov_runtime.compile(path)


def test_a_graph_read_without_the_extension_names_the_library(tmp_path):
    path = tmp_path / "node.onnx"
    onnx.save(region_conv_node_model(declare_shapes=_symbolic(4, 6, 4)), str(path))
    with pytest.raises(DrconvError, match=r"need the extension libdrconv_openvino\.so") as caught:
        ov_runtime.compile(path, extension=False)
    assert "\n" not in str(caught.value)


def test_a_missing_library_says_how_to_build_it(tmp_path, monkeypatch):
    path = tmp_path / "node.onnx"
    onnx.save(region_conv_node_model(declare_shapes=_symbolic(4, 6, 4)), str(path))
    monkeypatch.setattr(libraries, "plugin_path", lambda backend: None)
    with pytest.raises(DrconvError, match=r"libdrconv_openvino\.so is not built.*pip install openvino"):
        ov_runtime.compile(path)


def test_compile_refuses_bad_arguments(tmp_path):
    with pytest.raises(DrconvError, match="no such file"):
        ov_runtime.compile(tmp_path / "missing.onnx")
    path = tmp_path / "node.onnx"
    onnx.save(region_conv_node_model(declare_shapes=_symbolic(4, 6, 4)), str(path))
    with pytest.raises(DrconvError, match="precision must be one of f32, bf16, f16"):
        ov_runtime.compile(path, precision="int4")
    with pytest.raises(DrconvError, match="threads must be >= 1"):
        ov_runtime.compile(path, threads=0)


# ---- the command line ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "tiny.onnx"
    result = run("export", "-o", str(path), "--input-shape", "1,3,32,32")
    assert result.returncode == 0, result.stderr
    return path


def test_verify_runs_in_openvino(tiny_export):
    result = run("verify", str(tiny_export), "--runtime", "openvino", "--batch", "3", "--size", "48", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] and report["runtime"] == "OpenVINO" and report["input_shape"] == [3, 3, 48, 48]
    assert len(report["regions"]) == 3 and all(r["agreement"] >= 0.999 for r in report["regions"])


def test_benchmark_times_an_onnx_file_in_both_runtimes(tiny_export, tmp_path):
    out = tmp_path / "files.json"
    result = run(
        "benchmark", str(tiny_export), "--backend", "ort,ov", "--input-shape", "2,3,32,32",
        "--iters", "2", "--warmup", "0", "--json", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    doc = json.loads(out.read_text())
    assert [r["backend"] for r in doc["results"]] == ["ort:tiny.onnx", "ov:tiny.onnx"]
    assert all(r["items"] == 2 for r in doc["results"])


def test_benchmark_ov_backends_of_a_model_against_its_baseline(tmp_path):
    out = tmp_path / "model.json"
    result = run(
        "benchmark", "drconv-tiny", "--backend", "ov-custom,ov-portable", "--baseline", "drconv-tiny",
        "--input-shape", "1,3,32,32", "--iters", "2", "--warmup", "0", "--json", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    by_name = {r["backend"]: r for r in json.loads(out.read_text())["results"]}
    assert set(by_name) == {"ov-custom", "ov-portable", "baseline:ov"}
    assert by_name["ov-custom"]["bound"] == "baseline:ov" and by_name["ov-custom"]["max_rel_error"] < 1e-3


def test_benchmark_ov_without_a_file_is_refused():
    result = run("benchmark", "--backend", "ov")
    assert result.returncode == 1 and "--backend ov: those time .onnx files; give one" in result.stderr


def test_openvino_ir_round_trip_keeps_the_operations_and_their_outputs(tmp_path):
    """ov.save_model writes the operations' attributes (visit_attributes), and the extension reads them back."""
    torch.manual_seed(2)
    model = create("drconv-shufflenetv2-0.5x").eval()
    path = to_onnx(model, torch.randn(1, 3, 64, 64), tmp_path / "zoo.onnx")
    core = ov_runtime.core()
    openvino.save_model(core.read_model(str(path)), str(tmp_path / "zoo.xml"))
    ir = core.read_model(str(tmp_path / "zoo.xml"))
    assert [op.get_type_name() for op in ir.get_ops()].count("MixtureRegionConv2d") == 32
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        expected = model(x).numpy()
    compiled = core.compile_model(ir, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    np.testing.assert_allclose(compiled(x.numpy())[0], expected, atol=1e-4, rtol=1e-4)
