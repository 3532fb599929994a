"""Model-local ONNX functions for drconv's nodes: one file that runs everywhere.

A custom export carries, for each drconv node type its graph uses, a `FunctionProto` of the
same domain and name whose body is the node in standard ops (the R-filter formulation:
every region's filter at every pixel, then each pixel takes its own region's output).
A runtime that has drconv's library runs the node with our kernel; one that has not runs
the body:

- ONNX Runtime looks a node up among the registered kernel schemas first, so with the
  library registered our kernel runs; without it ONNX Runtime inlines the body.
- onnx's ReferenceEvaluator and checker (shape inference) use the body.
- OpenVINO's ONNX frontend ignores model-local functions: `drconv.runtime.openvino.compile`
  inlines them when it reads a file without the extension.
- TensorRT's ONNX parser prefers a local function to a plugin (before plugin override), so
  `drconv build` strips them and `--plugin-v1` exports carry none.

How the variants are expressed. ONNX functions are keyed by (domain, name) in the
ReferenceEvaluator and in TensorRT's parser (the IR-10 `overload` field is not read there),
and at opset 18 no standard op can branch on a string attribute (Equal takes strings from
opset 19, and the ReferenceEvaluator fails on it). So each file's body is written for the
variant its nodes share: `filter_layout`, `activation` and, for a mixture, whether it routes
itself are fixed in the body, and so is the kernel size where the file says it (the taps are
then strided slices, or the input itself for a 1x1 conv at stride 1 without padding);
strides, pads and dilations are attribute references (with the contract's defaults); the
bias B and the routing bias are optional inputs that the body reads through Gemm's optional
C, so nodes with and without them share a body. Where one file's nodes differ (never in
drconv's own exports of the built-in models), `attach` first brings them to one variant:
IHWO filters (a Transpose, or a permuted constant), the ReLU as its own node, the routing as
standard nodes. Each function records its variant in its `metadata_props`; `check` says
which node a function does not fit.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from drconv.contract import ATTRIBUTES, DOMAIN, MIXTURE, REGION_CONV, MixtureInput, RegionConvInput
from drconv.errors import DrconvError
from drconv.export import rewrite

__all__ = ["VARIANT_KEY", "Variant", "attach", "check", "inline", "present", "strip", "variant"]

# The metadata key under which each function records the variant its body implements.
VARIANT_KEY = "drconv.variant"
_GEOMETRY = ("strides", "pads", "dilations")
_NODE_TYPES = {REGION_CONV.name: REGION_CONV, MIXTURE.name: MIXTURE}


@dataclass(frozen=True)
class Variant:
    """What a body fixes: the filters' layout, the ReLU, (mixture) whether the node routes itself;
    and where the file says so, every node's kernel size (the taps are then slices) and whether
    every node is a 1x1 conv at stride 1 without padding (the taps are then the input itself)."""

    layout: str
    relu: bool
    routed: bool = False
    kernel: tuple[int, int] | None = None
    pointwise: bool = False

    def __str__(self) -> str:
        kernel = "x".join(map(str, self.kernel)) if self.kernel else "?"
        return (
            f"filter_layout={self.layout};activation={'Relu' if self.relu else ''};routed={int(self.routed)}"
            f";kernel={kernel};pointwise={int(self.pointwise)}"
        )

    @classmethod
    def parse(cls, text: str) -> Variant:
        """The variant a function's metadata names (str's inverse)."""
        fields = dict(item.split("=", 1) for item in text.split(";"))
        kernel = tuple(int(k) for k in fields["kernel"].split("x")) if fields.get("kernel", "?") != "?" else None
        return cls(
            fields["filter_layout"],
            fields["activation"] == "Relu",
            fields["routed"] == "1",
            kernel,  # type: ignore[arg-type]
            fields.get("pointwise") == "1",
        )


def _attribute(node: onnx.NodeProto, name: str) -> str:
    """A string attribute of the node, or the contract's default."""
    return rewrite._attribute(node, name, str(ATTRIBUTES[name]))


def _input(node: onnx.NodeProto, index: int) -> str:
    return node.input[index] if len(node.input) > index else ""


