"""Rewrites of the RegionConv2d node in an ONNX graph, between the node's two versions.

Version 2 of the node (docs/region_conv_op.md) adds three things the CPU kernel uses:

- `filter_layout` IHWO: filters [N, R, C_in, kh, kw, C_out], output channel innermost,
  the order the kernel reads, so it does not pack them (packing OIHW filters cost more
  than the convolution at the zoo's deep 1x1 layers).
- an optional bias input B [C_out] and `activation` "Relu", applied as the outputs are
  stored: the BatchNormalization and ReLU after a region conv, folded in.

`to_ihwo` and `fuse_epilogue` get these for free where the filters come straight from a
constant weight and a Reshape (the mixture Gemm of MixtureDRConv2d; the grouped 1x1 Conv
of a 1x1 DRConv2d's generator; a larger DRConv2d's taps are its Conv's spatial axes): they
permute or scale that weight's rows, so the graph computes the filters as needed and
gains no node.

Version 3 adds the node MixtureRegionConv2d, whose filters are mixed inside it from
coefficients [N, R, M] and a constant basis [M, one filter]: `fuse_mixture` folds
MixtureDRConv2d's mixture Gemm and Reshape into it (in ONNX Runtime the Gemm, its output
and the hand-off cost more than the node's own mixing).

Version 4 lets a MixtureRegionConv2d compute its coefficients itself (inputs `routing` and
`routing_bias`, the coefficients input left empty): `fuse_routing` folds MixtureDRConv2d's
routing, Reshape(Sigmoid(Gemm(ReduceMean(X)))), into the node (four nodes a region conv, each
costing ONNX Runtime more in hand-offs than its arithmetic).

`to_v1` goes back to version 1 with standard nodes (MatMul and Reshape for a mixture;
Transpose, Add, Relu) for the kernels that implement only that: the TensorRT plugin and
the CUDA op.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from drconv.contract import ATTRIBUTES, ATTRIBUTES_SINCE, MIXTURE, MixtureInput, RegionConvInput

__all__ = [
    "FILTER_LAYOUTS",
    "IHWO",
    "MIXTURE_OP",
    "OIHW",
    "OPSET_V2",
    "OPSET_V3",
    "OPSET_V4",
    "TO_IHWO",
    "TO_OIHW",
    "expand_mixture",
    "expand_routing",
    "fold_mixture_scale",
    "fuse_epilogue",
    "fuse_mixture",
    "fuse_routing",
    "layouts",
    "set_layout",
    "set_opset",
    "to_ihwo",
    "to_v1",
]

OIHW, IHWO = ATTRIBUTES["filter_layout"], "IHWO"
FILTER_LAYOUTS = (IHWO, OIHW)
# The drconv domain version with filter_layout, B and activation: a library that knows only
# version 1 refuses such a graph instead of misreading it.
OPSET_V2 = ATTRIBUTES_SINCE["filter_layout"]
# The version with MixtureRegionConv2d (filters mixed in the node from a basis).
OPSET_V3 = MIXTURE.since
# The version whose MixtureRegionConv2d may route itself (inputs routing, routing_bias).
OPSET_V4 = MIXTURE.input_since[MixtureInput.ROUTING]
MIXTURE_OP = MIXTURE.name
_FILTERS, _BIAS = RegionConvInput.FILTERS, RegionConvInput.B
_COEFFICIENTS, _BASIS, _ROUTING, _ROUTING_BIAS = (
    MixtureInput.COEFFICIENTS,
    MixtureInput.BASIS,
    MixtureInput.ROUTING,
    MixtureInput.ROUTING_BIAS,
)
TO_OIHW = [0, 1, 5, 2, 3, 4]  # [N, R, C_in, kh, kw, C_out] -> [N, R, C_out, C_in, kh, kw]
TO_IHWO = [0, 1, 3, 4, 5, 2]  # its inverse


def _attribute(node: onnx.NodeProto, name: str, default: str) -> str:
    for attribute in node.attribute:
        if attribute.name == name:
            return attribute.s.decode()
    return default


def _attributes(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _set_attribute(node: onnx.NodeProto, name: str, value: str | None) -> None:
    for attribute in list(node.attribute):
        if attribute.name == name:
            node.attribute.remove(attribute)
    if value is not None:
        node.attribute.append(helper.make_attribute(name, value))


def set_layout(node: onnx.NodeProto, layout: str) -> None:
    """Set a region-conv node's filter_layout attribute (its filters must already be so)."""
    _set_attribute(node, "filter_layout", layout)


