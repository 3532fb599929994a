"""One ONNX file that runs everywhere: each custom export carries its nodes' standard-op bodies as
model-local functions (drconv.export.functions).

The matrix: plain ONNX Runtime (the bodies), ONNX Runtime with drconv's library (our kernels:
its profile says so), onnx's ReferenceEvaluator, and OpenVINO without the extension (the
functions inlined), each against PyTorch at another batch and size than the export's.
"""

import collections
import json
import subprocess
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx.reference import ReferenceEvaluator
from perturbed import perturbed

import drconv
from drconv import DRConv2d
from drconv.contract import DOMAIN, MIXTURE, REGION_CONV
from drconv.errors import DrconvError
from drconv.export import functions, rewrite, to_onnx
from drconv.runtime import openvino as ov_runtime
from drconv.runtime.ort import session
from drconv.runtime.trt import for_tensorrt

MODELS = ["drconv-tiny", "drconv-shufflenetv2-0.5x"]
NODE = {"drconv-tiny": REGION_CONV.name, "drconv-shufflenetv2-0.5x": MIXTURE.name}
# The bodies' own operations, which a run of our kernels never shows.
BODY_OPS = {"GatherElements", "IsNaN"}


@pytest.fixture(scope="module", params=MODELS)
def exported(request, tmp_path_factory):
    """(name, model, custom export at 1x3x64x64, PyTorch's output and the input at 2x3x96x128)."""
    model = perturbed(drconv.models.create(request.param))
    path = to_onnx(model, torch.randn(1, 3, 64, 64), tmp_path_factory.mktemp("f") / f"{request.param}.onnx")
    x = torch.randn(2, 3, 96, 128, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = model(x).numpy()
    return request.param, model, path, x.numpy(), want


def _close(got: np.ndarray, want: np.ndarray) -> None:
    """Within 1e-4 relative to the output's scale."""
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


def _profiled_ops(sess: ort.InferenceSession) -> collections.Counter:
    with open(sess.end_profiling()) as f:
        events = json.load(f)
    runs = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    return collections.Counter(e["args"]["op_name"] for e in runs)


def test_the_export_carries_one_function_per_node_type(exported):
    name, _, path, _, _ = exported
    proto = onnx.load(str(path))
    assert [(f.domain, f.name) for f in proto.functions] == [(DOMAIN, NODE[name])]
    assert all(n.op_type == NODE[name] for n in proto.graph.node if n.domain == DOMAIN)
    onnx.checker.check_model(proto, full_check=True)
    # The body's taps: slices of a known 3x3 kernel (drconv-tiny), the input itself for the zoo's 1x1.
    form = functions.Variant.parse({p.key: p.value for p in proto.functions[0].metadata_props}[functions.VARIANT_KEY])
    assert (form.kernel, form.pointwise) == {"drconv-tiny": ((3, 3), False)}.get(name, ((1, 1), True))
    body = collections.Counter(n.op_type for n in proto.functions[0].node)
    assert not body["Gather"] and body["Slice"] >= (9 if name == "drconv-tiny" else 0)


def test_plain_onnx_runtime_runs_the_bodies(exported, tmp_path):
    _, _, path, x, want = exported
    options = ort.SessionOptions()
    options.enable_profiling, options.profile_file_prefix = True, str(tmp_path / "plain")
    sess = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    _close(sess.run(None, {"input": x})[0], want)
    ops = _profiled_ops(sess)
    assert not ops[REGION_CONV.name] and not ops[MIXTURE.name]
    assert all(ops[op] for op in BODY_OPS)


def test_onnx_runtime_with_the_library_runs_our_kernels(exported, tmp_path):
    name, model, path, x, want = exported
    sess = session(path, profile=tmp_path / "ours")
    _close(sess.run(None, {"input": x})[0], want)
    ops = _profiled_ops(sess)
    layers = sum(isinstance(m, (drconv.DRConv2d, drconv.nn.MixtureDRConv2d)) for m in model.modules())
    assert ops[NODE[name]] == layers  # every node, one run each
    assert not any(ops[op] for op in BODY_OPS)


def test_the_reference_evaluator_runs_the_bodies(exported):
    _, model, path, x, _ = exported
    crop = np.ascontiguousarray(x[:, :, :64, :96])  # batch 2, 64x96: the evaluator is slow at full size
    with torch.no_grad():
        want = model(torch.from_numpy(crop)).numpy()
    _close(ReferenceEvaluator(str(path)).run(None, {"input": crop})[0], want)


def test_a_float16_export_runs_its_bodies_where_no_kernel_takes_it(tmp_path):
    """Our CPU kernel is float32: with the library registered ONNX Runtime still runs a float16
    node, through its body, as it does without the library."""
    model = perturbed(torch.nn.Sequential(DRConv2d(3, 8, 3, region_num=4), torch.nn.BatchNorm2d(8))).half()
    path = to_onnx(model, torch.randn(1, 3, 16, 16).half(), tmp_path / "fp16.onnx")
    x = torch.randn(2, 3, 20, 24).half()
    with torch.no_grad():
        want = model.float()(x.float()).numpy()
    plain = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for sess in (plain, session(path)):
        got = sess.run(None, {"input": x.numpy()})[0]
        assert got.dtype == np.float16
        np.testing.assert_allclose(got.astype(np.float32), want, rtol=2e-2, atol=2e-2 * float(np.abs(want).max()))


def test_openvino_without_the_extension_inlines_the_functions(exported):
    _, _, path, x, want = exported
    compiled = ov_runtime.compile(path, threads=2, extension=False)
    _close(compiled({"input": x})[0], want)
    ops = {op.get_type_name() for op in compiled.get_runtime_model().get_ops()}
    assert not any("RegionConv2d" in op for op in ops)


def test_portable_is_the_custom_file_with_its_functions_inlined(exported, tmp_path):
    _, model, path, x, want = exported
    portable = onnx.load(str(to_onnx(model, torch.randn(1, 3, 64, 64), tmp_path / "p.onnx", mode="portable")))
    inlined = functions.inline(onnx.load(str(path)))
    assert not portable.functions and all(o.domain != DOMAIN for o in portable.opset_import)
    assert collections.Counter(n.op_type for n in portable.graph.node) == collections.Counter(
        n.op_type for n in inlined.graph.node
    )
    sess = ort.InferenceSession(portable.SerializeToString(), providers=["CPUExecutionProvider"])
    _close(sess.run(None, {"input": x})[0], want)


@pytest.mark.parametrize("tool", ["onnxslim", "onnxsim"])
def test_graph_tools_keep_the_nodes_and_the_functions(exported, tool):
    name, _, path, x, want = exported
    proto = onnx.load(str(path))
    if tool == "onnxslim":
        import onnxslim

        tooled = onnxslim.slim(proto)
    else:
        import onnxsim

        tooled, ok = onnxsim.simplify(proto)
        assert ok
    count = sum(n.domain == DOMAIN for n in proto.graph.node)
    assert sum(n.op_type == NODE[name] and n.domain == DOMAIN for n in tooled.graph.node) == count
    assert [(f.domain, f.name) for f in tooled.functions] == [(DOMAIN, NODE[name])]
    onnx.checker.check_model(tooled, full_check=True)
    sess = ort.InferenceSession(tooled.SerializeToString(), providers=["CPUExecutionProvider"])
    _close(sess.run(None, {"input": x})[0], want)


# ---- variants: one body per file, the nodes brought to one where they differ ---------------------


class _Mixed(torch.nn.Module):
    """A 1x1 DRConv2d with BN and ReLU after it (IHWO, B, Relu once folded) and a 3x3 one without
    (OIHW, no B, no activation): one node type, three differences."""

    def __init__(self) -> None:
        super().__init__()
        self.a = DRConv2d(3, 8, 1, region_num=4)
        self.bn = torch.nn.BatchNorm2d(8)
        self.b = DRConv2d(8, 6, 3, region_num=3)

    def forward(self, x):
        return self.b(torch.relu(self.bn(self.a(x))))


def test_nodes_that_differ_share_one_body_after_attach(tmp_path):
    model = perturbed(_Mixed().eval())
    path = to_onnx(model, torch.randn(1, 3, 16, 16), tmp_path / "mixed.onnx")
    proto = onnx.load(str(path))
    nodes = [n for n in proto.graph.node if n.domain == DOMAIN]
    assert len({str(functions.variant(n)) for n in nodes}) == 1 and len(proto.functions) == 1
    assert rewrite.layouts(proto, DOMAIN, REGION_CONV.name) == [rewrite.IHWO, rewrite.IHWO]
    assert "Relu" in {n.op_type for n in proto.graph.node}  # the first node's ReLU, apart again
    assert [len(n.input) for n in nodes] == [4, 4]  # the second padded with an absent B
    x = torch.randn(2, 3, 20, 24)
    with torch.no_grad():
        want = model(x).numpy()
    plain = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    _close(plain.run(None, {"input": x.numpy()})[0], want)
    _close(session(path).run(None, {"input": x.numpy()})[0], want)
    _close(ReferenceEvaluator(str(path)).run(None, {"input": x.numpy()})[0], want)


def test_routed_and_given_coefficients_share_one_body(tmp_path):
    model = perturbed(drconv.models.create("drconv-shufflenetv2-0.5x"))
    proto = onnx.load(str(to_onnx(model, torch.randn(1, 3, 64, 64), tmp_path / "z.onnx")))
    functions.strip(proto)
    mixed = onnx.ModelProto()
    mixed.CopyFrom(proto)
    rewrite.expand_routing(mixed, DOMAIN)  # every node given its coefficients, then all but one routed again
    routed = {n.output[0]: n for n in proto.graph.node if n.op_type == MIXTURE.name}
    for node in [n for n in mixed.graph.node if n.op_type == MIXTURE.name][1:]:
        node.CopyFrom(routed[node.output[0]])
    assert {functions.variant(n).routed for n in mixed.graph.node if n.op_type == MIXTURE.name} == {False, True}
    functions.attach(mixed)
    assert not any(functions.variant(n).routed for n in mixed.graph.node if n.op_type == MIXTURE.name)
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 96)).astype(np.float32)
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    plain = ort.InferenceSession(mixed.SerializeToString(), providers=["CPUExecutionProvider"])
    _close(plain.run(None, {"input": x})[0], want)
    _close(ReferenceEvaluator(mixed).run(None, {"input": x[:1]})[0], want[:1])