def variant(node: onnx.NodeProto) -> Variant:
    """The variant of a drconv node that its attributes and inputs say (kernel size unknown)."""
    routed = node.op_type == MIXTURE.name and bool(_input(node, MixtureInput.ROUTING))
    return Variant(_attribute(node, "filter_layout"), _attribute(node, "activation") == "Relu", routed)


def _static_dims(proto: onnx.ModelProto) -> dict[str, list[int | None]]:
    """Every tensor's dims where the file says them (initializers, inputs, value_info)."""
    dims: dict[str, list[int | None]] = {t.name: list(t.dims) for t in proto.graph.initializer}
    for value in [*proto.graph.input, *proto.graph.value_info]:
        if value.type.HasField("tensor_type") and value.type.tensor_type.HasField("shape"):
            shape = value.type.tensor_type.shape.dim
            dims.setdefault(value.name, [d.dim_value if d.HasField("dim_value") else None for d in shape])
    return dims


def _kernel(node: onnx.NodeProto, dims: dict[str, list[int | None]]) -> tuple[int, int] | None:
    """The node's kernel size (kh, kw) where the file says it: a constant basis, or the filters'
    declared shape; None where it does not."""
    ihwo = _attribute(node, "filter_layout") == rewrite.IHWO
    if node.op_type == MIXTURE.name:  # basis [M, C_in, kh, kw, C_out] or [M, C_out, C_in, kh, kw]
        shape, taps = dims.get(_input(node, MixtureInput.BASIS)), (2, 4) if ihwo else (3, 5)
    else:  # filters [N, R, C_in, kh, kw, C_out] or [N, R, C_out, C_in, kh, kw]
        shape, taps = dims.get(_input(node, RegionConvInput.FILTERS)), (3, 5) if ihwo else (4, 6)
    if shape is None or len(shape) != taps[1] + (1 if ihwo else 0) or None in shape[taps[0] : taps[1]]:
        return None
    return int(shape[taps[0]]), int(shape[taps[0] + 1])


def _pointwise(node: onnx.NodeProto, dims: dict[str, list[int | None]]) -> bool:
    """Whether the node is, as far as the file says, a 1x1 conv at stride 1 without padding."""
    geometry = {a.name: list(a.ints) for a in node.attribute if a.name in ("strides", "pads")}
    if geometry.get("strides", [1, 1]) != [1, 1] or geometry.get("pads", [0, 0, 0, 0]) != [0, 0, 0, 0]:
        return False
    return _kernel(node, dims) == (1, 1)


def _form(nodes: list[onnx.NodeProto], dims: dict[str, list[int | None]]) -> Variant:
    """The variant one body serves for all `nodes` (which share their attributes' variant)."""
    kernels = {_kernel(n, dims) for n in nodes}
    kernel = kernels.pop() if len(kernels) == 1 else None
    pointwise = all(_pointwise(n, dims) for n in nodes)
    return dataclasses.replace(variant(nodes[0]), kernel=kernel, pointwise=pointwise)


class _Body:
    """Standard-op nodes with fresh local names, built up one op at a time."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []

    def op(self, op_type: str, *inputs: str, **attributes) -> str:
        output = f"t{len(self.nodes)}_{op_type}"
        # Named, so that an inlined node is named after its call (drconv verify shows the ArgMax's).
        self.nodes.append(helper.make_node(op_type, list(inputs), [output], name=output, **attributes))
        return output

    def ints(self, *values: int) -> str:
        return self.op("Constant", value_ints=list(values))

    def attribute(self, name: str) -> str:
        """A Constant holding the calling node's ints attribute `name`."""
        output = self.op("Constant")
        reference = onnx.AttributeProto(name="value_ints", ref_attr_name=name, type=onnx.AttributeProto.INTS)
        self.nodes[-1].attribute.append(reference)
        return output

    def shape(self, tensor: str, start: int, end: int | None = None) -> str:
        """Dims [start, end) of a tensor's shape, as a 1-D int64 tensor (one Shape node, which
        ONNX Runtime folds where those dims are static)."""
        return self.op("Shape", tensor, start=start, end=start + 1 if end is None else end)

    def dim(self, values: str, index: int) -> str:
        """Element `index` of a 1-D int64 tensor (a shape, an ints attribute), as a 1-D tensor."""
        return self.op("Slice", values, self.ints(index), self.ints(index + 1))

    def scalar(self, tensor: str) -> str:
        return self.op("Squeeze", tensor, self.ints(0))


