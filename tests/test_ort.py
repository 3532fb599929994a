"""The ONNX Runtime custom-op library: parity with PyTorch, bad input, fuzzing, a fresh process."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx_graphs import as_numpy, ort_session, region_conv_node_model

from drconv import DRConv2d, region_conv
from drconv import libraries as drconv_libraries
from drconv.errors import DrconvError
from drconv.export import to_onnx
from drconv.export.rewrite import TO_IHWO
from drconv.libraries import plugin_path
from drconv.models import create
from drconv.runtime.ort import session

LIBRARY = plugin_path("onnxruntime")
ATOL, RTOL = 1e-4, 1e-4


def test_library_is_built():
    assert LIBRARY is not None, "libdrconv_onnxruntime.so not found: run `make plugins`"


# (C_in, C_out, R, k, stride, dilation, H, W): R 1-8, k 1/3/5, stride 1-2, dilation 1-2, odd sizes.
LAYERS = [
    (3, 4, 1, 3, 1, 1, 9, 11),
    (4, 4, 2, 1, 1, 1, 8, 8),
    (4, 6, 2, 3, 1, 1, 15, 13),
    (5, 3, 3, 3, 2, 1, 17, 9),
    (6, 6, 4, 5, 1, 1, 13, 13),
    (4, 8, 4, 5, 2, 1, 19, 21),
    (3, 5, 8, 3, 1, 2, 16, 18),
    (8, 8, 8, 3, 2, 2, 23, 17),
    (2, 2, 5, 1, 2, 1, 7, 9),
    (7, 4, 6, 3, 1, 1, 12, 31),
    (4, 4, 8, 5, 1, 2, 21, 15),
    (6, 3, 2, 5, 2, 2, 25, 25),
    (16, 16, 8, 3, 1, 1, 14, 14),
    (3, 7, 7, 3, 2, 1, 11, 10),
    (5, 5, 3, 1, 1, 1, 5, 33),
    (4, 2, 1, 5, 1, 1, 10, 10),
    (2, 9, 4, 3, 1, 2, 9, 13),
    (8, 4, 8, 1, 2, 1, 16, 12),
    (3, 3, 5, 5, 2, 1, 27, 19),
    (10, 6, 6, 3, 1, 1, 20, 7),
    (4, 4, 2, 3, 2, 2, 13, 29),
    (6, 6, 8, 5, 1, 1, 17, 17),
]


@pytest.mark.parametrize("config", LAYERS, ids=lambda c: "c{}k{}R{}k{}s{}d{}_{}x{}".format(*c))
def test_layer_parity_custom_portable_torch(config, tmp_path):
    c_in, c_out, regions, k, stride, dilation, h, w = config
    torch.manual_seed(hash(config) % 1000)
    layer = DRConv2d(c_in, c_out, k, regions, stride=stride, dilation=dilation).eval()
    sample = torch.randn(2, c_in, h, w)
    custom = session(to_onnx(layer, sample, tmp_path / "c.onnx"), threads=2)
    portable = session(to_onnx(layer, sample, tmp_path / "p.onnx", mode="portable"), threads=2)
    for batch in (1, 3):
        x = torch.randn(batch, c_in, h, w)
        with torch.no_grad():
            expected = layer(x).numpy()
        (got_custom,) = custom.run(None, {"input": x.numpy()})
        (got_portable,) = portable.run(None, {"input": x.numpy()})
        np.testing.assert_allclose(got_custom, expected, atol=ATOL, rtol=RTOL)
        np.testing.assert_allclose(got_portable, expected, atol=ATOL, rtol=RTOL)


def test_drconv_tiny_parity(tmp_path):
    model = create("drconv-tiny").eval()
    sample = torch.randn(1, 3, 64, 64)
    custom = session(to_onnx(model, sample, tmp_path / "c.onnx"))
    portable = session(to_onnx(model, sample, tmp_path / "p.onnx", mode="portable"))
    for shape in ((1, 3, 64, 64), (3, 3, 71, 45)):
        x = torch.randn(shape)
        with torch.no_grad():
            expected = model(x).numpy()
        for sess in (custom, portable):
            (got,) = sess.run(None, {"input": x.numpy()})
            np.testing.assert_allclose(got, expected, atol=1e-3, rtol=1e-4)


def test_node_matches_op_with_ties_and_nan():
    x = torch.randn(2, 3, 6, 7)
    filters = torch.randn(2, 4, 5, 3, 3, 3)
    guide = torch.randn(2, 4, 6, 7)
    guide[0, :, 0, :] = 1.0  # ties: the first region wins
    guide[1, 2, 3, 3] = float("nan")  # NaN counts as the maximum
    guide[1, 1, 4, :] = float("nan")
    sess = ort_session(region_conv_node_model(pads=(1, 1, 1, 1)), LIBRARY)
    (got,) = sess.run(None, dict(zip(("X", "filters", "guide"), as_numpy(x, filters, guide), strict=True)))
    np.testing.assert_allclose(got, region_conv(x, filters, guide).numpy(), atol=1e-4, rtol=1e-4)


def test_missing_attributes_take_the_contract_defaults():
    from onnx import TensorProto, helper

    node = helper.make_node("RegionConv2d", ["X", "filters", "guide"], ["Y"], domain="drconv")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("X", "filters", "guide")],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("drconv", 1)])
    x, filters, guide = torch.randn(1, 2, 5, 5), torch.randn(1, 3, 2, 2, 3, 3), torch.randn(1, 3, 3, 3)
    feeds = dict(zip(("X", "filters", "guide"), as_numpy(x, filters, guide), strict=True))
    (got,) = ort_session(model, LIBRARY).run(None, feeds)
    expected = region_conv(x, filters, guide, stride=1, padding=0, dilation=1)
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    ("attrs", "message"),
    [
        ({"strides": (0, 1)}, "strides must be >= 1"),
        ({"dilations": (1, 0)}, "dilations must be >= 1"),
        ({"pads": (-1, 0, -1, 0)}, "pads must be >= 0"),
        ({"pads": (1, 1)}, "pads must have 4 values"),
        ({"strides": (1, 1, 1)}, "strides must have 2 values"),
        ({"pads": (1, 0, 2, 0)}, "symmetric"),
        ({"filter_layout": "XYZW"}, 'filter_layout must be "OIHW" or "IHWO"'),
        ({"filter_layout": [1, 2]}, "filter_layout must be a string"),
        ({"strides": (1.0, 1.0)}, "strides must be ints"),  # FLOATS: an error, not the default
        ({"dilations": (2.0, 2.0)}, "dilations must be ints"),
        ({"activation": "Tanh"}, 'activation must be "" or "Relu"'),
    ],
)
def test_invalid_attributes_fail_at_session_creation(attrs, message):
    with pytest.raises(Exception, match=message):
        ort_session(region_conv_node_model(**attrs), LIBRARY)


@pytest.mark.parametrize("layout", ["OIHW", "IHWO"])
def test_bias_and_relu_are_applied_after_the_conv(layout):
    torch.manual_seed(3)
    model = region_conv_node_model(pads=(1, 1, 1, 1), filter_layout=layout, bias=True, activation="Relu")
    x, filters, guide = torch.randn(2, 5, 9, 7), torch.randn(2, 4, 19, 5, 3, 3), torch.randn(2, 4, 9, 7)
    bias = torch.randn(19)
    given = filters.permute(TO_IHWO) if layout == "IHWO" else filters
    feeds = dict(zip(("X", "filters", "guide", "B"), as_numpy(x, given, guide, bias), strict=True))
    (got,) = ort_session(model, LIBRARY).run(None, feeds)
    expected = torch.relu(region_conv(x, filters, guide, padding=1) + bias.view(1, -1, 1, 1))
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-4, rtol=1e-4)
    assert (got == 0).mean() > 0.2  # the ReLU did clamp
    feeds["B"] = np.zeros(18, np.float32)
    with pytest.raises(Exception, match=r"input B must be 1-D \[C_out\] = \[19\]"):
        ort_session(model, LIBRARY).run(None, feeds)


# ---- a fresh process: loading, and mismatched inputs with no declared shapes --------------

CRASH_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    sys.path.insert(0, {tests!r})
    from onnx_graphs import ort_session, region_conv_node_model

    sess = ort_session(region_conv_node_model(pads=(1, 1, 1, 1)), {library!r})
    f = np.float32
    cases = {{
        "batch": (np.ones((2, 3, 8, 8), f), np.ones((1, 2, 4, 3, 3, 3), f), np.ones((2, 2, 8, 8), f)),
        "channels": (np.ones((1, 3, 8, 8), f), np.ones((1, 2, 4, 5, 3, 3), f), np.ones((1, 2, 8, 8), f)),
        "regions": (np.ones((1, 3, 8, 8), f), np.ones((1, 2, 4, 3, 3, 3), f), np.ones((1, 5, 8, 8), f)),
        "guide size": (np.ones((1, 3, 8, 8), f), np.ones((1, 2, 4, 3, 3, 3), f), np.ones((1, 2, 9, 8), f)),
        "rank": (np.ones((3, 8, 8), f), np.ones((1, 2, 4, 3, 3, 3), f), np.ones((1, 2, 8, 8), f)),
        "filters rank": (np.ones((1, 3, 8, 8), f), np.ones((2, 4, 3, 3, 3), f), np.ones((1, 2, 8, 8), f)),
        "empty": (np.ones((0, 3, 8, 8), f), np.ones((0, 2, 4, 3, 3, 3), f), np.ones((0, 2, 8, 8), f)),
        "too small": (np.ones((1, 3, 1, 1), f), np.ones((1, 2, 4, 3, 7, 7), f), np.ones((1, 2, 1, 1), f)),
    }}
    for name, (x, w, g) in cases.items():
        try:
            sess.run(None, {{"X": x, "filters": w, "guide": g}})
        except Exception as exc:
            print(name, "->", str(exc).splitlines()[-1])
        else:
            print(name, "-> NO ERROR")
    """
)


