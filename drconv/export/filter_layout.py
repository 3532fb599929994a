"""The RegionConv2d node's `filter_layout` (docs/region_conv_op.md): OIHW or IHWO, changed on a graph.

OIHW filters [N, R, C_out, C_in, kh, kw] are PyTorch's layout; IHWO [N, R, C_in, kh, kw,
C_out] puts the output channel innermost, which the CPU kernel reads as it is (packing
OIHW filters cost more than the convolution at the zoo's deep 1x1 layers).

`to_ihwo` gets IHWO for free where the filters come straight from a constant weight and
a Reshape (the mixture's Gemm of MixtureDRConv2d; the grouped 1x1 Conv of DRConv2d's
generator when the kernel is 1x1, its taps being the Conv's spatial axes otherwise): it
permutes that weight's rows, so the graph computes the filters in the new order and gains
no node. `to_oihw` goes back with a Transpose before each IHWO
node, for runtimes whose kernels read OIHW (TensorRT, the CUDA op).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

__all__ = [
    "FILTER_LAYOUTS",
    "IHWO",
    "OIHW",
    "OPSET_WITH_LAYOUT",
    "TO_IHWO",
    "TO_OIHW",
    "layouts",
    "set_layout",
    "set_opset",
    "to_ihwo",
    "to_oihw",
]

OIHW, IHWO = "OIHW", "IHWO"
FILTER_LAYOUTS = (IHWO, OIHW)
# The drconv domain version that added filter_layout: a library that knows only version 1
# refuses such a graph instead of misreading its filters.
OPSET_WITH_LAYOUT = 2
_ATTRIBUTE = "filter_layout"
TO_OIHW = [0, 1, 5, 2, 3, 4]  # [N, R, C_in, kh, kw, C_out] -> [N, R, C_out, C_in, kh, kw]
TO_IHWO = [0, 1, 3, 4, 5, 2]  # its inverse


def _is_region_conv(node: onnx.NodeProto, domain: str, op_type: str) -> bool:
    return node.domain == domain and node.op_type == op_type


def _layout(node: onnx.NodeProto) -> str:
    for attribute in node.attribute:
        if attribute.name == _ATTRIBUTE:
            return attribute.s.decode()
    return OIHW


def set_layout(node: onnx.NodeProto, layout: str) -> None:
    """Set a region-conv node's filter_layout attribute (its filters must already be so)."""
    for attribute in list(node.attribute):
        if attribute.name == _ATTRIBUTE:
            node.attribute.remove(attribute)
    node.attribute.append(helper.make_attribute(_ATTRIBUTE, layout))


def layouts(proto: onnx.ModelProto, domain: str, op_type: str) -> list[str]:
    """The filter_layout of every region-conv node, in graph order."""
    return [_layout(n) for n in proto.graph.node if _is_region_conv(n, domain, op_type)]


class _Graph:
    """Producers, consumers and constants of one graph, for the rewrites below."""

    def __init__(self, proto: onnx.ModelProto) -> None:
        self.graph = proto.graph
        self.producer = {out: n for n in self.graph.node for out in n.output}
        self.initializer = {i.name: i for i in self.graph.initializer}
        self.uses: dict[str, int] = {}
        for node in self.graph.node:
            for name in node.input:
                self.uses[name] = self.uses.get(name, 0) + 1
        for output in self.graph.output:
            self.uses[output.name] = self.uses.get(output.name, 0) + 1

    def constant(self, name: str) -> np.ndarray | None:
        if name in self.initializer:
            return numpy_helper.to_array(self.initializer[name])
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            return numpy_helper.to_array(node.attribute[0].t)
        return None

    def replace_initializer(self, node: onnx.NodeProto, index: int, value: np.ndarray) -> None:
        """Give node.input[index] the value `value`, in place if nothing else reads it."""
        name = node.input[index]
        if name in self.initializer and self.uses.get(name, 0) == 1:
            self.initializer[name].CopyFrom(numpy_helper.from_array(value, name))
            return
        fresh = f"{name}.ihwo"
        while fresh in self.initializer or fresh in self.producer:
            fresh += "_"
        tensor = numpy_helper.from_array(value, fresh)
        self.graph.initializer.append(tensor)
        self.initializer[fresh] = tensor
        self.uses[name] -= 1
        self.uses[fresh] = 1
        node.input[index] = fresh

    def drop_value_info(self, name: str) -> None:
        for value in list(self.graph.value_info):
            if value.name == name:
                self.graph.value_info.remove(value)


def _permute_rows(rows: np.ndarray, groups: int, c_out: int, patch: int) -> np.ndarray:
    """Rows (groups * c_out * patch, ...) in order (g, o, k) -> (g, k, o)."""
    rest = rows.shape[1:]
    return rows.reshape(groups, c_out, patch, *rest).swapaxes(1, 2).reshape(rows.shape)