def test_a_node_edited_after_the_export_is_refused_by_name(tmp_path):
    path = to_onnx(perturbed(_Mixed().eval()), torch.randn(1, 3, 16, 16), tmp_path / "m.onnx")
    proto = onnx.load(str(path))
    node = next(n for n in proto.graph.node if n.domain == DOMAIN)
    rewrite.set_layout(node, rewrite.OIHW)  # by hand, behind the functions' back
    edited = tmp_path / "edited.onnx"
    onnx.save(proto, str(edited))
    for load in (session, lambda p: ov_runtime.compile(p, extension=False)):
        with pytest.raises(DrconvError, match=rf"node {node.name} \(filter_layout=OIHW.*does not fit"):
            load(edited)


def test_the_contract_defaults_fill_attributes_a_node_leaves_out(tmp_path):
    """A node without strides, pads and dilations: the function's attribute defaults (the contract's)."""
    model = torch.nn.Sequential(DRConv2d(3, 4, 1, region_num=2)).eval()
    proto = onnx.load(str(to_onnx(model, torch.randn(1, 3, 8, 8), tmp_path / "d.onnx")))
    node = next(n for n in proto.graph.node if n.domain == DOMAIN)
    kept = [a for a in node.attribute if a.name not in ("strides", "pads", "dilations")]
    del node.attribute[:]
    node.attribute.extend(kept)
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    plain = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    _close(plain.run(None, {"input": x})[0], want)
    functions.attach(proto)  # writes them on the node: the ReferenceEvaluator reads no function defaults
    node = next(n for n in proto.graph.node if n.domain == DOMAIN)
    assert {"strides", "pads", "dilations"} <= {a.name for a in node.attribute}
    _close(ReferenceEvaluator(proto).run(None, {"input": x})[0], want)