def test_mismatched_inputs_raise_in_a_fresh_process(tmp_path):
    from pathlib import Path

    script = CRASH_SCRIPT.format(tests=str(Path(__file__).parent), library=str(LIBRARY))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"the process died (code {result.returncode}): {result.stderr[-2000:]}"
    lines = dict(line.split(" -> ", 1) for line in result.stdout.strip().splitlines())
    assert len(lines) == 8, result.stdout
    assert "NO ERROR" not in result.stdout
    assert "same batch size" in lines["batch"] and "[2, 3, 8, 8]" in lines["batch"]
    assert "C_in" in lines["channels"]
    assert "number of regions" in lines["regions"]
    assert "guide must be 8x8" in lines["guide size"]
    assert "X must be 4-D" in lines["rank"]
    assert "filters must be 6-D" in lines["filters rank"]
    assert "empty dimensions" in lines["empty"]
    assert "empty output" in lines["too small"]


# ---- property-based fuzzing against the PyTorch op ----------------------------------------

_SESSIONS: dict = {}


def _cached_session(stride, pad, dilation, layout):
    key = (stride, pad, dilation, layout)
    if key not in _SESSIONS:
        model = region_conv_node_model(strides=stride, pads=(*pad, *pad), dilations=dilation, filter_layout=layout)
        _SESSIONS[key] = ort_session(model, LIBRARY, threads=2)
    return _SESSIONS[key]


