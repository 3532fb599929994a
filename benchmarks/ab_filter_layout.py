"""IHWO or OIHW for k x k region convs: the A/B behind the exporter's choice (issue 25).

A k x k `DRConv2d`'s filters come out of its generator as OIHW; IHWO (which the CPU kernel
reads without packing) would take a Transpose node in the graph, since the taps are the
generator's spatial axes. This runs an export (A, as written: OIHW, the kernel packs) against
the same graph with that Transpose before every k x k node and the node set to IHWO (B), side
by side in one process on one shared thread pool, one call of each in turn, and prints the
p50 of each and the median over pairs of B / A.

    python benchmarks/ab_filter_layout.py [--model drconv-tiny] [--size 224] [--iters 300]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import helper
from onnxruntime.capi import _pybind_state
from rich.console import Console

from drconv import contract
from drconv.benchmark.env import cpu_model
from drconv.export import rewrite, to_onnx
from drconv.libraries import get_library_path
from drconv.models import create


def with_ihwo_transposes(proto: onnx.ModelProto) -> int:
    """Every k x k OIHW region-conv node reads IHWO filters through a Transpose; in place."""
    changed = 0
    nodes = list(proto.graph.node)
    del proto.graph.node[:]
    for node in nodes:
        layouts = [helper.get_attribute_value(a) for a in node.attribute if a.name == "filter_layout"]
        if node.domain == contract.DOMAIN and node.op_type == contract.REGION_CONV.name and layouts == [b"OIHW"]:
            ihwo = f"{node.input[1]}.ihwo"
            proto.graph.node.append(helper.make_node("Transpose", [node.input[1]], [ihwo], perm=rewrite.TO_IHWO))
            node.input[1] = ihwo
            rewrite.set_layout(node, rewrite.IHWO)
            changed += 1
        proto.graph.node.append(node)
    return changed


def _session(model: bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.use_per_session_threads = False
    options.register_custom_ops_library(get_library_path("onnxruntime"))
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="drconv-tiny")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iters", type=int, default=300)
    args = parser.parse_args()
    _pybind_state.set_global_thread_pool_sizes(args.threads, 1)
    x = torch.randn(args.batch, 3, args.size, args.size)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = to_onnx(create(args.model).eval(), x, f"{tmp}/a.onnx")
        a = onnx.load(str(path))
    b = onnx.ModelProto()
    b.CopyFrom(a)
    changed = with_ihwo_transposes(b)
    if not changed:
        raise SystemExit(f"{args.model} has no k x k OIHW region conv")
    sessions = [_session(m.SerializeToString()) for m in (a, b)]
    feed = {"input": x.numpy()}
    ya, yb = (s.run(None, feed)[0] for s in sessions)
    np.testing.assert_allclose(yb, ya, rtol=1e-4, atol=1e-5)
    times: list[list[float]] = [[], []]
    for i in range(args.iters):
        for k in (0, 1) if i % 2 == 0 else (1, 0):
            start = time.perf_counter()
            sessions[k].run(None, feed)
            times[k].append(time.perf_counter() - start)
    ratio = float(np.median(np.array(times[1]) / np.array(times[0])))
    Console().print(
        f"{args.model} {args.batch}x3x{args.size}x{args.size}, {args.threads} threads, {cpu_model()}: "
        f"A (OIHW, packed by the kernel) p50 {np.median(times[0]) * 1e3:.3f} ms, B (IHWO through a Transpose, "
        f"{changed} nodes) p50 {np.median(times[1]) * 1e3:.3f} ms, B/A median of pairs {ratio:.3f}"
    )


if __name__ == "__main__":
    main()
