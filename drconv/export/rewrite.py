"""Graph passes over drconv's nodes in an exported ONNX graph (the versions: docs/region_conv_op.md).

The exporter writes the nodes directly: a `DRConv2d` becomes a `RegionConv2d` whose filters
its generator computes in the graph, a `MixtureDRConv2d` one `MixtureRegionConv2d` (version
4) with its basis, routing and routing bias as constants (`MixtureDRConv2d.node_inputs`).
Two passes then give the CPU kernel what it reads best, where that is free:

- `fuse_epilogue`: the inference BatchNormalization (and a ReLU after it) that follows a
  region conv folds into the node (version 2: bias input B and `activation` "Relu", applied
  as the outputs are stored). Its scale goes into the mixture's basis, or into the
  constant rows of a 1x1 DRConv2d's generator (a larger DRConv2d's taps are its Conv's
  spatial axes: no rows to scale).
- `to_ihwo`: a 1x1 DRConv2d's filters in `filter_layout` IHWO ([N, R, C_in, kh, kw, C_out],
  output channel innermost, the order the kernel reads, so it does not pack them) by
  permuting its generator's rows. A mixture's basis is written in the layout asked for.

`to_v1` goes back to version 1 with standard nodes for the kernels that implement only that
(the TensorRT plugin and the CUDA op): `expand_mixture` (MatMul and Reshape, a routed node's
`expand_routing`: ReduceMean, Gemm, Sigmoid, Reshape), then Transpose, Add, Relu.
`required_version` says which version of the domain a graph needs.

`to_nchwc` is a runtime pass, not an export one: over ONNX Runtime's own optimised graph, it
lets the nodes read and write ONNX Runtime's blocked NCHWc layout (version 5) instead of
the reorders to and from NCHW that ONNX Runtime puts around every custom node.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from drconv.contract import ATTRIBUTES, ATTRIBUTES_SINCE, MIXTURE, MixtureInput, RegionConvInput, domain_version

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
    "fuse_epilogue",
    "layouts",
    "required_version",
    "set_layout",
    "set_opset",
    "to_ihwo",
    "to_nchwc",
    "to_v1",
    "topological_sort",
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
# The version with x_channel_block and y_channel_block (ONNX Runtime's NCHWc layout).
OPSET_V5 = ATTRIBUTES_SINCE["x_channel_block"]
NCHWC_DOMAIN = "com.microsoft.nchwc"  # ONNX Runtime's internal operators of its blocked layout
_FILTERS, _BIAS = RegionConvInput.FILTERS, RegionConvInput.B
_COEFFICIENTS, _BASIS, _MIXTURE_BIAS, _ROUTING, _ROUTING_BIAS = (
    MixtureInput.COEFFICIENTS,
    MixtureInput.BASIS,
    MixtureInput.B,
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


def _given(inputs) -> list[str]:
    """A node's inputs without the trailing absent ones ("")."""
    given = list(inputs)
    while given and not given[-1]:
        given.pop()
    return given


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