def _first_argmax(b: _Body, guide: str) -> str:
    """[N, 1, Ho, Wo]: the region of every pixel by torch.argmax's rule.

    Ties go to the lowest index (ArgMax's first occurrence); ONNX leaves ArgMax over NaN
    open, so a pixel with a NaN takes the first NaN's region separately.
    """
    nan = b.op("Cast", b.op("IsNaN", guide), to=onnx.TensorProto.FLOAT)
    first_nan = b.op("ArgMax", nan, axis=1, keepdims=1)
    any_nan = b.op("Cast", b.op("ReduceMax", nan, b.ints(1), keepdims=1), to=onnx.TensorProto.BOOL)
    return b.op("Where", any_nan, first_nan, b.op("ArgMax", guide, axis=1, keepdims=1))


def _taps(b: _Body, out: str, kernel: str, stride: str, dilation: str) -> str:
    """[k, out]: the padded input index that tap i of output position p reads, p*stride + i*dilation."""
    zero, one = b.ints(0), b.ints(1)
    positions = b.op("Mul", b.op("Range", b.scalar(zero), b.scalar(out), b.scalar(one)), stride)
    taps = b.op("Mul", b.op("Range", b.scalar(zero), b.scalar(kernel), b.scalar(one)), dilation)
    return b.op("Add", b.op("Unsqueeze", taps, one), b.op("Unsqueeze", positions, zero))


def _patches(b: _Body, x: str, filters: str, guide: str, form: Variant) -> str:
    """[N, C_in*kh*kw, P]: every tap of every output pixel, in the order of a filter's (C_in, kh, kw).

    The input itself for a 1x1 conv at stride 1 without padding; one strided Slice of the
    padded input per tap where the kernel size is known; else one Gather of all taps with a
    computed index.
    """
    if form.pointwise:
        return b.op("Reshape", x, b.ints(0, 0, -1))
    strides, pads, dilations = (b.attribute(name) for name in _GEOMETRY)
    zeros = b.ints(0, 0)
    begin, end = b.op("Slice", pads, b.ints(0), b.ints(2)), b.op("Slice", pads, b.ints(2), b.ints(4))
    padded = b.op("Pad", x, b.op("Concat", zeros, begin, zeros, end, axis=0))
    if form.kernel is not None:
        out = b.shape(guide, 2, 4)
        span = b.op("Add", b.op("Mul", b.op("Sub", out, b.ints(1)), strides), b.ints(1))  # (out - 1) * s + 1
        taps = []
        for i in range(form.kernel[0]):
            for j in range(form.kernel[1]):
                start = b.op("Mul", b.ints(i, j), dilations)
                tap = b.op("Slice", padded, start, b.op("Add", start, span), b.ints(2, 3), strides)
                taps.append(b.op("Unsqueeze", tap, b.ints(2)))
        stacked = b.op("Concat", *taps, axis=2)  # [N, C_in, kh*kw, Ho, Wo]
        return b.op("Reshape", stacked, b.op("Concat", b.ints(0, -1), b.op("ReduceProd", out, keepdims=1), axis=0))
    taps_at = (3, 5) if form.layout == rewrite.IHWO else (4, 6)
    kernel_h, kernel_w = b.shape(filters, taps_at[0]), b.shape(filters, taps_at[0] + 1)
    out_h, out_w = b.shape(guide, 2), b.shape(guide, 3)
    rows = _taps(b, out_h, kernel_h, b.dim(strides, 0), b.dim(dilations, 0))  # [kh, Ho]
    cols = _taps(b, out_w, kernel_w, b.dim(strides, 1), b.dim(dilations, 1))  # [kw, Wo]
    # Flat index into the padded map of tap (i, j) at output (p, q): [kh, kw, Ho, Wo].
    flat = b.op(
        "Add",
        b.op("Mul", b.op("Unsqueeze", rows, b.ints(1, 3)), b.shape(padded, 3)),
        b.op("Unsqueeze", cols, b.ints(0, 2)),
    )
    patches = b.op("Gather", b.op("Reshape", padded, b.ints(0, 0, -1)), flat, axis=2)  # [N, C_in, kh, kw, Ho, Wo]
    return b.op("Reshape", patches, b.op("Concat", b.ints(0, -1), b.op("Mul", out_h, out_w), axis=0))