def set_opset(proto: onnx.ModelProto, domain: str, version: int) -> None:
    """Import `domain` at `version`."""
    for opset in proto.opset_import:
        if opset.domain == domain:
            opset.version = version
            return
    proto.opset_import.append(helper.make_opsetid(domain, version))


def _nodes(proto: onnx.ModelProto, domain: str, op_type: str) -> list[onnx.NodeProto]:
    return [n for n in proto.graph.node if n.domain == domain and n.op_type == op_type]


def layouts(proto: onnx.ModelProto, domain: str, op_type: str) -> list[str]:
    """The filter_layout of every region-conv node (`op_type` or MixtureRegionConv2d), in graph order."""
    nodes = [n for n in proto.graph.node if n.domain == domain and n.op_type in (op_type, MIXTURE_OP)]
    return [_attribute(n, "filter_layout", OIHW) for n in nodes]


def _is_v2(node: onnx.NodeProto) -> bool:
    return (
        _attribute(node, "filter_layout", OIHW) != OIHW
        or bool(_attribute(node, "activation", ""))
        or (len(node.input) > _BIAS and bool(node.input[_BIAS]))
    )


class _Graph:
    """Producers, consumers and constants of one graph, for the rewrites below."""

    def __init__(self, proto: onnx.ModelProto) -> None:
        self.graph = proto.graph
        self.producer = {out: n for n in self.graph.node for out in n.output}
        self.initializer = {i.name: i for i in self.graph.initializer}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in self.graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.outputs = {o.name for o in self.graph.output}

    def uses(self, name: str) -> int:
        return len(self.consumers.get(name, [])) + (name in self.outputs)

    def only_consumer(self, name: str) -> onnx.NodeProto | None:
        readers = self.consumers.get(name, [])
        return readers[0] if len(readers) == 1 and name not in self.outputs else None

    def constant(self, name: str) -> np.ndarray | None:
        if name in self.initializer:
            return numpy_helper.to_array(self.initializer[name])
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            return numpy_helper.to_array(node.attribute[0].t)
        return None

    def fresh_name(self, base: str) -> str:
        name = base
        while name in self.initializer or name in self.producer or name in self.consumers:
            name += "_"
        return name

    def add_initializer(self, base: str, value: np.ndarray) -> str:
        name = self.fresh_name(base)
        tensor = numpy_helper.from_array(value, name)
        self.graph.initializer.append(tensor)
        self.initializer[name] = tensor
        return name

    def set_input(self, node: onnx.NodeProto, index: int, value: np.ndarray) -> None:
        """Give node.input[index] the value `value`, in place if nothing else reads it."""
        name = node.input[index]
        if name in self.initializer and self.uses(name) == 1:
            self.initializer[name].CopyFrom(numpy_helper.from_array(value, name))
            return
        node.input[index] = self.add_initializer(f"{name}.v2", value)
        self.consumers[name].remove(node)
        self.consumers[node.input[index]] = [node]

    def drop_value_info(self, name: str) -> None:
        for value in list(self.graph.value_info):
            if value.name == name:
                self.graph.value_info.remove(value)

    def prune(self) -> None:
        """Drop initializers that no node reads any more (ONNX Runtime warns about each)."""
        read = {name for node in self.graph.node for name in node.input} | self.outputs
        for tensor in list(self.graph.initializer):
            if tensor.name not in read:
                self.graph.initializer.remove(tensor)
                del self.initializer[tensor.name]

    def remove(self, node: onnx.NodeProto) -> None:
        self.graph.node.remove(node)
        for name in node.input:
            if node in self.consumers.get(name, []):
                self.consumers[name].remove(node)


