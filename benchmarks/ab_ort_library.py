"""Two builds of libdrconv_onnxruntime.so side by side: the A/B for a kernel change.

Both libraries run in one process on one shared ONNX Runtime thread pool
(`set_global_thread_pool_sizes`), one call of each in turn (A B B A A B ...), so that
neither one's spinning workers take the cores from the other and machine drift hits both
alike. Reported: p50 of each, and the median over pairs of B's time / A's (a layer that
both builds run the same code on reads 1.00 +- 0.01 on the 2-vCPU dev VM, where separate
runs of `drconv benchmark` move by 20%).

    python benchmarks/ab_ort_library.py OLD.so NEW.so --layer 232x7x7 --kernel 1 --regions 8
    python benchmarks/ab_ort_library.py OLD.so NEW.so --model model.onnx [--batch 1 --size 224]
    python benchmarks/ab_ort_library.py OLD.so NEW.so --model model.onnx --b-blocked

--b-blocked runs B's model as drconv.runtime.ort.session does since issue 24: ONNX Runtime's
optimised graph with drconv's nodes moved into its NCHWc layout (B must be this build's
library, which does the rewrite); A runs the file's graph as ONNX Runtime optimises it.

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


def _session(model: bytes | str, library: str, optimised: bool = False) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.use_per_session_threads = False
    options.register_custom_ops_library(library)
    if optimised:  # as drconv.runtime.ort.session loads a rewritten graph
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def _blocked(path: Path) -> bytes:
    """The model as drconv's session runs it: ONNX Runtime's optimised graph, nodes in NCHWc."""
    from drconv.runtime import ort as drconv_ort

    rewritten = drconv_ort.in_blocked_layout(str(path), drconv_ort.nchwc_block())
    if rewritten is None:
        raise SystemExit(f"--b-blocked: no node of {path} can take ONNX Runtime's NCHWc layout here")
    return rewritten


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
    parser.add_argument("--b-blocked", action="store_true", help="B runs the model in ONNX Runtime's NCHWc layout")
    args = parser.parse_args()
    if (args.layer is None) == (args.model is None):
        parser.error("give one of --layer and --model")
    if args.b_blocked and args.model is None:
        parser.error("--b-blocked rewrites a --model's graph")
    if args.layer:
        model, feeds = _layer(args.layer, args.kernel, args.regions)
        what = f"{args.layer} k{args.kernel} R{args.regions}"
    else:
        model, what = str(args.model), f"{args.model.name} batch {args.batch} {args.size}x{args.size}"
    b_model = _blocked(args.model) if args.b_blocked else model  # before the global pool: a session of its own
    _pybind_state.set_global_thread_pool_sizes(args.threads, 1)
    sessions = [_session(model, str(args.a)), _session(b_model, str(args.b), optimised=args.b_blocked)]
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
        f"{what}{', B blocked' if args.b_blocked else ''}, {args.threads} threads, {args.iters} calls each, "
        f"{cpu_model()}: "
        f"A p50 {np.median(a) * 1e3:.4f} ms, B p50 {np.median(b) * 1e3:.4f} ms, "
        f"B/A {np.median(b) / np.median(a):.3f} (median of pairs {np.median(b / a):.3f}; "
        f"p10 {np.percentile(b, 10) / np.percentile(a, 10):.3f}, the figure a busy neighbour moves least)"
    )


if __name__ == "__main__":
    main()