def _region_conv(b: _Body, x: str, filters: str, guide: str, bias: str, form: Variant, c_out: str | None = None) -> str:
    """The region conv's standard-op body: Y [N, C_out, Ho, Wo] from X, filters and guide.

    `c_out`: C_out as a 1-D tensor where the caller has it from a constant (ONNX Runtime then
    folds the shapes that use it); else read from the filters.
    """
    ihwo = form.layout == rewrite.IHWO
    if c_out is None:
        c_out = b.shape(filters, 5 if ihwo else 2)
    patches = _patches(b, x, filters, guide, form)  # [N, C_in*kh*kw, P]
    if ihwo:  # [N, R, C_in, kh, kw, C_out] -> [N, R, C_out, C_in*kh*kw]
        rows_first = b.op("Reshape", filters, b.op("Concat", b.ints(0, 0, -1), c_out, axis=0))
        matrix = b.op("Transpose", rows_first, perm=[0, 1, 3, 2])
    else:
        matrix = b.op("Reshape", filters, b.ints(0, 0, 0, -1))
    every = b.op("MatMul", matrix, b.op("Unsqueeze", patches, b.ints(1)))  # [N, R, C_out, P]
    region = b.op("Reshape", _first_argmax(b, guide), b.ints(0, 1, 1, -1))  # [N, 1, 1, P]
    region = b.op("Expand", region, b.op("Concat", b.ints(1, 1), c_out, b.ints(1), axis=0))
    # Each pixel gathers its own region's output: no 0 * Inf from the other regions.
    chosen = b.op("GatherElements", every, region, axis=1)  # [N, 1, C_out, P]
    y = b.op("Reshape", chosen, b.op("Concat", b.ints(0, -1), b.shape(guide, 2, 4), axis=0))
    if bias:
        y = _add_bias(b, y, bias, c_out)
    return b.op("Relu", y) if form.relu else y


def _add_bias(b: _Body, y: str, bias: str, c_out: str) -> str:
    """Y + B over the channels; B may be absent (Gemm's optional C gives B, or zeros)."""
    one = b.op("CastLike", b.op("Constant", value_float=1.0), y)
    ones = b.op("Reshape", one, b.ints(1, 1))
    zeros = b.op("CastLike", b.op("ConstantOfShape", b.op("Concat", b.ints(1), c_out, axis=0)), y)
    row = b.op("Gemm", ones, zeros, bias)  # [1, C_out]: B where given, else 0
    return b.op("Add", y, b.op("Reshape", row, b.ints(1, -1, 1, 1)))


def _mixture(b: _Body, form: Variant, inputs: list[str]) -> str:
    """The mixture's body: its coefficients (given, or routed from X), filters mixed from the basis.

    An IHWO basis is transposed to OIHW first: it is a constant, so ONNX Runtime does that once
    at session creation, and the mixed filters need no transpose at every call.
    """
    x, guide = "X", "guide"
    named = dict.fromkeys(MIXTURE.inputs, "") | {name: name for name in inputs}
    basis = b.op("Transpose", "basis", perm=[0, 4, 1, 2, 3]) if form.layout == rewrite.IHWO else "basis"
    bases = b.shape(basis, 0)
    if form.routed:
        mean = b.op("ReduceMean", x, b.ints(2, 3), keepdims=0)  # [N, C_in]
        linear = b.op("Gemm", mean, "routing", *([named["routing_bias"]] if named["routing_bias"] else []))
        # A routed node gives no coefficients: Clip without its min is the identity. The input
        # is read only so that every declared input is used: onnxslim (onnx-graphsurgeon's
        # cleanup) drops a function's unused inputs, which shifts the positional ones after it.
        weights = b.op("Clip", b.op("Sigmoid", linear), named["coefficients"])
        coefficients = b.op("Reshape", weights, b.op("Concat", b.ints(0, -1), bases, axis=0))  # [N, R, M]
    else:
        coefficients = "coefficients"
    mixed = b.op("MatMul", coefficients, b.op("Reshape", basis, b.op("Concat", bases, b.ints(-1), axis=0)))
    filters = b.op("Reshape", mixed, b.op("Concat", b.ints(0, 0), b.shape(basis, 1, 5), axis=0))  # OIHW
    oihw = dataclasses.replace(form, layout=rewrite.OIHW)
    return _region_conv(b, x, filters, guide, named["B"], oihw, c_out=b.shape(basis, 1))


