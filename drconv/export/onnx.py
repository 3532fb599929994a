"""Export a model with DRConv layers to ONNX, in one of two modes.

custom:   every `drconv::region_conv` becomes one `drconv::RegionConv2d` node
          (docs/region_conv_op.md), run by our libraries, and the file carries each node
          type's standard-op body as a model-local function (`drconv.export.functions`),
          which runtimes without our library run instead.
portable: the same file with those functions inlined: standard ONNX ops only (the
          R-filter formulation), so any runtime runs it, at R times the cost.

The model goes through torch.export and the torch.export-based ONNX exporter. The region
conv is rewritten before translation by `run_decompositions` to `torch.onnx.ops.symbolic`
(its output dtype and symbolic shape come from the trace, so the graph carries them).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import onnx
import torch

import drconv.ops  # noqa: F401  (registers torch.ops.drconv.region_conv, which the graphs trace)
from drconv import contract, defaults, onnx_file
from drconv._atomic import atomic_path, check_writable
from drconv.errors import DrconvError, UsageError
from drconv.export import functions, rewrite

# The node's names, kept here for code written against drconv.export.onnx: drconv.contract is their home.
CUSTOM_DOMAIN, CUSTOM_OP, PLUGIN_VERSION = contract.DOMAIN, contract.REGION_CONV.name, contract.PLUGIN_VERSION

__all__ = [
    "CUSTOM_DOMAIN",
    "CUSTOM_OP",
    "MODES",
    "PLUGIN_VERSION",
    "describe",
    "region_conv_graph",
    "to_onnx",
]

MODES = ("custom", "portable")
MIN_OPSET = defaults.ONNX_OPSET
Mode = Literal["custom", "portable"]


def _custom_node(x, filters, guide, stride, padding, dilation):
    c_out = filters.shape[2]
    return torch.onnx.ops.symbolic(
        f"{CUSTOM_DOMAIN}::{CUSTOM_OP}",
        (x, filters, guide),
        {
            "strides": [int(v) for v in stride],
            "pads": [int(padding[0]), int(padding[1]), int(padding[0]), int(padding[1])],
            "dilations": [int(v) for v in dilation],
            "filter_layout": rewrite.OIHW,  # to_onnx switches to IHWO where that is free
            # TensorRT's ONNX parser finds a plugin by op_type and plugin_version.
            "plugin_version": PLUGIN_VERSION,
        },
        dtype=x.dtype,
        shape=(x.shape[0], c_out, guide.shape[2], guide.shape[3]),
        version=contract.REGION_CONV.since,
    )


def _pool_matrix(size, out: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """[out, size]: row i averages the cells of adaptive-pooling window i (PyTorch's window bounds).

    Window i is [floor(i * size / out), ceil((i + 1) * size / out)); for an integer cell
    index that is i * size < (pos + 1) * out and pos * out < (i + 1) * size: no division,
    so the exported graph has a dozen small nodes per matrix, not sixty (ONNX Runtime pays
    a few microseconds for each, every call).
    """
    pos = torch.arange(size, device=device)
    i = torch.arange(out, device=device)[:, None]
    inside = ((i * size < (pos + 1) * out) & (pos * out < (i + 1) * size)).to(dtype)
    return inside / inside.sum(1, keepdim=True)


def adaptive_avg_pool2d(x, output_size):
    """adaptive_avg_pool2d as two MatMuls with averaging matrices built from the input's size.

    The stock decomposition indexes with windows computed for the traced size, so the
    exported graph fails at any other height or width; this one follows the input. A 1 x 1
    output is a plain mean (one ReduceMean).
    """
    out_h, out_w = (output_size, output_size) if isinstance(output_size, int) else output_size
    out_h = x.shape[-2] if out_h is None else out_h
    out_w = x.shape[-1] if out_w is None else out_w
    if out_h == 1 and out_w == 1:
        return x.mean((-2, -1), keepdim=True)
    rows = _pool_matrix(x.shape[-2], out_h, x.dtype, x.device)
    cols = _pool_matrix(x.shape[-1], out_w, x.dtype, x.device)
    return torch.matmul(torch.matmul(rows, x), cols.transpose(0, 1))


def _check_args(model: torch.nn.Module, sample_input: torch.Tensor, mode: str, opset: int) -> None:
    if not isinstance(model, torch.nn.Module):
        raise DrconvError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(sample_input, torch.Tensor) or sample_input.dim() != 4:
        shape = tuple(sample_input.shape) if isinstance(sample_input, torch.Tensor) else type(sample_input).__name__
        raise DrconvError(f"sample_input must be a 4-D tensor [N, C, H, W], got {shape}")
    if mode not in MODES:
        raise DrconvError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    newest = onnx.defs.onnx_opset_version()
    if not isinstance(opset, int) or not MIN_OPSET <= opset <= newest:
        raise UsageError(
            f"opset {opset!r} is not supported: choose {MIN_OPSET} to {newest} "
            f"(the newest the installed onnx {onnx.__version__} knows)"
        )


@contextlib.contextmanager
def _quiet(*loggers: str) -> Iterator[None]:
    """The exporters' logs and warnings off the user's screen (what fails is checked after)."""
    logs = [logging.getLogger(name) for name in loggers]
    levels = [log.level for log in logs]
    for log in logs:
        log.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for log, level in zip(logs, levels, strict=True):
            log.setLevel(level)


@contextlib.contextmanager
def _mixture_nodes(model: torch.nn.Module, layout: str) -> Iterator[None]:
    """While it lasts, each MixtureDRConv2d traces as one MixtureRegionConv2d node (routed,
    version 4) whose basis, routing and routing bias are constants, its filters in `layout`."""
    from drconv.nn import MixtureDRConv2d

    layers = [m for m in model.modules() if isinstance(m, MixtureDRConv2d)]
    for layer in layers:
        for name, value in zip(layer.NODE_BUFFERS, layer.node_inputs(layout), strict=True):
            layer.register_buffer(name, value, persistent=False)  # named initializers, not in state_dict
        layer._node_layout = layout
    try:
        yield
    finally:
        for layer in layers:
            for name in layer.NODE_BUFFERS:
                del layer._buffers[name]
            layer._node_layout = None


def _trace(model: torch.nn.Module, sample: torch.Tensor, dynamic: bool) -> torch.export.ExportedProgram:
    if dynamic and sample.shape[0] == 1:
        # torch.export specializes a size of 1; a batch of 2 keeps the axis symbolic.
        sample = sample.expand(2, -1, -1, -1).contiguous()
    auto = torch.export.Dim.AUTO
    shapes = ({0: auto, 2: auto, 3: auto},) if dynamic else None
    try:
        return torch.export.export(model, (sample,), dynamic_shapes=shapes, strict=False)
    except Exception as exc:  # torch.export raises many types; the user needs the first line
        cause = _eager_error(model, sample) or exc  # the model's own words, with sizes, not trace symbols
        first = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        raise DrconvError(f"torch.export could not trace the model on input {tuple(sample.shape)}: {first}") from exc


def _eager_error(model: torch.nn.Module, sample: torch.Tensor) -> Exception | None:
    """What the model raises when run on `sample` outside the tracer, if anything."""
    try:
        with torch.no_grad():
            model(sample)
    except Exception as exc:
        return exc
    return None


def _rename_dims(proto: onnx.ModelProto, names: dict[str, str]) -> None:
    """Give the symbolic sizes readable names (batch, height, width) in every shape."""
    if not names:
        return
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, names)) + r")\b")
    values = [*proto.graph.input, *proto.graph.output, *proto.graph.value_info]
    for value in values:
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_param"):
                dim.dim_param = pattern.sub(lambda m: names[m.group(1)], dim.dim_param)


def _input_symbols(program: torch.export.ExportedProgram) -> dict[str, str]:
    user_inputs = [
        spec.arg.name
        for spec in program.graph_signature.input_specs
        if spec.kind == torch.export.graph_signature.InputKind.USER_INPUT
    ]
    node = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name == user_inputs[0])
    names = {}
    for axis, label in ((0, "batch"), (2, "height"), (3, "width")):
        size = node.meta["val"].shape[axis]
        if isinstance(size, torch.SymInt) and re.fullmatch(r"s\d+", str(size)):
            names[str(size)] = label
    return names


def _translate(program: torch.export.ExportedProgram, opset: int, input_names: list[str]) -> onnx.ModelProto:
    """An exported program to ONNX, each region conv as our node."""
    # Their notes (e.g. "torchvision is not installed", onnxscript's version-converter fallback
    # with a traceback) are not for our users; a conversion that fails is checked below.
    with _quiet("torch.onnx", "onnxscript"), torch.no_grad():
        program = program.run_decompositions(
            {
                torch.ops.drconv.region_conv.default: _custom_node,
                torch.ops.aten.adaptive_avg_pool2d.default: adaptive_avg_pool2d,
            }
        )
        onnx_program = torch.onnx.export(
            program,
            dynamo=True,
            opset_version=opset,
            input_names=input_names,
            output_names=["output"],
            optimize=True,
            verbose=False,
        )
    proto = onnx_program.model_proto
    reached = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if reached != opset:
        raise DrconvError(
            f"the exporter could not convert the model to opset {opset} (it stays at opset {reached}); "
            f"export with --opset {reached}"
        )
    return proto


class _RegionConvOnly(torch.nn.Module):
    def __init__(self, stride, padding, dilation) -> None:
        super().__init__()
        self.conv = (list(stride), list(padding), list(dilation))

    def forward(self, x, filters, guide):
        return torch.ops.drconv.region_conv(x, filters, guide, *self.conv)


def region_conv_graph(
    x: torch.Tensor,
    filters: torch.Tensor,
    guide: torch.Tensor,
    stride=(1, 1),
    padding=(1, 1),
    dilation=(1, 1),
    mode: Mode = "custom",
    opset: int = MIN_OPSET,
    layout: str = rewrite.OIHW,
) -> onnx.ModelProto:
    """One region conv alone, static shapes, inputs X, filters, guide (for benchmarks and tests).

    Custom mode gives the single RegionConv2d node (with its function); portable that function
    inlined. Filters and guide stay graph inputs, so nothing is folded away at session
    creation. `filters` is OIHW; with layout "IHWO" the graph's filters input is that tensor
    permuted by `rewrite.TO_IHWO`.
    """
    if mode not in MODES:
        raise DrconvError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    module = _RegionConvOnly(stride, padding, dilation)
    with torch.no_grad(), _quiet("torch._export", "torch.export"):
        program = torch.export.export(module, (x, filters, guide), strict=False)
    proto = _translate(program, opset, ["X", "filters", "guide"])
    if layout == rewrite.IHWO:
        for node in proto.graph.node:
            if node.domain == CUSTOM_DOMAIN:
                rewrite.set_layout(node, layout)
        dims = next(i for i in proto.graph.input if i.name == "filters").type.tensor_type.shape.dim
        values = [d.dim_value for d in dims]
        for dim, axis in zip(dims, rewrite.TO_IHWO, strict=True):
            dim.dim_value = values[axis]
        rewrite.set_opset(proto, CUSTOM_DOMAIN, rewrite.required_version(proto, CUSTOM_DOMAIN, CUSTOM_OP))
    return _finish(proto, mode)


def _finish(proto: onnx.ModelProto, mode: str, node_version: int | None = None) -> onnx.ModelProto:
    """The custom graph with its functions (none for TensorRT's tools: version 1), or inlined
    (portable); checked in full (onnx's shape inference runs the functions' bodies)."""
    if node_version == 1:
        # TensorRT's ONNX parser imports a local function before it tries a plugin.
        rewrite.to_v1(proto, CUSTOM_DOMAIN, CUSTOM_OP)
    else:
        functions.attach(proto)
    if mode == "portable":
        proto = functions.inline(proto)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise DrconvError(f"the exported graph failed onnx.checker: {str(exc).strip().splitlines()[0]}") from exc
    return proto


def to_onnx(
    model: torch.nn.Module,
    sample_input: torch.Tensor,
    path: str | os.PathLike,
    mode: Mode = "custom",
    dynamic: bool = True,
    opset: int = MIN_OPSET,
    layout: str = rewrite.IHWO,
    fuse: bool = True,
    node_version: int | None = None,
) -> Path:
    """Export `model` to ONNX at `path` and return the path.

    Args:
        model: any nn.Module whose forward takes one image batch. In custom mode a
            `DRConv2d` (or a direct `drconv.region_conv` call) becomes a `drconv::RegionConv2d`
            node, a `MixtureDRConv2d` one `drconv::MixtureRegionConv2d` node that mixes its
            filters and computes its routing itself.
        sample_input: an example input [N, C, H, W] on the model's device.
        mode: "custom" (one node per region conv, each node type's standard-op body beside
            it as a model-local function) or "portable" (those functions inlined: standard
            ops only).
        dynamic: batch, height and width symbolic (default); False fixes them to the sample's.
        opset: the default-domain opset (>= 18).
        layout: the custom nodes' filter_layout: "IHWO" (default: a mixture's basis, and a
            1x1 DRConv2d's filters by permuting its generator's rows, for free; the CPU kernel
            then reads them without packing) or "OIHW".
        fuse: fold the BatchNormalization (and ReLU) after each region conv into its node
            (where the filters come from constants, as in both layers at 1x1 and the mixture
            at any size).
        node_version: None for the lowest version of the drconv domain with what the nodes use
            (docs/region_conv_op.md); 1 for version 1 only (RegionConv2d, OIHW, standard ops
            around it, and no functions: what the TensorRT plugin implements, for tools that
            load it themselves; TensorRT's parser would import a function before the plugin).

    The model is checked with onnx.checker (full_check) and written to a temporary file that is then
    renamed, so a failure leaves nothing at `path`.

    Raises:
        DrconvError: on bad arguments, a model torch.export cannot trace, or an unwritable path.
    """
    _check_args(model, sample_input, mode, opset)
    if node_version not in (None, 1):
        raise DrconvError(f"node_version must be None (the latest a graph needs) or 1, got {node_version!r}")
    if layout not in rewrite.FILTER_LAYOUTS:
        raise DrconvError(f"layout must be one of {', '.join(rewrite.FILTER_LAYOUTS)}, got {layout!r}")
    path = Path(path)
    check_writable(path, "-o")  # before the long work

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), _quiet("torch._export", "torch.export"):  # e.g. "0/1 specialized"
            with _mixture_nodes(model, layout):
                program = _trace(model, sample_input, dynamic)
        proto = _translate(program, opset, ["input"])
    finally:
        model.train(was_training)
    _rename_dims(proto, _input_symbols(program))
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        raise DrconvError(f"the exported graph failed onnx.checker: {str(exc).splitlines()[0]}") from exc
    if fuse:
        rewrite.fuse_epilogue(proto, CUSTOM_DOMAIN, CUSTOM_OP)
    if layout == rewrite.IHWO:
        rewrite.to_ihwo(proto, CUSTOM_DOMAIN, CUSTOM_OP)
    # The lowest version with what the nodes use, so that an older library refuses the
    # graph rather than misread it (the tracer writes each node's own version).
    needed = rewrite.required_version(proto, CUSTOM_DOMAIN, CUSTOM_OP)
    if needed is not None:
        rewrite.set_opset(proto, CUSTOM_DOMAIN, needed)
    proto = _finish(proto, mode, node_version)
    with atomic_path(path, "-o") as tmp:
        onnx.save(proto, str(tmp))
    return path


def _shape(value: onnx.ValueInfoProto) -> list[int | str]:
    dims = value.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]


def describe(path: str | os.PathLike) -> dict:
    """A one-screen summary of an ONNX file: nodes by op type, custom nodes, size, inputs and outputs."""
    path = Path(path)
    proto = onnx_file.load(path)
    ops = Counter((n.domain or "ai.onnx", n.op_type) for n in proto.graph.node)
    custom = [n for n in proto.graph.node if n.domain == CUSTOM_DOMAIN]
    return {
        "path": str(path),
        "bytes": path.stat().st_size,
        "opsets": {o.domain or "ai.onnx": o.version for o in proto.opset_import},
        "nodes": sum(ops.values()),
        "ops": {f"{d}::{t}" if d != "ai.onnx" else t: c for (d, t), c in ops.most_common()},
        "custom_nodes": [
            {"name": n.name, **{a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}} for n in custom
        ],
        "inputs": {v.name: _shape(v) for v in proto.graph.input},
        "outputs": {v.name: _shape(v) for v in proto.graph.output},
    }