# ---- TensorRT: drconv build hands the parser the plugin's route ---------------------------------

BUILD = Path(__file__).resolve().parent.parent / "build" / "plugins"


def test_drconv_builds_graph_reaches_the_plugin_in_the_host_program(exported):
    """The graph `drconv build` parses has no functions (the parser would import one before any
    plugin), version-1 RegionConv2d nodes only, and each node's attributes create the plugin
    through the creator, as the ONNX parser would (the TensorRT host program, --node)."""
    from drconv.libraries import plugin_path

    program, library = BUILD / "tensorrt_plugin_test", plugin_path("tensorrt")
    if library is None or not program.is_file():
        pytest.skip("no CUDA toolkit (nvcc), so `make plugins` built no TensorRT plugin and host program")
    _, _, path, _, _ = exported
    proto = onnx.load(str(path))
    assert proto.functions and for_tensorrt(proto)
    assert not proto.functions and {o.domain: o.version for o in proto.opset_import}[DOMAIN] == 1
    nodes = [n for n in proto.graph.node if n.domain == DOMAIN]
    assert nodes and all(n.op_type == REGION_CONV.name and len(n.input) == 3 and all(n.input) for n in nodes)
    for node in nodes[:3]:
        result = _host_node(program, library, node)
        last = result.stdout.strip().splitlines()[-1]
        assert result.returncode == 0 and last.startswith("ok RegionConv2d version 1 created"), result.stdout
    # What the route avoids: the exported node of version 2 is refused by the plugin.
    v2 = next(n for n in onnx.load(str(path)).graph.node if n.domain == DOMAIN)
    refused = _host_node(program, library, v2, op_type=REGION_CONV.name)
    last = refused.stdout.strip().splitlines()[-1]
    assert refused.returncode == 1 and last.startswith("FAIL"), refused.stdout
    assert "not supported by the TensorRT plugin" in last