def _function(name: str, form: Variant, arity: int, opset: int) -> onnx.FunctionProto:
    """The function for nodes of `form` with at most `arity` inputs (the ReferenceEvaluator
    wants a node to give every input its function declares: `attach` pads them with "")."""
    node_type = _NODE_TYPES[name]
    inputs = list(node_type.inputs[:arity])
    b = _Body()
    if name == MIXTURE.name:
        y = _mixture(b, form, inputs)
    else:
        y = _region_conv(b, "X", "filters", "guide", "B" if "B" in inputs else "", form)
    b.nodes.append(helper.make_node("Identity", [y], ["Y"]))
    function = helper.make_function(
        DOMAIN,
        name,
        inputs,
        ["Y"],
        b.nodes,
        [helper.make_opsetid("", opset)],
        doc_string=f"drconv::{name} in standard ops, for nodes with {form} (docs/region_conv_op.md)",
    )
    function.attribute_proto.extend(helper.make_attribute(key, ATTRIBUTES[key]) for key in _GEOMETRY)
    function.metadata_props.append(onnx.StringStringEntryProto(key=VARIANT_KEY, value=str(form)))
    return function


def strip(proto: onnx.ModelProto) -> int:
    """Remove the drconv functions from a model, and the trailing empty inputs `attach` gave
    its nodes, in place; returns how many functions."""
    ours = [f for f in proto.functions if f.domain == DOMAIN]
    for function in ours:
        proto.functions.remove(function)
    for node in proto.graph.node:
        if node.domain == DOMAIN:
            del node.input[_arity(node) :]
    return len(ours)


def present(proto: onnx.ModelProto) -> bool:
    """Whether a model carries drconv functions."""
    return any(f.domain == DOMAIN for f in proto.functions)


def _default_opset(proto: onnx.ModelProto) -> int:
    return next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))


def attach(proto: onnx.ModelProto) -> int:
    """Give a model one function per drconv node type it uses (replacing any it had), in place.

    Nodes of one type that differ in variant are first brought to one (module docstring).
    Returns how many functions it wrote.
    """
    strip(proto)
    opset = _default_opset(proto)
    written = 0
    for name in _NODE_TYPES:
        nodes = [n for n in proto.graph.node if n.domain == DOMAIN and n.op_type == name]
        if not nodes:
            continue
        if len({variant(n) for n in nodes}) > 1:
            _uniform(proto, name)
            nodes = [n for n in proto.graph.node if n.domain == DOMAIN and n.op_type == name]
        arity = max(_arity(n) for n in nodes)
        for node in nodes:
            _complete(node, arity)
        proto.functions.append(_function(name, _form(nodes, _static_dims(proto)), arity, opset))
        written += 1
    if written and proto.ir_version < 10:
        proto.ir_version = 10  # metadata_props on a function
    return written


def _complete(node: onnx.NodeProto, arity: int) -> None:
    """Give a node every input and attribute its function reads: absent inputs as "", absent
    geometry as the contract's defaults (the function's defaults too, but onnx's
    ReferenceEvaluator reads only the node's own)."""
    node.input.extend([""] * (arity - len(node.input)))
    given = {a.name for a in node.attribute}
    node.attribute.extend(helper.make_attribute(key, ATTRIBUTES[key]) for key in _GEOMETRY if key not in given)


def _arity(node: onnx.NodeProto) -> int:
    """How many inputs a node gives, trailing absent ones left out."""
    return len(rewrite._given(node.input))


