"""Tiny ONNX graphs around one RegionConv2d node, built directly (no exporter) for the ORT tests."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper


def region_conv_node_model(
    strides=(1, 1),
    pads=(0, 0, 0, 0),
    dilations=(1, 1),
    declare_shapes=None,
    filter_layout=None,
    bias=False,
    activation=None,
):
    """X, filters, guide[, B] -> Y through one drconv::RegionConv2d; shapes undeclared unless given.

    filter_layout, activation: the attributes' values (any type, to test refusals), absent
    when None; bias: a fourth input B. A graph with any of them imports drconv version 2.
    """
    names = ("X", "filters", "guide", "B") if bias else ("X", "filters", "guide")
    shapes = declare_shapes or (None,) * len(names)
    extra = {k: v for k, v in (("filter_layout", filter_layout), ("activation", activation)) if v is not None}
    return _one_node_model("RegionConv2d", names, shapes, 2 if extra or bias else 1, strides, pads, dilations, extra)


def _one_node_model(op_type, names, shapes, version, strides, pads, dilations, extra):
    """names -> Y through one drconv node of `op_type`, importing drconv `version`."""
    node = helper.make_node(
        op_type,
        list(names),
        ["Y"],
        domain="drconv",
        strides=list(strides),
        pads=list(pads),
        dilations=list(dilations),
        plugin_version="1",
        **extra,
    )
    graph = helper.make_graph(
        [node],
        op_type,
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in zip(names, shapes, strict=True)],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("drconv", version)])


def ort_session(model, library, threads=2):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.register_custom_ops_library(str(library))
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def as_numpy(*tensors):
    return [np.ascontiguousarray(t.detach().numpy()) for t in tensors]


def mixture_node_model(strides=(1, 1), pads=(0, 0, 0, 0), filter_layout="OIHW", bias=False, activation=None):
    """X, coefficients, basis, guide[, B] -> Y through one drconv::MixtureRegionConv2d (drconv version 3)."""
    names = ("X", "coefficients", "basis", "guide", "B") if bias else ("X", "coefficients", "basis", "guide")
    extra = {"filter_layout": filter_layout, **({"activation": activation} if activation is not None else {})}
    return _one_node_model("MixtureRegionConv2d", names, (None,) * len(names), 3, strides, pads, (1, 1), extra)


def routed_mixture_node_model(strides=(1, 1), pads=(0, 0, 0, 0), filter_layout="OIHW", routing_bias=True):
    """X, basis, guide, routing[, routing_bias] -> Y through one routed drconv::MixtureRegionConv2d
    (drconv version 4): no coefficients input, no B."""
    names = ["X", "", "basis", "guide", "", "routing"] + (["routing_bias"] if routing_bias else [])
    node = _one_node_model(
        "MixtureRegionConv2d", names, (None,) * len(names), 4, strides, pads, (1, 1), {"filter_layout": filter_layout}
    )
    graph = node.graph
    kept = [i for i in graph.input if i.name]
    del graph.input[:]
    graph.input.extend(kept)
    return node


def to_blocked(x: np.ndarray, block: int) -> np.ndarray:
    """[N, C, H, W] -> ONNX Runtime's NCHWc as a [N, ceil(C / B) * B, H, W] buffer, padding zero."""
    n, c, h, w = x.shape
    padded = -(-c // block) * block
    out = np.zeros((n, padded, h, w), x.dtype)
    out[:, :c] = x
    # channel c of pixel p at ((c // B) * H * W + p) * B + c % B
    return np.ascontiguousarray(out.reshape(n, padded // block, block, h * w).transpose(0, 1, 3, 2)).reshape(
        n, padded, h, w
    )


def from_blocked(y: np.ndarray, channels: int, block: int) -> tuple[np.ndarray, np.ndarray]:
    """The inverse of to_blocked: ([N, C, H, W], the padding channels)."""
    n, padded, h, w = y.shape
    planar = y.reshape(n, padded // block, h * w, block).transpose(0, 1, 3, 2).reshape(n, padded, h, w)
    return planar[:, :channels], planar[:, channels:]


def blocked_mixture_node_model(x_block: int, y_block: int, **extra):
    """One routed MixtureRegionConv2d (IHWO, bias, ReLU) with its X and Y blocked as asked."""
    names = ["X", "", "basis", "guide", "B", "routing", "routing_bias"]
    attributes = {"filter_layout": "IHWO", "activation": "Relu", **extra}
    if x_block:
        attributes["x_channel_block"] = x_block
    if y_block:
        attributes["y_channel_block"] = y_block
    node = helper.make_node("MixtureRegionConv2d", names, ["Y"], domain="drconv", **attributes)
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names if n]
    graph = helper.make_graph([node], "blocked", inputs, [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)])
    version = 5 if x_block or y_block else 4
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("drconv", version)])


def blocked_mixture_feeds(n, channels, out, h, w, regions, bases, seed=0):
    """Inputs of blocked_mixture_node_model, X in NCHW."""
    rng = np.random.default_rng(seed)

    def draw(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    return {
        "X": draw(n, channels, h, w),
        "basis": draw(bases, channels, 1, 1, out) / np.float32(channels),
        "guide": draw(n, regions, h, w),
        "B": draw(out),
        "routing": draw(channels, regions * bases),
        "routing_bias": draw(regions * bases),
    }