def _refresh_functions(proto: onnx.ModelProto, changed: int) -> int:
    """After a pass changed `changed` nodes: the model's drconv functions written again for them
    (a body fits one variant of the nodes: drconv.export.functions). Returns `changed`."""
    from drconv.export import functions

    if changed and functions.present(proto):
        functions.attach(proto)
    return changed


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
    """A RegionConv2d node's filters, computed from constant weight rows: the grouped 1x1 Conv of a
    DRConv2d's generator, then Reshape to 6-D.

    `rows`: the source's input index of each array whose first axis runs over the filter's
    channels: groups x [C_out, C_in] (OIHW) or groups x [C_in, C_out] (IHWO, 1x1 only). A k x k
    filter's taps are the source's spatial axes, not rows: only a 1x1 filter can be reordered to
    IHWO by its rows.
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
    rows: list[int]

    @property
    def patch(self) -> int:
        """Rows per output channel in a group."""
        return self.c_in

    def get(self, g: _Graph, index: int) -> np.ndarray:
        return g.constant(self.source.input[index])

    def put(self, g: _Graph, index: int, rows: np.ndarray) -> None:
        g.set_input(self.source, index, np.ascontiguousarray(rows))

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
        if version is not None:  # a rewrite never lowers the version the graph already needs
            current = next((o.version for o in proto.opset_import if o.domain == domain), 0)
            set_opset(proto, domain, max(version, current))
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
    if min(regions, c_out, c_in, kh, kw) < 1 or (ihwo and kh * kw > 1):
        return None
    attrs = _attributes(source)
    if source.op_type == "Conv" and int(attrs.get("group", 1)) == regions:
        # The grouped 1x1 conv to R * C_out * C_in channels over a kh x kw map, group r making
        # region r's filter.
        groups, rows = regions, [1]
        size = regions * c_out * c_in
    else:
        return None
    if len(source.input) > 2 and source.input[2]:
        rows.append(2)
    found = _Filters(reshape, source, dims[0], groups, regions, c_out, c_in, kh, kw, ihwo, rows)
    for index in rows:
        value = g.constant(source.input[index])
        if value is None or value.shape[0] != size:
            return None
    return found


def _to_ihwo(g: _Graph, node: onnx.NodeProto) -> bool:
    f = _filters(g, node)
    if f is None or f.ihwo or f.kh * f.kw > 1:  # k x k: a Transpose would cost what IHWO saves
        return False
    for index in f.rows:
        rows = f.get(g, index)
        f.put(g, index, f.blocks(rows).swapaxes(1, 2).reshape(rows.shape))
    g.set_input(f.reshape, 1, np.array([f.batch, f.regions, f.c_in, f.kh, f.kw, f.c_out], dtype=np.int64))
    g.drop_value_info(f.reshape.output[0])
    set_layout(node, IHWO)
    return True


def to_ihwo(proto: onnx.ModelProto, domain: str, op_type: str) -> int:
    """Switch every region-conv node whose filters come from a constant weight to IHWO, in place.

    Returns how many were switched; the others keep OIHW (their filters are computed some
    other way, and a Transpose would cost what IHWO saves).
    """
    return _refresh_functions(proto, _rewrite_each(proto, domain, op_type, _to_ihwo, OPSET_V2))


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


def _scaled(values: np.ndarray, scale: np.ndarray, axis: int) -> np.ndarray:
    """values times scale along `axis` (its output channels), in values' dtype."""
    shape = [1] * values.ndim
    shape[axis] = scale.size
    return (values * scale.reshape(shape)).astype(values.dtype)


def _fold_scale(g: _Graph, node: onnx.NodeProto, scale: np.ndarray) -> np.dtype | None:
    """Scale the node's output channels by `scale` where its filters come from: a mixture's
    constant basis, or the constant rows of a RegionConv2d's generator. The weights' dtype, or
    None where they are not constants."""
    if node.op_type == MIXTURE_OP:
        basis = g.constant(node.input[_BASIS])
        if basis is None:
            return None
        g.set_input(node, _BASIS, _scaled(basis, scale, 4 if _attribute(node, "filter_layout", OIHW) == IHWO else 1))
        return basis.dtype
    f = _filters(g, node)
    if f is None:
        return None
    dtypes = []
    for index in f.rows:
        rows = f.get(g, index)
        f.put(g, index, _scaled(f.blocks(rows), scale, 2 if f.ihwo else 1).reshape(rows.shape))
        dtypes.append(rows.dtype)
    return dtypes[0]


def _fuse(g: _Graph, node: onnx.NodeProto) -> bool:
    bias_at = _MIXTURE_BIAS if node.op_type == MIXTURE_OP else _BIAS
    if _attribute(node, "activation", ""):
        return False
    bias = node.input[bias_at] if len(node.input) > bias_at and node.input[bias_at] else None
    given = g.constant(bias) if bias else None
    found = _batch_norm(g, node)
    if found is None or (bias and given is None):
        return False
    bn, scale, shift = found
    dtype = _fold_scale(g, node, scale)
    if dtype is None:
        return False
    if given is not None:  # BN(y + B) = scale * y + (scale * B + shift)
        shift = scale * given.astype(np.float64) + shift
    name = g.add_initializer(f"{bn.name or node.name}.bias", shift.astype(dtype))
    inputs = list(node.input) + [""] * (bias_at + 1 - len(node.input))
    inputs[bias_at] = name
    del node.input[:]
    node.input.extend(inputs)
    _absorb(g, node, bn)
    relu = g.only_consumer(node.output[0])
    if relu is not None and relu.op_type == "Relu":
        _set_attribute(node, "activation", "Relu")
        _absorb(g, node, relu)
    return True