@dataclass
class _Filters:
    """A node's filters, computed from constant weight rows: source(...) then Reshape to 6-D.

    `rows`: (source input index, transposed) of each array whose first axis (after .T when
    transposed) runs over the filter's elements: groups x [C_out, patch] (OIHW) or
    groups x [patch, C_out] (IHWO).
    """

    reshape: onnx.NodeProto
    source: onnx.NodeProto
    batch: int  # the Reshape target's first entry (-1 or a size)
    groups: int
    regions: int
    c_out: int
    c_in: int
    kh: int
    kw: int
    ihwo: bool
    rows: list[tuple[int, bool]]

    @property
    def patch(self) -> int:
        return self.c_in * self.kh * self.kw

    def get(self, g: _Graph, index: int, transposed: bool) -> np.ndarray:
        value = g.constant(self.source.input[index])
        return value.T if transposed else value

    def put(self, g: _Graph, index: int, transposed: bool, rows: np.ndarray) -> None:
        g.set_input(self.source, index, np.ascontiguousarray(rows.T if transposed else rows))

    def blocks(self, rows: np.ndarray) -> np.ndarray:
        """rows viewed as [groups, C_out, patch, ...] (OIHW) or [groups, patch, C_out, ...] (IHWO)."""
        inner = (self.patch, self.c_out) if self.ihwo else (self.c_out, self.patch)
        return rows.reshape(self.groups, *inner, *rows.shape[1:])


def _rewrite_each(
    proto: onnx.ModelProto,
    domain: str,
    op_type: str,
    change: Callable[[_Graph, onnx.NodeProto], int | bool],
    version: int | None,
) -> int:
    """Apply `change` to every region-conv node; where any changed, import `version` of the
    domain (if given) and drop the initializers left unread. Returns the sum of its counts."""
    g = _Graph(proto)
    count = sum(int(change(g, node)) for node in _nodes(proto, domain, op_type))
    if count:
        if version is not None:
            set_opset(proto, domain, version)
        g.prune()
    return count


def _filters(g: _Graph, node: onnx.NodeProto) -> _Filters | None:
    reshape = g.producer.get(node.input[_FILTERS])
    if reshape is None or reshape.op_type != "Reshape" or g.uses(node.input[_FILTERS]) != 1:
        return None
    target = g.constant(reshape.input[1])
    source = g.producer.get(reshape.input[0])
    if target is None or target.shape != (6,) or source is None or g.uses(reshape.input[0]) != 1:
        return None
    ihwo = _attribute(node, "filter_layout", OIHW) == IHWO
    dims = [int(v) for v in target]
    regions, c_out, c_in, kh, kw = (
        (dims[1], dims[5], dims[2], dims[3], dims[4]) if ihwo else (dims[1], dims[2], dims[3], dims[4], dims[5])
    )
    if min(regions, c_out, c_in, kh, kw) < 1:
        return None
    size = c_out * c_in * kh * kw
    attrs = _attributes(source)
    if source.op_type == "Gemm" and attrs.get("transA", 0) == 0:
        # [N*R, M] x B (+ C) -> [N*R, C_out*patch]: B's output axis is its rows when transB.
        transposed = attrs.get("transB", 0) != 1
        groups, rows = 1, [(1, transposed)]
    elif source.op_type == "Conv" and int(attrs.get("group", 1)) == regions and kh * kw == 1:
        # The grouped 1x1 conv to R * C_out * C_in channels, group r making region r's filter.
        groups, rows = regions, [(1, False)]
        size *= regions
    else:
        return None
    if len(source.input) > 2 and source.input[2]:
        rows.append((2, False))
    found = _Filters(reshape, source, dims[0], groups, regions, c_out, c_in, kh, kw, ihwo, rows)
    for index, transposed in rows:
        value = g.constant(source.input[index])
        if value is None or (value.T if transposed else value).shape[0] != size:
            return None
    return found


