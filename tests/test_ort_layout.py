"""drconv's nodes in ONNX Runtime's blocked NCHWc layout (issue 24): the kernel's blocked X and Y
(attributes x_channel_block, y_channel_block), the rewrite of ONNX Runtime's optimised graph
(rewrite.to_nchwc) and the sessions that run it, against the NCHW node and PyTorch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from onnx_graphs import blocked_mixture_feeds as _feeds
from onnx_graphs import blocked_mixture_node_model as _mixture_model
from onnx_graphs import from_blocked, ort_session, to_blocked

from drconv import contract
from drconv.export import rewrite, to_onnx
from drconv.libraries import plugin_path
from drconv.models import create
from drconv.runtime import ort as drconv_ort

LIBRARY = plugin_path("onnxruntime")
NCHWC = rewrite.NCHWC_DOMAIN


def test_blocked_layout_helpers_are_inverse():
    x = np.arange(2 * 20 * 3 * 5, dtype=np.float32).reshape(2, 20, 3, 5)
    blocked = to_blocked(x, 16)
    assert blocked.shape == (2, 32, 3, 5)
    # channel 17 of pixel (1, 2) of sample 1: block 1, lane 1
    assert blocked.reshape(2, -1)[1, (1 * 15 + 1 * 5 + 2) * 16 + 1] == x[1, 17, 1, 2]
    planar, padding = from_blocked(blocked, 20, 16)
    np.testing.assert_array_equal(planar, x)
    assert not padding.any()


# (N, C_in, C_out, H, W): the zoo's channel counts (C no multiple of the block), batches that
# split by sample, maps that split by channels or rows, and a map too small to split.
BLOCKED_CASES = [(1, 24, 24, 28, 28), (2, 58, 58, 7, 7), (1, 48, 40, 14, 14), (3, 20, 36, 9, 11), (1, 17, 33, 40, 40)]


@pytest.mark.parametrize("block", [16, 8])
@pytest.mark.parametrize(("x_blocked", "y_blocked"), [(True, True), (True, False), (False, True)])
@pytest.mark.parametrize("case", BLOCKED_CASES, ids=lambda c: "n{}c{}k{}_{}x{}".format(*c))
def test_blocked_node_matches_the_nchw_node(case, block, x_blocked, y_blocked):
    n, channels, out, h, w = case
    regions, bases = 8, 8
    feeds = _feeds(n, channels, out, h, w, regions, bases)
    (want,) = ort_session(_mixture_model(0, 0), LIBRARY).run(None, feeds)
    blocked_feeds = dict(feeds, X=to_blocked(feeds["X"], block) if x_blocked else feeds["X"])
    model = _mixture_model(block if x_blocked else 0, block if y_blocked else 0)
    sess = ort_session(model, LIBRARY)
    (got,) = sess.run(None, blocked_feeds)
    if y_blocked:
        assert got.shape == (n, -(-out // block) * block, h, w)
        got, padding = from_blocked(got, out, block)
        assert not padding.any(), "the layout's padding channels must be 0: ONNX Runtime's NCHWc kernels read them"
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_blocked_output_shape_is_inferred_padded():
    model = _mixture_model(16, 16)
    del model.graph.input[:]
    shapes = {"X": [2, 32, 8, 8], "basis": [8, 24, 1, 1, 24], "guide": [2, 8, 8, 8], "B": [24], "routing": [24, 64],
              "routing_bias": [64]}  # fmt: skip
    model.graph.input.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in shapes.items())
    assert ort_session(model, LIBRARY).get_outputs()[0].shape == [2, 32, 8, 8]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"x_channel_block": 5}, "must be 0 \\(NCHW\\), 4, 8 or 16, got 5"),
        ({"filter_layout": "OIHW", "y_channel_block": 16}, "needs filter_layout IHWO"),
        ({"x_channel_block": 16, "pads": [1, 1, 1, 1]}, "needs pads 0"),
        # X blocked in the attribute, not in its shape: 24 channels where 32 are due
        ({"x_channel_block": 16}, "padded to whole blocks of x_channel_block"),
    ],
)
def test_bad_blocked_nodes_give_one_clear_error(extra, message):
    feeds = _feeds(1, 24, 24, 6, 6, 8, 8)
    model = _mixture_model(0, 0, **extra)
    with pytest.raises(Exception, match=message):
        ort_session(model, LIBRARY).run(None, feeds)


# The rewrite, on a graph of ONNX Runtime's shape: ReorderInput -> nchwc Conv -> ReorderOutput around the node.
def _reorder(op: str, x: str, y: str, **attributes) -> onnx.NodeProto:
    return helper.make_node(op, [x], [y], domain=NCHWC, **attributes)


def _optimised_graph(pads=(0, 0, 0, 0), layout="IHWO", y_is_output=False) -> onnx.ModelProto:
    """x -> ReorderInput -> Conv (nchwc) -> ReorderOutput -> a -> region conv -> y -> ReorderInput ->
    Conv (nchwc) -> ReorderOutput -> out, as ONNX Runtime's optimised graph has it."""
    nodes = [
        _reorder("ReorderInput", "x", "t0"),
        helper.make_node("Conv", ["t0", "w0"], ["t1"], domain=NCHWC),
        _reorder("ReorderOutput", "t1", "a", channels=24),
        helper.make_node(
            "RegionConv2d",
            ["a", "filters", "guide"],
            ["y"],
            domain=contract.DOMAIN,
            filter_layout=layout,
            pads=list(pads),
        ),
        _reorder("ReorderInput", "y", "t2"),
        helper.make_node("Conv", ["t2", "w1"], ["t3"], domain=NCHWC),
        _reorder("ReorderOutput", "t3", "out", channels=24),
    ]
    outputs = ["out", "y"] if y_is_output else ["out"]
    graph = helper.make_graph(
        nodes,
        "optimised",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("x", "w0", "w1", "filters", "guide")],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
    )
    opsets = [helper.make_opsetid("", 18), helper.make_opsetid(contract.DOMAIN, 2), helper.make_opsetid(NCHWC, 1)]
    return helper.make_model(graph, opset_imports=opsets)