def fuse_epilogue(proto: onnx.ModelProto, domain: str, op_type: str) -> int:
    """Fold the inference BatchNormalization (and a ReLU after it) that follows a region conv into it.

    The BatchNormalization's scale goes into the constants the node's filters come from (a
    MixtureRegionConv2d's basis; the weight rows of a DRConv2d's generator), its shift
    (plus the scaled bias the node had) becomes the node's bias input B, the ReLU its
    `activation`. Returns how many nodes took one in; in place.
    """
    fused = sum(_rewrite_each(proto, domain, kind, _fuse, OPSET_V2) for kind in (op_type, MIXTURE_OP))
    return _refresh_functions(proto, fused)


def _routed(node: onnx.NodeProto) -> bool:
    """Whether a MixtureRegionConv2d computes its coefficients itself (version 4)."""
    return len(node.input) > _ROUTING and bool(node.input[_ROUTING])


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
    del node.input[:]
    node.input.extend(_given(inputs))
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
    return _refresh_functions(proto, expanded)


def expand_mixture(proto: onnx.ModelProto, domain: str, op_type: str, layout: str | None = None) -> int:
    """Lower each MixtureRegionConv2d back to MatMul + Reshape + the region-conv node `op_type`, in place.

    filters = Reshape(coefficients [N, R, M] @ basis [M, C_out * patch], [N, R, one filter]);
    a routed node's coefficients (version 4) become ReduceMean, Gemm, Sigmoid and Reshape.
    `layout` OIHW permutes an IHWO basis to OIHW on the way (free: it is a constant); None
    keeps each node's layout. Returns how many nodes were expanded.
    """
    return _refresh_functions(proto, _expand_mixture(proto, domain, op_type, layout))


def _expand_mixture(proto: onnx.ModelProto, domain: str, op_type: str, layout: str | None) -> int:
    """expand_mixture without writing the functions again (for to_v1, which does so once at its end)."""
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


def required_version(proto: onnx.ModelProto, domain: str, op_type: str) -> int | None:
    """The lowest version of `domain` that has every feature its nodes use (None: no such node)."""
    needs = []
    for node in proto.graph.node:
        if node.domain != domain:
            continue
        if node.op_type == MIXTURE_OP:
            needs.append(OPSET_V4 if _routed(node) else OPSET_V3)
        elif node.op_type == op_type:
            needs.append(OPSET_V2 if _is_v2(node) else 1)
    return max(needs, default=None)


def to_v1(proto: onnx.ModelProto, domain: str, op_type: str) -> int:
    """Lower every version-2 region-conv node to version 1 plus standard nodes, in place.

    A MixtureRegionConv2d is expanded first (`expand_mixture`), IHWO filters get a Transpose
    to OIHW, a bias B an Add after the node, `activation` Relu a Relu after that. For the
    kernels that implement version 1 only: the TensorRT plugin and the CUDA op. Returns how
    many of the graph's drconv nodes it changed (0: the graph was version 1 already).
    """
    mixtures = {n.output[0] for n in _nodes(proto, domain, MIXTURE_OP)}
    expanded = _expand_mixture(proto, domain, op_type, OIHW)
    g = _Graph(proto)
    lowered = 0
    nodes = list(proto.graph.node)
    del proto.graph.node[:]
    for node in nodes:
        if not (node.domain == domain and node.op_type == op_type and _is_v2(node)):
            proto.graph.node.append(node)
            continue
        lowered += node.output[0] not in mixtures  # an expanded mixture counts once
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
    if lowered or expanded:
        set_opset(proto, domain, 1)
    return _refresh_functions(proto, expanded + lowered)