def _generator(g: _Graph, node: onnx.NodeProto) -> tuple[onnx.NodeProto, onnx.NodeProto, np.ndarray] | None:
    """(Reshape, weight producer, target shape) when node's filters come from a constant weight."""
    reshape = g.producer.get(node.input[1])
    if reshape is None or reshape.op_type != "Reshape" or g.uses.get(node.input[1], 0) != 1:
        return None
    target = g.constant(reshape.input[1])
    source = g.producer.get(reshape.input[0])
    if target is None or target.shape != (6,) or source is None or g.uses.get(reshape.input[0], 0) != 1:
        return None
    return reshape, source, target


def _convert(g: _Graph, node: onnx.NodeProto) -> bool:
    found = _generator(g, node)
    if found is None:
        return False
    reshape, source, target = found
    regions, c_out, c_in, kh, kw = (int(v) for v in target[1:])
    if min(regions, c_out, c_in, kh, kw) < 1:
        return False
    patch = c_in * kh * kw
    attrs = {a.name: helper.get_attribute_value(a) for a in source.attribute}
    if source.op_type == "Gemm" and attrs.get("transA", 0) == 0:
        # [N*R, M] x B -> [N*R, C_out*patch]: B's output axis is its rows (transB) or columns.
        weight = g.constant(source.input[1])
        trans_b = attrs.get("transB", 0) == 1
        if weight is None or weight.ndim != 2 or weight.shape[0 if trans_b else 1] != c_out * patch:
            return False
        new = _permute_rows(weight, 1, c_out, patch) if trans_b else _permute_rows(weight.T, 1, c_out, patch).T
        updates = [(1, np.ascontiguousarray(new))]
        if len(source.input) > 2 and source.input[2]:
            bias = g.constant(source.input[2])
            if bias is None or bias.shape != (c_out * patch,):
                return False
            updates.append((2, _permute_rows(bias, 1, c_out, patch)))
    elif source.op_type == "Conv" and int(attrs.get("group", 1)) == regions and kh * kw == 1:
        # The grouped 1x1 conv to R * C_out * C_in channels, group r making region r's filter.
        weight = g.constant(source.input[1])
        if weight is None or weight.ndim != 4 or weight.shape[0] != regions * c_out * patch:
            return False
        updates = [(1, _permute_rows(weight, regions, c_out, patch))]
        if len(source.input) > 2 and source.input[2]:
            bias = g.constant(source.input[2])
            if bias is None or bias.shape != (regions * c_out * patch,):
                return False
            updates.append((2, _permute_rows(bias, regions, c_out, patch)))
    else:
        return False
    for index, value in updates:
        g.replace_initializer(source, index, value)
    shape = np.array([target[0], regions, c_in, kh, kw, c_out], dtype=np.int64)
    g.replace_initializer(reshape, 1, shape)
    g.drop_value_info(reshape.output[0])
    set_layout(node, IHWO)
    return True


def set_opset(proto: onnx.ModelProto, domain: str, version: int) -> None:
    """Import `domain` at `version`."""
    for opset in proto.opset_import:
        if opset.domain == domain:
            opset.version = version
            return
    proto.opset_import.append(helper.make_opsetid(domain, version))


def to_ihwo(proto: onnx.ModelProto, domain: str, op_type: str) -> int:
    """Switch every region-conv node whose filters come from a constant weight to IHWO, in place.

    Returns how many were switched; the others keep OIHW (their filters are computed some
    other way, and a Transpose would cost what IHWO saves).
    """
    g = _Graph(proto)
    switched = sum(
        _convert(g, node)
        for node in list(proto.graph.node)
        if _is_region_conv(node, domain, op_type) and _layout(node) == OIHW
    )
    if switched:
        set_opset(proto, domain, OPSET_WITH_LAYOUT)
    return switched


def to_oihw(proto: onnx.ModelProto, domain: str, op_type: str) -> int:
    """Put a Transpose to OIHW before every IHWO region-conv node, in place; returns how many.

    For runtimes whose kernels read OIHW filters only (the TensorRT plugin, the CUDA op). The
    graph then needs only version 1 of the domain.
    """
    changed = 0
    nodes = list(proto.graph.node)
    del proto.graph.node[:]
    for node in nodes:
        if _is_region_conv(node, domain, op_type) and _layout(node) == IHWO:
            transposed = f"{node.input[1]}.oihw"
            proto.graph.node.append(
                helper.make_node("Transpose", [node.input[1]], [transposed], perm=TO_OIHW, name=f"{node.name}.oihw")
            )
            node.input[1] = transposed
            set_layout(node, OIHW)
            changed += 1
        proto.graph.node.append(node)
    if changed and IHWO not in layouts(proto, domain, op_type):
        set_opset(proto, domain, 1)
    return changed