def _to_ihwo(g: _Graph, node: onnx.NodeProto) -> bool:
    f = _filters(g, node)
    if f is None or f.ihwo:
        return False
    for index, transposed in f.rows:
        rows = f.get(g, index, transposed)
        f.put(g, index, transposed, f.blocks(rows).swapaxes(1, 2).reshape(rows.shape))
    g.set_input(f.reshape, 1, np.array([f.batch, f.regions, f.c_in, f.kh, f.kw, f.c_out], dtype=np.int64))
    g.drop_value_info(f.reshape.output[0])
    set_layout(node, IHWO)
    return True


def to_ihwo(proto: onnx.ModelProto, domain: str, op_type: str) -> int:
    """Switch every region-conv node whose filters come from a constant weight to IHWO, in place.

    Returns how many were switched; the others keep OIHW (their filters are computed some
    other way, and a Transpose would cost what IHWO saves).
    """
    return _rewrite_each(proto, domain, op_type, _to_ihwo, OPSET_V2)


def _batch_norm(g: _Graph, node: onnx.NodeProto) -> tuple[onnx.NodeProto, np.ndarray, np.ndarray] | None:
    """The inference BatchNormalization reading only node's output, as y = scale * x + shift."""
    bn = g.only_consumer(node.output[0])
    if bn is None or bn.op_type != "BatchNormalization" or len(bn.output) != 1 or bn.input[0] != node.output[0]:
        return None
    params = [g.constant(name) for name in bn.input[1:5]]
    attrs = _attributes(bn)
    if any(p is None for p in params) or attrs.get("training_mode", 0):
        return None
    gamma, beta, mean, var = (p.astype(np.float64) for p in params)
    scale = gamma / np.sqrt(var + float(attrs.get("epsilon", 1e-5)))
    return bn, scale, beta - scale * mean


def _absorb(g: _Graph, node: onnx.NodeProto, follower: onnx.NodeProto) -> None:
    """node takes over follower's output (follower, now folded in, is removed)."""
    g.drop_value_info(node.output[0])
    g.remove(follower)
    node.output[0] = follower.output[0]
    g.producer[node.output[0]] = node


def _fuse(g: _Graph, node: onnx.NodeProto) -> bool:
    if len(node.input) > _BIAS or _attribute(node, "activation", ""):
        return False
    f = _filters(g, node)
    found = _batch_norm(g, node) if f is not None else None
    if f is None or found is None:
        return False
    bn, scale, shift = found
    axis = 2 if f.ihwo else 1
    dtypes = []
    for index, transposed in f.rows:
        rows = f.get(g, index, transposed)
        blocks = f.blocks(rows)
        shape = [1] * blocks.ndim
        shape[axis] = f.c_out
        f.put(g, index, transposed, (blocks * scale.reshape(shape)).astype(rows.dtype).reshape(rows.shape))
        dtypes.append(rows.dtype)
    node.input.append(g.add_initializer(f"{bn.name or node.name}.bias", shift.astype(dtypes[0])))
    _absorb(g, node, bn)
    relu = g.only_consumer(node.output[0])
    if relu is not None and relu.op_type == "Relu":
        _set_attribute(node, "activation", "Relu")
        _absorb(g, node, relu)
    return True


def fuse_epilogue(proto: onnx.ModelProto, domain: str, op_type: str) -> int:
    """Fold the inference BatchNormalization (and a ReLU after it) that follows a region conv into it.

    The BatchNormalization's scale goes into the constant weight rows its filters come from,
    its shift becomes the node's bias input B, the ReLU its `activation`. Returns how many
    nodes took one in; in place.
    """
    return _rewrite_each(proto, domain, op_type, _fuse, OPSET_V2)


