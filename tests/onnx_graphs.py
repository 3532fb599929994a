"""Tiny ONNX graphs around one RegionConv2d node, built directly (no exporter) for the ORT tests."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper


def region_conv_node_model(
    strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1), declare_shapes=None, filter_layout=None
):
    """X, filters, guide -> Y through one drconv::RegionConv2d; shapes undeclared unless given.

    filter_layout: the attribute's value (any type, to test refusals), absent when None; a
    graph with it imports drconv version 2.
    """
    names = ("X", "filters", "guide")
    shapes = declare_shapes or (None, None, None)
    extra = {} if filter_layout is None else {"filter_layout": filter_layout}
    node = helper.make_node(
        "RegionConv2d",
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
        "region_conv",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in zip(names, shapes, strict=True)],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
    )
    version = 1 if filter_layout is None else 2
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("drconv", version)])


def ort_session(model, library, threads=2):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.register_custom_ops_library(str(library))
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def as_numpy(*tensors):
    return [np.ascontiguousarray(t.detach().numpy()) for t in tensors]
