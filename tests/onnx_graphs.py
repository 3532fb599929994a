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