def _scalar(g: _Graph, name: str) -> float | None:
    value = g.constant(name)
    return float(value.reshape(())) if value is not None and value.size == 1 else None


def _fold_scale(g: _Graph, node: onnx.NodeProto) -> int:
    """Fold scalar Mul/Div nodes on the way to the mixture Gemm's A into its alpha; how many."""
    f = _filters(g, node)
    if f is None or f.source.op_type != "Gemm":
        return 0
    gemm, factor, folded = f.source, 1.0, 0
    reader = g.producer.get(gemm.input[0])  # the mixture coefficients are reshaped on the way
    if reader is None or reader.op_type != "Reshape" or g.uses(gemm.input[0]) != 1:
        reader = gemm
    while True:
        step = g.producer.get(reader.input[0])
        if step is None or step.op_type not in ("Mul", "Div") or g.uses(reader.input[0]) != 1:
            break
        data, constant = step.input[0], _scalar(g, step.input[1])
        if constant is None and step.op_type == "Mul":
            data, constant = step.input[1], _scalar(g, step.input[0])
        if constant is None or (step.op_type == "Div" and constant == 0):
            break
        factor = factor * constant if step.op_type == "Mul" else factor / constant
        g.remove(step)
        g.drop_value_info(reader.input[0])
        reader.input[0] = data
        g.consumers.setdefault(data, []).append(reader)
        folded += 1
    if folded:
        attrs = _attributes(gemm)
        for attribute in list(gemm.attribute):
            if attribute.name == "alpha":
                gemm.attribute.remove(attribute)
        gemm.attribute.append(helper.make_attribute("alpha", float(attrs.get("alpha", 1.0)) * factor))
    return folded


def fold_mixture_scale(proto: onnx.ModelProto, domain: str, op_type: str) -> int:
    """Fold the scalar Mul/Div nodes before each mixture Gemm (MixtureDRConv2d's 2 * sigmoid / M)
    into the Gemm's alpha, in place; returns how many nodes went."""
    return _rewrite_each(proto, domain, op_type, _fold_scale, None)


def _fuse_mixture(g: _Graph, node: onnx.NodeProto) -> bool:
    f = _filters(g, node)
    if f is None or f.source.op_type != "Gemm" or f.groups != 1 or len(f.rows) != 1:
        return False
    gemm, (index, transposed) = f.source, f.rows[0]
    rows = f.get(g, index, transposed)  # [C_out * patch, M], in the node's layout
    alpha = float(_attributes(gemm).get("alpha", 1.0))
    one_filter = (f.c_in, f.kh, f.kw, f.c_out) if f.ihwo else (f.c_out, f.c_in, f.kh, f.kw)
    basis = np.ascontiguousarray((rows * alpha).T.astype(rows.dtype)).reshape(-1, *one_filter)
    coefficients = gemm.input[0]  # [N * R, M]
    target = np.array([-1, f.regions, basis.shape[0]], dtype=np.int64)  # [N, R, M]
    for gone in (gemm.output[0], f.reshape.output[0]):
        g.drop_value_info(gone)
    g.remove(f.reshape)
    earlier = g.producer.get(coefficients)
    if earlier is not None and earlier.op_type == "Reshape" and g.uses(coefficients) == 1:
        # [N, R * M] reshaped to [N * R, M] for the Gemm: reshape it to [N, R, M] instead.
        g.remove(gemm)
        g.drop_value_info(coefficients)
        g.set_input(earlier, 1, target)
        reshaped = coefficients
    else:
        # The Gemm's place in the graph (after its input, before the node) takes the Reshape.
        reshaped = g.fresh_name(f"{coefficients}.regions")
        shape = g.add_initializer(f"{coefficients}.shape", target)
        gemm.CopyFrom(helper.make_node("Reshape", [coefficients, shape], [reshaped], name=gemm.name))
    node.op_type = MIXTURE_OP
    basis_name = g.add_initializer(f"{node.name or node.output[0]}.basis", basis)
    # RegionConv2d's X, filters, guide[, B] become the mixture's X, coefficients, basis, guide[, B].
    inputs = [node.input[RegionConvInput.X], reshaped, basis_name, *node.input[RegionConvInput.GUIDE :]]
    del node.input[:]
    node.input.extend(inputs)
    return True