def _node(model: onnx.ModelProto) -> onnx.NodeProto:
    (node,) = [n for n in model.graph.node if n.domain == contract.DOMAIN]
    return node


def _blocks(node: onnx.NodeProto) -> tuple[int, int]:
    values = {a.name: a.i for a in node.attribute}
    return values.get("x_channel_block", 0), values.get("y_channel_block", 0)


def _topological(model: onnx.ModelProto) -> bool:
    known = {i.name for i in model.graph.input}
    for node in model.graph.node:
        if any(name and name not in known for name in node.input):
            return False
        known.update(node.output)
    return True


def test_rewrite_moves_the_node_into_the_blocked_layout():
    model = _optimised_graph()
    assert rewrite.to_nchwc(model, contract.DOMAIN, contract.REGION_CONV.name, 16) == 1
    node = _node(model)
    assert node.input[0] == "t1" and node.output[0] == "t2" and _blocks(node) == (16, 16)
    ops = [(n.op_type, n.input[0]) for n in model.graph.node]
    assert ("ReorderOutput", "t1") not in ops and ("ReorderInput", "y") not in ops  # the pair around it, gone
    assert ("ReorderInput", "x") in ops and ("ReorderOutput", "t3") in ops  # the graph's own ends stay
    assert contract.domain_version(model) == rewrite.OPSET_V5 and _topological(model)


@pytest.mark.parametrize(
    ("graph", "blocks"),
    [
        ({"pads": (1, 1, 1, 1)}, (0, 16)),  # the kernel pads NCHW only: X stays
        ({"y_is_output": True}, (16, 0)),  # Y is read as NCHW by the caller: it stays
    ],
)
def test_rewrite_keeps_what_must_stay_nchw(graph, blocks):
    model = _optimised_graph(**graph)
    assert rewrite.to_nchwc(model, contract.DOMAIN, contract.REGION_CONV.name, 16) == 1
    assert _blocks(_node(model)) == blocks and _topological(model)