@st.composite
def valid_case(draw):
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    h = draw(st.integers(max(1, dh * (kh - 1) + 1 - 2 * ph), 20))
    w = draw(st.integers(max(1, dw * (kw - 1) + 1 - 2 * pw), 20))
    n, c, r = draw(st.integers(1, 3)), draw(st.integers(1, 6)), draw(st.integers(1, 8))
    k = draw(st.sampled_from([1, 2, 3, 5, 6, 17, 24]))  # C_out past one vector, and not a multiple of 16
    layout = draw(st.sampled_from([None, "OIHW", "IHWO"]))
    return n, c, k, r, h, w, (kh, kw), (sh, sw), (ph, pw), (dh, dw), layout, draw(st.integers(0, 2**31 - 1))


@settings(max_examples=260, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_case())
def test_fuzz_valid_shapes_match_the_op(case):
    n, c, k, r, h, w, kernel, stride, pad, dilation, layout, seed = case
    g = torch.Generator().manual_seed(seed)
    ho = (h + 2 * pad[0] - dilation[0] * (kernel[0] - 1) - 1) // stride[0] + 1
    wo = (w + 2 * pad[1] - dilation[1] * (kernel[1] - 1) - 1) // stride[1] + 1
    x = torch.randn(n, c, h, w, generator=g)
    filters = torch.randn(n, r, k, c, *kernel, generator=g)
    guide = torch.randn(n, r, ho, wo, generator=g)
    expected = region_conv(x, filters, guide, stride, pad, dilation).numpy()
    given_filters = filters.permute(TO_IHWO) if layout == "IHWO" else filters
    (got,) = _cached_session(stride, pad, dilation, layout).run(
        None, dict(zip(("X", "filters", "guide"), as_numpy(x, given_filters, guide), strict=True))
    )
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)


@st.composite
def invalid_case(draw):
    """A valid case with one thing broken."""
    n, c, k, r, h, w = 2, 3, 4, 3, 9, 9
    shapes = {"X": [n, c, h, w], "filters": [n, r, k, c, 3, 3], "guide": [n, r, h, w]}
    name = draw(st.sampled_from(sorted(shapes)))
    axis = draw(st.integers(0, len(shapes[name]) - 1))
    how = draw(st.sampled_from(["resize", "zero", "drop_axis", "add_axis"]))
    shape = list(shapes[name])
    if how == "resize":
        shape[axis] += draw(st.integers(1, 3))
    elif how == "zero":
        shape[axis] = 0
    elif how == "drop_axis":
        del shape[axis]
    else:
        shape.insert(axis, 1)
    if name == "filters" and how == "resize" and axis in (2, 4, 5):
        # C_out and the kernel size are free; only a kernel too big for X is an error.
        shape[axis] = 20 if axis in (4, 5) else shape[axis]
        if axis == 2:
            shape[0] += 1
    shapes[name] = shape
    return shapes


