"""Two builds of libdrconv_onnxruntime.so side by side: the A/B for a kernel change.

Both libraries run in one process on one shared ONNX Runtime thread pool
(`set_global_thread_pool_sizes`), one call of each in turn (A B B A A B ...), so that
neither one's spinning workers take the cores from the other and machine drift hits both
alike. Reported: p50 of each, and the median over pairs of B's time / A's (a layer that
both builds run the same code on reads 1.00 +- 0.01 on the 2-vCPU dev VM, where separate
runs of `drconv benchmark` move by 20%).

    python benchmarks/ab_ort_library.py OLD.so NEW.so --layer 232x7x7 --kernel 1 --regions 8
    python benchmarks/ab_ort_library.py OLD.so NEW.so --model model.onnx [--batch 1 --size 224]

Layers are fed IHWO filters, as an export delivers them. Outputs are checked equal first.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import _pybind_state
from rich.console import Console

from drconv.benchmark.backends import LayerSpec, layer_inputs
from drconv.benchmark.env import cpu_model
from drconv.export import rewrite
from drconv.export.onnx import region_conv_graph


def _session(model: bytes | str, library: str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.use_per_session_threads = False
    options.register_custom_ops_library(library)
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def _layer(spec: str, kernel: int, regions: int) -> tuple[bytes, dict[str, np.ndarray]]:
    x, filters, guide = layer_inputs(LayerSpec.parse(spec, regions, kernel, None, 1))
    pad = kernel // 2
    proto = region_conv_graph(x, filters, guide, padding=(pad, pad), layout=rewrite.IHWO)
    feeds = {"X": x.numpy(), "filters": filters.permute(*rewrite.TO_IHWO).contiguous().numpy(), "guide": guide.numpy()}
    return proto.SerializeToString(), feeds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", type=Path, help="library A (the baseline)")
    parser.add_argument("b", type=Path, help="library B")
    parser.add_argument("--layer", help="CxHxW of a lone region conv (batch 1)")
    parser.add_argument("--kernel", type=int, default=1)
    parser.add_argument("--regions", type=int, default=8)
    parser.add_argument("--model", type=Path, help="an exported .onnx file instead of a layer")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iters", type=int, default=2000, help="calls of each")
    args = parser.parse_args()
    if (args.layer is None) == (args.model is None):
        parser.error("give one of --layer and --model")
    _pybind_state.set_global_thread_pool_sizes(args.threads, 1)
    if args.layer:
        model, feeds = _layer(args.layer, args.kernel, args.regions)
        what = f"{args.layer} k{args.kernel} R{args.regions}"
    else:
        model, what = str(args.model), f"{args.model.name} batch {args.batch} {args.size}x{args.size}"
    sessions = [_session(model, str(lib)) for lib in (args.a, args.b)]
    if args.model:
        x = np.random.default_rng(0).standard_normal((args.batch, 3, args.size, args.size)).astype(np.float32)
        feeds = {sessions[0].get_inputs()[0].name: x}
    outputs = [s.run(None, feeds)[0] for s in sessions]
    np.testing.assert_allclose(outputs[1], outputs[0], rtol=1e-4, atol=1e-4)
    times: list[list[float]] = [[], []]
    for i in range(args.iters):
        for which in (0, 1) if i % 2 == 0 else (1, 0):
            start = time.perf_counter()
            sessions[which].run(None, feeds)
            times[which].append(time.perf_counter() - start)
    a, b = (np.array(t) for t in times)
    Console(soft_wrap=True).print(
        f"{what}, {args.threads} threads, {args.iters} calls each, {cpu_model()}: "
        f"A p50 {np.median(a) * 1e3:.4f} ms, B p50 {np.median(b) * 1e3:.4f} ms, "
        f"B/A {np.median(b) / np.median(a):.3f} (median of pairs {np.median(b / a):.3f}; "
        f"p10 {np.percentile(b, 10) / np.percentile(a, 10):.3f}, the figure a busy neighbour moves least)"
    )


if __name__ == "__main__":
    main()