def check(proto: onnx.ModelProto, where: str) -> None:
    """Refuse (DrconvError) a model whose drconv functions do not fit all its nodes."""
    declared = {}
    for function in proto.functions:
        if function.domain == DOMAIN:
            props = {p.key: p.value for p in function.metadata_props}
            if VARIANT_KEY in props:
                declared[function.name] = Variant.parse(props[VARIANT_KEY])
    dims = _static_dims(proto)
    for node in proto.graph.node:
        form = declared.get(node.op_type) if node.domain == DOMAIN else None
        if form is None:
            continue
        fits = dataclasses.replace(form, kernel=None, pointwise=False) == variant(node)
        fits = fits and (form.kernel is None or _kernel(node, dims) == form.kernel)
        if not (fits and (not form.pointwise or _pointwise(node, dims))):
            raise DrconvError(
                f"{where}: node {node.name or node.output[0]} ({variant(node)}) does not fit the file's "
                f"{node.op_type} function ({form}): write the functions again with "
                "drconv.export.functions.attach"
            )


def inline(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The model with every drconv node replaced by its function's body: standard ops only."""
    import onnx.inliner

    if not any(n.domain == DOMAIN for n in proto.graph.node):
        return proto
    if not present(proto):
        proto = onnx.ModelProto.FromString(proto.SerializeToString())
        attach(proto)
    inlined = onnx.inliner.inline_local_functions(proto)
    strip(inlined)
    kept = [o for o in inlined.opset_import if o.domain != DOMAIN]
    del inlined.opset_import[:]
    inlined.opset_import.extend(kept)
    return inlined


# Bringing one node type's nodes to one variant ------------------------------------------


def _uniform(proto: onnx.ModelProto, name: str) -> None:
    nodes = [n for n in proto.graph.node if n.domain == DOMAIN and n.op_type == name]
    forms = {variant(n) for n in nodes}
    if len({f.routed for f in forms}) > 1:
        rewrite.expand_routing(proto, DOMAIN)
    if len({f.relu for f in forms}) > 1:
        _relu_apart(proto, name)
    if len({f.layout for f in forms}) > 1:
        _all_ihwo(proto, name)


def _relu_apart(proto: onnx.ModelProto, name: str) -> None:
    """Each node of type `name` with activation Relu: the ReLU as a node after it."""
    nodes = list(proto.graph.node)
    del proto.graph.node[:]
    for node in nodes:
        relu = node.domain == DOMAIN and node.op_type == name and variant(node).relu
        output = node.output[0]
        if relu:
            node.output[0] = f"{output}.before_relu"
            rewrite._set_attribute(node, "activation", None)
        proto.graph.node.append(node)  # a copy: the node is finished first
        if relu:
            proto.graph.node.append(helper.make_node("Relu", [node.output[0]], [output]))


def _all_ihwo(proto: onnx.ModelProto, name: str) -> None:
    """Each OIHW node of type `name` to IHWO: a constant basis permuted, other filters through a Transpose."""
    initializers = {t.name: t for t in proto.graph.initializer}
    index = MixtureInput.BASIS if name == MIXTURE.name else RegionConvInput.FILTERS
    perm = [0, 2, 3, 4, 1] if name == MIXTURE.name else rewrite.TO_IHWO
    nodes = list(proto.graph.node)
    del proto.graph.node[:]
    for node in nodes:
        if node.domain == DOMAIN and node.op_type == name and variant(node).layout != rewrite.IHWO:
            source = node.input[index]
            if source in initializers and name == MIXTURE.name:
                permuted = np.ascontiguousarray(onnx.numpy_helper.to_array(initializers[source]).transpose(perm))
                tensor = onnx.numpy_helper.from_array(permuted, f"{source}.ihwo")
                proto.graph.initializer.append(tensor)
                node.input[index] = tensor.name
            else:
                node.input[index] = f"{source}.ihwo"
                proto.graph.node.append(helper.make_node("Transpose", [source], [node.input[index]], perm=perm))
            rewrite.set_layout(node, rewrite.IHWO)
        proto.graph.node.append(node)
