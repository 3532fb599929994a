"""ONNX Runtime sessions for exported DRConv models, with our custom-op library registered."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import onnx

from drconv import contract, onnx_file
from drconv.errors import DrconvError
from drconv.export import rewrite
from drconv.libraries import require_plugin

__all__ = ["custom_op_library", "image_input", "needs_custom_ops", "session"]


def custom_op_library() -> Path:
    """The built libdrconv_onnxruntime.so, or a DrconvError saying how to build it."""
    return require_plugin("onnxruntime")


def needs_custom_ops(model: str | os.PathLike | onnx.ModelProto) -> bool:
    """Whether the graph has nodes in the drconv domain."""
    if not isinstance(model, onnx.ModelProto):
        model = onnx_file.load(model)
    return contract.has_nodes(model)


def image_input(model: str | os.PathLike | onnx.ModelProto) -> tuple[str, list[int | None]]:
    """The graph's one image input: its name and dims [N, C, H, W] (None where symbolic)."""
    if not isinstance(model, onnx.ModelProto):
        model = onnx_file.load(model)
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise DrconvError(f"expected a model with one image input, this one has {len(inputs)}")
    dims = inputs[0].type.tensor_type.shape.dim
    if len(dims) != 4:
        raise DrconvError(f"expected a 4-D image input [N, C, H, W], input {inputs[0].name} has rank {len(dims)}")
    return inputs[0].name, [d.dim_value if d.HasField("dim_value") else None for d in dims]


def session(
    path: str | os.PathLike,
    providers: Sequence[str] | None = None,
    threads: int | None = None,
    spinning: bool = True,
):
    """An onnxruntime.InferenceSession for `path`, with the drconv library registered when needed.

    Args:
        path: an .onnx file.
        providers: execution providers in order of preference (default: CPU).
        threads: intra-op threads (default: ONNX Runtime's, one per physical core).
        spinning: let idle intra-op threads spin (ONNX Runtime's default, lowest latency);
            False when other work shares the cores, as in side-by-side benchmarks.
    """
    import onnxruntime as ort

    path = Path(path)
    options = ort.SessionOptions()
    if threads is not None:
        if threads < 1:
            raise DrconvError(f"threads must be >= 1, got {threads}")
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    proto = onnx_file.load(path)
    # ONNX Runtime's C API shows a custom op's kernel no version of its domain: checked here.
    contract.check_versions(proto, str(path))
    custom = needs_custom_ops(proto)
    if custom:
        options.register_custom_ops_library(str(custom_op_library()))
    providers = list(providers) if providers else ["CPUExecutionProvider"]
    available = ort.get_available_providers()
    missing = [p for p in providers if p not in available]
    if missing:
        raise DrconvError(
            f"execution provider {missing[0]} is not in this onnxruntime (available: {', '.join(available)}); "
            "for CUDA install onnxruntime-gpu"
        )
    model: str | bytes = str(path)
    if "CUDAExecutionProvider" in providers and custom:
        # The CUDA kernel implements version 1 of the node: lower version 2's additions.
        if rewrite.to_v1(proto, contract.DOMAIN, contract.REGION_CONV.name):
            model = proto.SerializeToString()
    try:
        return ort.InferenceSession(model, options, providers=providers)
    except Exception as exc:
        raise DrconvError(f"ONNX Runtime cannot load {path}: {str(exc).strip().splitlines()[0]}") from None