def _host_node(program: Path, library: Path, node: onnx.NodeProto, op_type: str | None = None):
    fields = []
    version = "1"
    for attribute in node.attribute:
        value = onnx.helper.get_attribute_value(attribute)
        if attribute.name == "plugin_version":
            version = value.decode()
        elif attribute.type == onnx.AttributeProto.INTS:
            fields.append(f"{attribute.name}=i:{','.join(map(str, value))}")
        elif attribute.type == onnx.AttributeProto.STRING:
            fields.append(f"{attribute.name}=s:{value.decode()}")
    args = [str(program), str(library), "--node", op_type or node.op_type, version, *fields]
    return subprocess.run(args, capture_output=True, text=True, timeout=60)


# ---- the bodies against the kernels, node by node: ties, NaN, Inf, both layouts, B, Relu, routing --


def _node_cases():
    from onnx_graphs import mixture_node_model, region_conv_node_model, routed_mixture_node_model

    return {
        "region-OIHW": (region_conv_node_model(pads=(1, 1, 1, 1)), "region", "OIHW"),
        "region-IHWO-B-Relu": (
            region_conv_node_model(
                strides=(2, 1), pads=(1, 0, 1, 0), filter_layout="IHWO", bias=True, activation="Relu"
            ),
            "region",
            "IHWO",
        ),
        "region-dilated-B": (
            region_conv_node_model(pads=(2, 2, 2, 2), dilations=(2, 2), filter_layout="OIHW", bias=True),
            "region",
            "OIHW",
        ),
        "mixture-OIHW-B-Relu": (mixture_node_model(pads=(1, 1, 1, 1), bias=True, activation="Relu"), "mixture", "OIHW"),
        "routed-IHWO": (routed_mixture_node_model(pads=(1, 1, 1, 1), filter_layout="IHWO"), "routed", "IHWO"),
        "routed-no-routing-bias": (
            routed_mixture_node_model(strides=(2, 2), filter_layout="OIHW", routing_bias=False),
            "routed",
            "OIHW",
        ),
    }


def _node_feeds(model: onnx.ModelProto, kind: str, layout: str) -> dict[str, np.ndarray]:
    """Inputs with exact ties, NaN and +-Inf in the guide and an Inf in X."""
    rng = np.random.default_rng(7)
    node = model.graph.node[0]
    attrs = {a.name: list(onnx.helper.get_attribute_value(a)) for a in node.attribute if a.type == a.INTS}
    (sh, sw), pads, (dh, dw) = attrs["strides"], attrs["pads"], attrs.get("dilations", [1, 1])
    n, c, h, w, regions, out, bases, k = 2, 3, 7, 8, 4, 5, 3, 3
    ho, wo = (h + 2 * pads[0] - dh * (k - 1) - 1) // sh + 1, (w + 2 * pads[1] - dw * (k - 1) - 1) // sw + 1
    guide = rng.standard_normal((n, regions, ho, wo)).astype(np.float32)
    guide[0, 1, 0, 0] = guide[0, 2, 0, 0] = 9.0  # a tie: the lower region
    guide[0, 3, 1, 1] = np.nan
    guide[1, :, 1, 2] = np.nan  # all NaN: region 0
    guide[1, 2, 0, 1] = np.inf
    guide[1, :, 2, 2] = -np.inf  # all -Inf: region 0
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    x[1, 0, 3, 3] = np.inf
    feeds = {"X": x, "guide": guide}
    one = (out, c, k, k) if layout == "OIHW" else (c, k, k, out)
    if kind == "region":
        feeds["filters"] = np.abs(rng.standard_normal((n, regions, *one))).astype(np.float32)
    else:
        feeds["basis"] = np.abs(rng.standard_normal((bases, *one))).astype(np.float32)
        if kind == "mixture":
            feeds["coefficients"] = rng.uniform(0, 1, (n, regions, bases)).astype(np.float32)
        else:
            feeds["routing"] = rng.standard_normal((c, regions * bases)).astype(np.float32)
            if "routing_bias" in node.input:
                feeds["routing_bias"] = rng.standard_normal(regions * bases).astype(np.float32)
    if "B" in node.input:
        feeds["B"] = rng.standard_normal(out).astype(np.float32)
    return feeds


@pytest.mark.parametrize("case", list(_node_cases()))
def test_bodies_agree_with_the_kernels_on_ties_nan_and_inf(case):
    from onnx_graphs import ort_session
    from test_portable import _same

    model, kind, layout = _node_cases()[case]
    functions.attach(model)
    feeds = _node_feeds(model, kind, layout)
    kernel = ort_session(model, drconv.get_library_path("onnxruntime")).run(None, feeds)[0]
    assert np.isinf(kernel).any() and np.isfinite(kernel).any()
    body = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    _same(body, kernel, 1e-5)
    _same(ReferenceEvaluator(model).run(None, feeds)[0], kernel, 1e-5)
    _same(ort.InferenceSession(functions.inline(model).SerializeToString()).run(None, feeds)[0], kernel, 1e-5)