@settings(max_examples=120, deadline=None)
@given(invalid_case())
def test_fuzz_invalid_shapes_raise(shapes):
    feeds = {name: np.zeros(shape, np.float32) for name, shape in shapes.items()}
    with pytest.raises(Exception, match="RegionConv2d"):
        _cached_session((1, 1), (1, 1), (1, 1), None).run(None, feeds)


# ---- the Python session helper ------------------------------------------------------------


def test_session_without_library_says_how_to_build(tmp_path, monkeypatch):
    path = to_onnx(DRConv2d(2, 2, 3, 2).eval(), torch.randn(2, 2, 8, 8), tmp_path / "c.onnx")
    monkeypatch.setattr(drconv_libraries, "plugin_path", lambda backend: None)
    with pytest.raises(DrconvError, match="make plugins"):
        session(path)


def test_session_portable_needs_no_library(tmp_path, monkeypatch):
    path = to_onnx(DRConv2d(2, 2, 3, 2).eval(), torch.randn(2, 2, 8, 8), tmp_path / "p.onnx", mode="portable")
    monkeypatch.setattr(drconv_libraries, "plugin_path", lambda backend: None)
    (y,) = session(path).run(None, {"input": np.ones((1, 2, 8, 8), np.float32)})
    assert y.shape == (1, 2, 8, 8)


def test_session_rejects_unknown_provider(tmp_path):
    path = to_onnx(DRConv2d(2, 2, 3, 2).eval(), torch.randn(2, 2, 8, 8), tmp_path / "c.onnx")
    with pytest.raises(DrconvError, match="NoSuchExecutionProvider is not in this onnxruntime"):
        session(path, providers=["NoSuchExecutionProvider"])


@pytest.mark.parametrize("layout", ["OIHW", "IHWO"])
def test_output_shape_is_inferred_without_value_info(layout):
    """The node infers Y [N, C_out, H_out, W_out] itself: batch from X, C_out from the filters,
    H_out, W_out from the guide, symbolic names kept (the graph declares no output shape)."""
    filters = ["N", 3, 7, 5, 3, 3] if layout == "OIHW" else ["N", 3, 5, 3, 3, 7]
    shapes = (["N", 5, "H", "W"], filters, ["N", 3, "Ho", 6])
    model = region_conv_node_model(pads=(1, 1, 1, 1), declare_shapes=shapes, filter_layout=layout)
    assert not model.graph.value_info and model.graph.output[0].type.tensor_type.shape.dim == []
    output = ort_session(model, LIBRARY).get_outputs()[0]
    assert output.shape == ["N", 7, "Ho", 6]


def test_output_shape_of_a_mixture_is_inferred():
    from onnx import TensorProto, helper
    from onnx_graphs import mixture_node_model

    model = mixture_node_model(filter_layout="IHWO")
    shapes = {"X": [2, 5, 8, 8], "coefficients": [2, 3, 4], "basis": [4, 5, 1, 1, 9], "guide": [2, 3, 8, 8]}
    del model.graph.input[:]
    model.graph.input.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in shapes.items())
    assert ort_session(model, LIBRARY).get_outputs()[0].shape == [2, 9, 8, 8]


@pytest.mark.parametrize(
    ("attrs", "x_hw", "k", "message"),
    [
        ({"dilations": (2**62, 1)}, (8, 8), 3, "overflow the output size arithmetic"),
        ({"pads": (2**62, 0, 2**62, 0)}, (8, 8), 3, "overflow the output size arithmetic"),
        # floor, not C++'s truncation: a 3x3 kernel does not fit a 2x2 input at stride 2
        ({"strides": (2, 2)}, (2, 2), 3, "empty output"),
    ],
)
def test_node_sizes_never_wrap_around(attrs, x_hw, k, message):
    model = region_conv_node_model(**{"pads": (0, 0, 0, 0), **attrs})
    sess = ort_session(model, LIBRARY)
    f = np.float32
    feeds = {
        "X": np.ones((1, 3, *x_hw), f),
        "filters": np.ones((1, 2, 4, 3, k, k), f),
        "guide": np.ones((1, 2, 1, 1), f),
    }
    with pytest.raises(Exception, match=message):
        sess.run(None, feeds)