def test_rewrite_leaves_oihw_nodes_and_plain_graphs_alone():
    model = _optimised_graph(layout="OIHW")
    before = model.SerializeToString()
    assert rewrite.to_nchwc(model, contract.DOMAIN, contract.REGION_CONV.name, 16) == 0
    assert model.SerializeToString() == before


def test_nchwc_block_is_mlas_rule():
    """MLAS blocks 16 channels with AVX-512, 8 with AVX2; the probe reads what ONNX Runtime does."""
    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    expected = 16 if "avx512f" in flags else 8 if "avx2" in flags else 0
    assert drconv_ort.nchwc_block() == expected


# The paper's models, exported, in a session that rewrites ONNX Runtime's optimised graph.
@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("layout")
    paths = {}
    for name in ("drconv-shufflenetv2-0.5x", "drconv-shufflenetv2-1.0x"):
        torch.manual_seed(0)
        net = create(name).eval()
        paths[name] = (net, to_onnx(net, torch.randn(1, 3, 64, 64), tmp / f"{name}.onnx"))
    return paths


@pytest.mark.parametrize("name", ["drconv-shufflenetv2-0.5x", "drconv-shufflenetv2-1.0x"])
@pytest.mark.parametrize("batch", [1, 3])
def test_zoo_in_the_blocked_layout_matches_nchw_and_pytorch(exported, name, batch):
    net, path = exported[name]
    x = torch.randn(batch, 3, 64, 64, generator=torch.Generator().manual_seed(batch))
    with torch.no_grad():
        want = net(x).numpy()
    feed = {"input": x.numpy()}
    (planar,) = drconv_ort.session(path, threads=2, blocked_layout=False).run(None, feed)
    (blocked,) = drconv_ort.session(path, threads=2).run(None, feed)
    np.testing.assert_allclose(blocked, planar, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(blocked, want, rtol=1e-3, atol=1e-4)
    block = drconv_ort.nchwc_block()
    if block:  # where ONNX Runtime has an NCHWc layout, the nodes moved into it
        optimised = onnx.load_from_string(drconv_ort.in_blocked_layout(str(path), block))
        moved = [n for n in optimised.graph.node if n.domain == contract.DOMAIN and any(_blocks(n))]
        assert len(moved) >= 20, f"only {len(moved)} of 32 region convs read or write the blocked layout"


def test_profile_command_compares_a_model_with_its_baseline(exported, tmp_path):
    from typer.testing import CliRunner

    from drconv.cli import app

    _, model = exported["drconv-shufflenetv2-0.5x"]
    twin = to_onnx(create("shufflenetv2-0.5x").eval(), torch.randn(1, 3, 64, 64), tmp_path / "twin.onnx")
    for runtime, node_type in (("ort", contract.MIXTURE.name), ("openvino", None)):
        out = tmp_path / f"{runtime}.json"
        args = ["profile", str(model), "--baseline", str(twin), "--runtime", runtime, "--input-shape", "1,3,64,64",
                "--runs", "3", "--threads", "1", "--json", str(out)]  # fmt: skip
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        document = json.loads(out.read_text())
        ops = {row["op"]: row for row in document["ops"]}
        for row in document["ops"]:
            assert row["diff_us"] == pytest.approx(row["us"] - row["baseline_us"], abs=0.02)
        assert document["total_us"] == pytest.approx(sum(r["us"] for r in document["ops"]), abs=0.1)
        if node_type is not None:  # ONNX Runtime names our op; 32 nodes, none in the plain twin
            assert ops[node_type]["nodes"] == 32 and ops[node_type]["baseline_nodes"] == 0
            assert ops[node_type]["us"] > 0
        assert "total" in result.output and "difference" in result.output