def fuse_mixture(proto: onnx.ModelProto, domain: str, op_type: str) -> int:
    """Fold each mixture Gemm (filters = Reshape(alpha * A @ W)) and its node into one
    MixtureRegionConv2d (coefficients A as [N, R, M], basis alpha * W as [M, one filter]), in
    place; returns how many. Run it after the rewrites that change W's rows."""
    return _rewrite_each(proto, domain, op_type, _fuse_mixture, OPSET_V3)


def _produced(g: _Graph, name: str, op_type: str) -> onnx.NodeProto | None:
    """The node of `op_type` that makes `name`, if nothing else reads `name`."""
    node = g.producer.get(name)
    return node if node is not None and node.op_type == op_type and g.uses(name) == 1 else None


def _routed(node: onnx.NodeProto) -> bool:
    """Whether a MixtureRegionConv2d computes its coefficients itself (version 4)."""
    return len(node.input) > _ROUTING and bool(node.input[_ROUTING])


def _channel_mean(g: _Graph, mean: onnx.NodeProto | None, x: str) -> bool:
    """Whether `mean` is ReduceMean(x) over the two spatial axes of a 4-D x, to [N, C_in]."""
    if mean is None or mean.op_type != "ReduceMean" or mean.input[0] != x:
        return False
    attrs = _attributes(mean)
    axes = attrs.get("axes")
    if axes is None and len(mean.input) > 1 and mean.input[1]:
        axes = g.constant(mean.input[1])
    return attrs.get("keepdims", 1) == 0 and axes is not None and sorted(int(a) % 4 for a in axes) == [2, 3]


def _fuse_routing(g: _Graph, node: onnx.NodeProto) -> bool:
    if _routed(node):
        return False
    reshape = _produced(g, node.input[_COEFFICIENTS], "Reshape")
    sigmoid = reshape and _produced(g, reshape.input[0], "Sigmoid")
    gemm = sigmoid and _produced(g, sigmoid.input[0], "Gemm")
    basis = g.constant(node.input[_BASIS])
    if gemm is None or basis is None or not _channel_mean(g, g.producer.get(gemm.input[0]), node.input[MixtureInput.X]):
        return False
    attrs = _attributes(gemm)
    weight = g.constant(gemm.input[1])
    if attrs.get("transA", 0) != 0 or weight is None or weight.ndim != 2:
        return False
    routing = (weight.T if attrs.get("transB", 0) == 1 else weight) * float(attrs.get("alpha", 1.0))  # [C_in, R*M]
    width = routing.shape[1]
    bias = None
    if len(gemm.input) > 2 and gemm.input[2]:
        bias = g.constant(gemm.input[2])
        if bias is None or bias.size not in (1, width):
            return False
        bias = np.broadcast_to(bias.reshape(-1), (width,)) * float(attrs.get("beta", 1.0))
    if width % basis.shape[0] != 0:
        return False
    inputs = list(node.input) + [""] * (_ROUTING + 1 - len(node.input))
    inputs[_COEFFICIENTS] = ""
    name = node.name or node.output[0]
    inputs[_ROUTING] = g.add_initializer(f"{name}.routing", np.ascontiguousarray(routing.astype(weight.dtype)))
    if bias is not None:
        inputs.append(g.add_initializer(f"{name}.routing_bias", np.ascontiguousarray(bias.astype(weight.dtype))))
    mean = g.producer[gemm.input[0]]
    for gone in (reshape, sigmoid, gemm):
        g.drop_value_info(gone.output[0])
        g.remove(gone)
    if g.uses(mean.output[0]) == 0:
        g.drop_value_info(mean.output[0])
        g.remove(mean)
    del node.input[:]
    node.input.extend(inputs)
    return True


