"""ONNX Runtime sessions for exported DRConv models, with our custom-op library registered."""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import onnx
from onnx import TensorProto, helper

from drconv import contract, onnx_file
from drconv.errors import DrconvError
from drconv.export import functions, rewrite
from drconv.libraries import require_plugin

__all__ = ["custom_op_library", "image_input", "in_blocked_layout", "nchwc_block", "needs_custom_ops", "session"]


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


@functools.cache
def nchwc_block() -> int:
    """The channels per block of ONNX Runtime's NCHWc layout on this CPU; 0 where it has none.

    MLAS picks it by the CPU (16 with AVX-512, 8 with AVX2) and no API tells it: a
    tensor of 4 channels (its ReorderInput takes multiples of 4) comes back padded to one block.
    """
    import numpy as np
    import onnxruntime as ort

    graph = helper.make_graph(
        [helper.make_node("ReorderInput", ["x"], ["y"], domain=rewrite.NCHWC_DOMAIN)],
        "nchwc_block",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 1, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    opsets = [helper.make_opsetid("", 18), helper.make_opsetid(rewrite.NCHWC_DOMAIN, 1)]
    model = helper.make_model(graph, opset_imports=opsets, ir_version=9)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 4
    try:
        probe = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        return int(probe.run(None, {"x": np.ones((1, 4, 1, 1), np.float32)})[0].shape[1])
    except Exception:  # no NCHWc kernels in this build or on this CPU
        return 0


def in_blocked_layout(model: str | bytes, block: int) -> bytes | None:
    """ONNX Runtime's optimised graph of `model` with drconv's nodes in its NCHWc layout
    (rewrite.to_nchwc), serialised, or None where no node could take it; what `session` runs.

    `block`: ONNX Runtime's channels per block on this CPU (`nchwc_block()`)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.register_custom_ops_library(str(custom_op_library()))
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # its warning that the saved graph is for this CPU only: it is
    with tempfile.TemporaryDirectory(prefix="drconv-ort-") as tmp:
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        try:
            ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        except Exception:  # e.g. a process on global thread pools: the session proper says what is wrong
            return None
        optimized = onnx.load(options.optimized_model_filepath)
    if not rewrite.to_nchwc(optimized, contract.DOMAIN, contract.REGION_CONV.name, block):
        return None
    return optimized.SerializeToString()


def session(
    path: str | os.PathLike,
    providers: Sequence[str] | None = None,
    threads: int | None = None,
    spinning: bool = True,
    blocked_layout: bool = True,
    profile: str | os.PathLike | None = None,
):
    """An onnxruntime.InferenceSession for `path`, with the drconv library registered when needed.

    Args:
        path: an .onnx file.
        providers: execution providers in order of preference (default: CPU).
        threads: intra-op threads (default: ONNX Runtime's, one per physical core).
        spinning: let idle intra-op threads spin (ONNX Runtime's default, lowest latency);
            False when other work shares the cores, as in side-by-side benchmarks.
        blocked_layout: on the CPU, let drconv's nodes read and write ONNX Runtime's blocked
            NCHWc layout, as its own Convs do, instead of being wrapped in reorders to and from
            NCHW: ONNX Runtime optimises the graph once, drconv rewrites the result
            (`drconv.export.rewrite.to_nchwc`), and the session runs that. False: the file's
            graph as ONNX Runtime optimises it.
        profile: a file prefix: ONNX Runtime's profiler records every node's time, into a
            JSON file beginning so that InferenceSession.end_profiling() names.
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
    if profile is not None:
        options.enable_profiling = True
        options.profile_file_prefix = str(profile)
    proto = onnx_file.load(path)
    # ONNX Runtime's C API shows a custom op's kernel no version of its domain: checked here.
    contract.check_versions(proto, str(path))
    functions.check(proto, str(path))
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
        block = nchwc_block() if custom and blocked_layout and providers == ["CPUExecutionProvider"] else 0
        blocked = in_blocked_layout(model, block) if block in contract.CHANNEL_BLOCKS else None
        if blocked is not None:
            # Optimised already, NCHWc included: the levels below it only tidy up.
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
            model = blocked
        return ort.InferenceSession(model, options, providers=providers)
    except Exception as exc:
        raise DrconvError(f"ONNX Runtime cannot load {path}: {str(exc).strip().splitlines()[0]}") from None