def _reorder(node: onnx.NodeProto | None, op_type: str) -> bool:
    """Whether `node` is ONNX Runtime's reorder `op_type` between NCHW and NCHWc (not channels-last)."""
    if node is None or node.domain != NCHWC_DOMAIN or node.op_type != op_type:
        return False
    return not any(a.name == "channels_last" and a.i for a in node.attribute)


def _blocked_input(g: _Graph, name: str) -> str | None:
    """The NCHWc tensor that holds NCHW tensor `name` already, if the graph has one."""
    producer = g.producer.get(name)
    if _reorder(producer, "ReorderOutput"):
        return producer.input[0]
    for reader in g.consumers.get(name, []):
        if _reorder(reader, "ReorderInput"):
            return reader.output[0]
    return None


def _rename_input(g: _Graph, old: str, new: str) -> None:
    for reader in g.consumers.pop(old, []):
        for i, name in enumerate(reader.input):
            if name == old:
                reader.input[i] = new
        g.consumers.setdefault(new, []).append(reader)


def topological_sort(proto: onnx.ModelProto) -> None:
    """Order the nodes so that each follows its inputs' producers (stable otherwise)."""
    nodes = list(proto.graph.node)
    produced = {out: i for i, n in enumerate(nodes) for out in n.output}
    done: set[int] = set()
    order: list[onnx.NodeProto] = []

    def visit(i: int) -> None:
        stack = [(i, False)]
        while stack:
            j, expanded = stack.pop()
            if j in done:
                continue
            if expanded:
                done.add(j)
                order.append(nodes[j])
                continue
            stack.append((j, True))
            stack.extend(
                (produced[n], False) for n in reversed(nodes[j].input) if n in produced and produced[n] not in done
            )

    for i in range(len(nodes)):
        visit(i)
    del proto.graph.node[:]
    proto.graph.node.extend(order)


def to_nchwc(proto: onnx.ModelProto, domain: str, op_type: str, block: int) -> int:
    """Let the region-conv nodes of ONNX Runtime's optimised graph use its NCHWc layout, in place.

    ONNX Runtime's NCHWc transformer runs its Convs in blocks of `block` channels and wraps
    every node it does not know (ours) in reorders to and from NCHW. Here a node with IHWO
    filters reads X from the NCHWc tensor the graph already has for it (a ReorderOutput's
    input, or a ReorderInput of the same X) where its pads are 0, and writes Y straight into
    the NCHWc tensor a ReorderInput made of it when that is all that reads Y; the reorders
    left unread go. Returns how many nodes changed; the graph then imports version 5.
    """
    g = _Graph(proto)
    changed = 0
    for node in [n for n in proto.graph.node if n.domain == domain and n.op_type in (op_type, MIXTURE_OP)]:
        if _attribute(node, "filter_layout", OIHW) != IHWO:
            continue
        x_block = y_block = 0
        source = _blocked_input(g, node.input[0])
        if source is not None and not any(_attributes(node).get("pads", ATTRIBUTES["pads"])):
            g.consumers[node.input[0]].remove(node)
            node.input[0] = source
            g.consumers.setdefault(source, []).append(node)
            x_block = block
        y = node.output[0]
        readers = g.consumers.get(y, [])
        if readers and y not in g.outputs and all(_reorder(r, "ReorderInput") for r in readers):
            blocked = readers[0].output[0]
            for reader in readers:
                g.remove(reader)
                _rename_input(g, reader.output[0], blocked)
                g.producer.pop(reader.output[0], None)
            node.output[0] = blocked
            g.producer[blocked] = node
            g.drop_value_info(y)
            y_block = block
        for name, value in (("x_channel_block", x_block), ("y_channel_block", y_block)):
            if value:
                node.attribute.append(helper.make_attribute(name, value))
        changed += bool(x_block or y_block)
    if not changed:
        return 0
    # The ReorderOutputs no node reads any more.
    removed = True
    while removed:
        removed = False
        for node in list(proto.graph.node):
            if _reorder(node, "ReorderOutput") and g.uses(node.output[0]) == 0:
                g.remove(node)
                g.drop_value_info(node.output[0])
                removed = True
    topological_sort(proto)
    set_opset(proto, domain, max(OPSET_V5, domain_version(proto) or OPSET_V5))
    return changed