def fuse_routing(proto: onnx.ModelProto, domain: str) -> int:
    """Fold each MixtureRegionConv2d's routing, coefficients = Reshape(Sigmoid(Gemm(ReduceMean(X,
    spatial axes)))) with constant Gemm weights, into the node (inputs routing [C_in, R * M] and
    routing_bias [R * M], version 4), in place; returns how many. Run it after fuse_mixture."""
    return _rewrite_each(proto, domain, MIXTURE_OP, _fuse_routing, OPSET_V4)


def _expand_routing(proto: onnx.ModelProto, g: _Graph, node: onnx.NodeProto) -> list[onnx.NodeProto]:
    """The standard nodes that compute a routed node's coefficients; the node then reads them."""
    name = node.name or node.output[0]
    routing = g.constant(node.input[_ROUTING])
    basis = g.constant(node.input[_BASIS])
    if routing is None or basis is None:
        raise ValueError(f"{name}: expanding a routed mixture needs its routing and basis as constants")
    regions = routing.shape[1] // basis.shape[0]
    mean, linear = g.fresh_name(f"{name}.mean"), g.fresh_name(f"{name}.routing_linear")
    sigmoid, coefficients = g.fresh_name(f"{name}.sigmoid"), g.fresh_name(f"{name}.coefficients")
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 18)
    if opset >= 18:
        axes = g.add_initializer(f"{name}.mean_axes", np.array([2, 3], dtype=np.int64))
        reduce = helper.make_node("ReduceMean", [node.input[MixtureInput.X], axes], [mean], keepdims=0)
    else:
        reduce = helper.make_node("ReduceMean", [node.input[MixtureInput.X]], [mean], axes=[2, 3], keepdims=0)
    routing_bias = node.input[_ROUTING_BIAS] if len(node.input) > _ROUTING_BIAS else ""
    shape = g.add_initializer(f"{name}.coefficients_shape", np.array([0, regions, basis.shape[0]], dtype=np.int64))
    nodes = [
        reduce,
        helper.make_node("Gemm", [mean, node.input[_ROUTING], *([routing_bias] if routing_bias else [])], [linear]),
        helper.make_node("Sigmoid", [linear], [sigmoid]),
        helper.make_node("Reshape", [sigmoid, shape], [coefficients]),
    ]
    inputs = list(node.input[:_ROUTING])
    inputs[_COEFFICIENTS] = coefficients
    while inputs and not inputs[-1]:
        inputs.pop()
    del node.input[:]
    node.input.extend(inputs)
    return nodes


def expand_routing(proto: onnx.ModelProto, domain: str) -> int:
    """Put each routed MixtureRegionConv2d's routing back into the graph (ReduceMean, Gemm, Sigmoid,
    Reshape feeding its coefficients: the node of version 3), in place; returns how many."""
    g = _Graph(proto)
    expanded = 0
    nodes = list(proto.graph.node)
    del proto.graph.node[:]
    for node in nodes:
        if node.domain == domain and node.op_type == MIXTURE_OP and _routed(node):
            proto.graph.node.extend(_expand_routing(proto, g, node))
            expanded += 1
        proto.graph.node.append(node)
    return expanded


def expand_mixture(proto: onnx.ModelProto, domain: str, op_type: str, layout: str | None = None) -> int:
    """Lower each MixtureRegionConv2d back to MatMul + Reshape + the region-conv node `op_type`, in place.

    filters = Reshape(coefficients [N, R, M] @ basis [M, C_out * patch], [N, R, one filter]);
    a routed node's coefficients (version 4) become ReduceMean, Gemm, Sigmoid and Reshape.
    `layout` OIHW permutes an IHWO basis to OIHW on the way (free: it is a constant); None
    keeps each node's layout. Returns how many nodes were expanded.
    """
    g = _Graph(proto)
    expanded = 0
    nodes = list(proto.graph.node)
    del proto.graph.node[:]
    for node in nodes:
        if not (node.domain == domain and node.op_type == MIXTURE_OP):
            proto.graph.node.append(node)
            continue
        expanded += 1
        name = node.name or node.output[0]
        if _routed(node):
            proto.graph.node.extend(_expand_routing(proto, g, node))
        x, coefficients, basis_name, *rest = node.input
        basis = g.constant(basis_name)
        if basis is None:
            raise ValueError(f"{name}: expanding a mixture needs its basis as a constant")
        if layout == OIHW and _attribute(node, "filter_layout", OIHW) == IHWO:
            basis = np.ascontiguousarray(basis.transpose(0, 4, 1, 2, 3))
            set_layout(node, OIHW)
        one_filter = list(basis.shape[1:])
        rows = g.add_initializer(f"{basis_name}.rows", basis.reshape(basis.shape[0], -1))
        product, filters = g.fresh_name(f"{name}.mixed"), g.fresh_name(f"{name}.filters")
        target = g.add_initializer(f"{name}.filters_shape", np.array([0, 0, *one_filter], dtype=np.int64))
        proto.graph.node.extend(
            [
                helper.make_node("MatMul", [coefficients, rows], [product]),
                helper.make_node("Reshape", [product, target], [filters]),
            ]
        )
        node.op_type = op_type
        del node.input[:]
        node.input.extend([x, filters, *rest])
        proto.graph.node.append(node)
    if expanded:
        g.prune()
    return expanded


def to_v1(proto: onnx.ModelProto, domain: str, op_type: str) -> int:
    """Lower every version-2 region-conv node to version 1 plus standard nodes, in place.

    A MixtureRegionConv2d is expanded first (`expand_mixture`), IHWO filters get a Transpose
    to OIHW, a bias B an Add after the node, `activation` Relu a Relu after that. For the
    kernels that implement version 1 only: the TensorRT plugin and the CUDA op. Returns how
    many nodes were lowered.
    """
    expand_mixture(proto, domain, op_type, OIHW)
    g = _Graph(proto)
    lowered = 0
    nodes = list(proto.graph.node)
    del proto.graph.node[:]
    for node in nodes:
        if not (node.domain == domain and node.op_type == op_type and _is_v2(node)):
            proto.graph.node.append(node)
            continue
        lowered += 1
        name = node.name or node.output[0]
        if _attribute(node, "filter_layout", OIHW) == IHWO:
            transposed = g.fresh_name(f"{node.input[_FILTERS]}.oihw")
            proto.graph.node.append(helper.make_node("Transpose", [node.input[_FILTERS]], [transposed], perm=TO_OIHW))
            node.input[_FILTERS] = transposed
        set_layout(node, OIHW)
        tail: list[onnx.NodeProto] = []
        output = node.output[0]
        if len(node.input) > _BIAS and node.input[_BIAS]:
            bias = g.constant(node.input[_BIAS])
            if bias is None:
                raise ValueError(f"{name}: to_v1 needs the bias B as a constant")
            column = g.add_initializer(f"{node.input[_BIAS]}.column", bias.reshape(1, -1, 1, 1))
            del node.input[_BIAS:]
            node.output[0] = g.fresh_name(f"{output}.conv")
            tail.append(helper.make_node("Add", [node.output[0], column], [output]))
        if _attribute(node, "activation", ""):
            _set_attribute(node, "activation", None)
            last = tail[-1] if tail else node
            last.output[0] = g.fresh_name(f"{output}.linear")
            tail.append(helper.make_node("Relu", [last.output[0]], [output]))
        proto.graph.node.extend([node, *tail])
    if lowered:
        set_opset(proto, domain, 1)
    return lowered
