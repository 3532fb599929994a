"""The shared CUDA kernel: checked against a float64 reference, then timed against cuDNN's dense conv.

For each --regions value, in one process: the drconv CUDA kernel (the one TensorRT and ONNX
Runtime's CUDA provider run), optionally an older version of it (--baseline DIR, a copy of
its .cu/.h and PyTorch binding), the public implementation's R-filter formulation on
cuDNN, and cuDNN's dense conv of the same shape: the bound, the same multiply-adds.

Three timings per backend, rounds in alternation, medians:
- graph: `--reps` calls captured once in a CUDA graph, the replay timed between CUDA events,
  divided by reps: the GPU's own time per call, no host work in it (what a TensorRT engine
  or a CUDA-graphed model sees). At these sizes the host is slower than the GPU, so this is
  the only column that compares kernels;
- kernel: `--reps` eager calls back to back between CUDA events, divided by reps: the
  host's launch rate where that is the slower side;
- latency: one call between events after a synchronize, launch overhead included (what
  `drconv benchmark` reports).

Issue 4's goal: graph time <= 1.5x cuDNN at N=8, C=K=64, 56x56, k=3, R=8, float16.
Run on a GPU machine: `python benchmarks/bench_cuda.py --dtype float16 float32 --json out.json`.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table

from drconv import region_conv
from drconv.benchmark.backends import LayerSpec, layer_inputs, naive_region_conv
from drconv.benchmark.report import write_json
from drconv.cuda_kernel import bucket_cuda, region_conv_cuda

ROOT = Path(__file__).resolve().parent.parent

# (C_in, C_out, R, k, stride, dilation, H, W, N): odd sizes, C_out past one 64-channel
# tile, stride, dilation, one region, many regions.
CHECKS = [
    (3, 5, 2, 3, 1, 1, 7, 9, 2),
    (16, 70, 4, 3, 2, 1, 33, 31, 3),
    (8, 8, 1, 1, 1, 1, 5, 5, 1),
    (32, 64, 16, 3, 1, 2, 40, 40, 2),
    (64, 64, 8, 5, 1, 1, 28, 28, 4),
    (24, 130, 3, 3, 1, 1, 15, 65, 1),
]


def baseline_kernel(directory: Path):
    """An older version of the kernel, built from a directory holding its .cu, .h and binding."""
    from torch.utils.cpp_extension import load

    sources = sorted(str(p) for p in directory.iterdir() if p.suffix in (".cu", ".cpp"))
    module = load(
        name="drconv_cuda_baseline",
        sources=sources,
        extra_include_paths=[str(directory), str(ROOT / "plugins" / "common"), str(ROOT / "drconv" / "csrc")],
        extra_cflags=["-O3"],
        extra_cuda_cflags=["-O3"],
    )

    def forward(x, filters, guide, stride, padding, dilation):
        return module.forward(x, filters, guide, list(stride), list(padding), list(dilation))

    return forward


def reference(x, filters, guide, stride, padding, dilation) -> torch.Tensor:
    """The region-wise conv in float64 on the inputs' device: all R filters, then each pixel's own."""
    return naive_region_conv(x.double(), filters.double(), guide.double(), padding, stride, dilation)


def check(kernels: dict, dtype: torch.dtype, seed: int = 0, cpu_reference: bool = False) -> dict[str, float]:
    """Worst relative error (||y - ref|| / ||ref||) of each kernel over CHECKS, on fresh random inputs.

    cpu_reference: the reference from drconv's CPU op in float64, so that no other CUDA
    kernel runs (for compute-sanitizer, which then checks only ours).
    """
    worst = dict.fromkeys(kernels, 0.0)
    g = torch.Generator().manual_seed(seed)
    for c_in, c_out, regions, k, s, d, h, w, n in CHECKS:
        pad = d * (k // 2)
        ho, wo = (h + 2 * pad - d * (k - 1) - 1) // s + 1, (w + 2 * pad - d * (k - 1) - 1) // s + 1
        x = torch.randn(n, c_in, h, w, generator=g).to("cuda", dtype)
        f = (torch.randn(n, regions, c_out, c_in, k, k, generator=g) / (c_in * k * k) ** 0.5).to("cuda", dtype)
        guide = torch.randn(n, regions, ho, wo, generator=g).to("cuda", dtype)
        if cpu_reference:
            ref = region_conv(*(t.double().cpu() for t in (x, f, guide)), (s, s), (pad, pad), (d, d))
        else:
            ref = reference(x, f, guide, (s, s), (pad, pad), (d, d))
        for name, fn in kernels.items():
            y = fn(x, f, guide, (s, s), (pad, pad), (d, d)).to(ref.device).double()
            if y.shape != ref.shape or not torch.isfinite(y).all():
                worst[name] = float("inf")
                continue
            worst[name] = max(worst[name], ((y - ref).norm() / ref.norm()).item())
    return worst


def event_ms(work) -> float:
    """Milliseconds between two CUDA events around work(), after a synchronize."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    work()
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


def kernel_ms(fn, reps: int) -> float:
    def calls():
        for _ in range(reps):
            fn()

    return event_ms(calls) / reps


def capture(fn, reps: int) -> torch.cuda.CUDAGraph | None:
    """`reps` calls of fn in one CUDA graph, or None where fn cannot be captured."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # graph capture wants its warm-up off the default stream
        fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            for _ in range(reps):
                fn()
    except RuntimeError as err:
        print(f"  (not capturable, graph time left out: {str(err).splitlines()[0]})")
        return None
    return graph


def time_all(backends: dict, rounds: int, reps: int, warmup: int) -> dict[str, dict[str, float]]:
    for fn in backends.values():
        for _ in range(warmup):
            fn()
    graphs = {name: capture(fn, reps) for name, fn in backends.items()}
    graph: dict[str, list[float]] = {name: [] for name in backends}
    kernel: dict[str, list[float]] = {name: [] for name in backends}
    latency: dict[str, list[float]] = {name: [] for name in backends}
    for _ in range(rounds):
        for name, fn in backends.items():
            if graphs[name] is not None:
                graph[name].append(event_ms(graphs[name].replay) / reps)
            kernel[name].append(kernel_ms(fn, reps))
            latency[name].append(event_ms(fn))
    return {
        name: {
            "graph_ms": statistics.median(graph[name]) if graph[name] else None,
            "kernel_ms": statistics.median(kernel[name]),
            "latency_ms": statistics.median(latency[name]),
        }
        for name in backends
    }


def run_config(kernels: dict, spec: LayerSpec, dtype: torch.dtype, args, console: Console) -> dict:
    """One layer shape: each kernel's error on these inputs, then every backend timed in alternation."""
    x, filters, guide = (t.to("cuda", dtype) for t in layer_inputs(spec))
    weight = filters[0, 0].contiguous()
    pad = spec.kernel // 2
    s, p, d = (1, 1), (pad, pad), (1, 1)
    ref = reference(x, filters, guide, s, p, d)
    errors = {name: ((fn(x, filters, guide, s, p, d).double() - ref).norm() / ref.norm()).item()
              for name, fn in kernels.items()}  # fmt: skip
    backends = {name: functools.partial(fn, x, filters, guide, s, p, d) for name, fn in kernels.items()}
    # The first two of drconv's three steps alone (region of each pixel, pixels bucketed):
    # its time against drconv's row splits the kernel's cost.
    backends["drconv bucketing only"] = functools.partial(bucket_cuda, x, filters, guide, s, p, d)
    backends["naive R filters"] = functools.partial(naive_region_conv, x, filters, guide, pad)
    backends["cuDNN dense"] = functools.partial(F.conv2d, x, weight, padding=pad)
    with torch.no_grad():
        times = time_all(backends, args.rounds, args.reps, args.warmup)
    for name, err in errors.items():
        times[name]["rel_error"] = err
    dense = times["cuDNN dense"]
    dtype_name = str(dtype).removeprefix("torch.")
    out = Table(title=f"{spec.describe()} {dtype_name}, {torch.cuda.get_device_name(0)}", title_justify="left")
    for col in ("backend", "graph ms", "/dense", "kernel ms", "/dense", "latency ms", "/dense", "rel err"):
        out.add_column(col, justify="left" if col == "backend" else "right")
    for name, t in times.items():
        graphed = t["graph_ms"] is not None and dense["graph_ms"] is not None
        out.add_row(
            name,
            f"{t['graph_ms']:.4f}" if t["graph_ms"] is not None else "-",
            f"{t['graph_ms'] / dense['graph_ms']:.2f}" if graphed else "-",
            f"{t['kernel_ms']:.4f}",
            f"{t['kernel_ms'] / dense['kernel_ms']:.2f}",
            f"{t['latency_ms']:.4f}",
            f"{t['latency_ms'] / dense['latency_ms']:.2f}",
            f"{t['rel_error']:.1e}" if "rel_error" in t else "",
        )
    console.print(out)
    return {"dtype": dtype_name, "layer": spec.describe(), "batch": spec.batch, "regions": spec.regions, "times": times}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, nargs="+", default=[8])
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--size", type=int, default=56)
    parser.add_argument("--regions", type=int, nargs="+", default=[8])
    parser.add_argument("--kernel", type=int, default=3)
    parser.add_argument("--dtype", choices=["float16", "float32"], nargs="+", default=["float16"])
    parser.add_argument("--rounds", type=int, default=30, help="alternating rounds; medians over them")
    parser.add_argument("--reps", type=int, default=20, help="back-to-back calls per kernel-time sample")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--baseline", type=Path, help="directory with an older kernel version to compare")
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("error: no CUDA GPU visible to torch (torch.cuda.is_available() is False)")
    torch.backends.cudnn.benchmark = True
    console = Console()
    kernels = {"drconv": region_conv_cuda}
    if args.baseline:
        kernels["baseline"] = baseline_kernel(args.baseline)
    doc = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "cuda": torch.version.cuda}
    doc |= {"command": " ".join(sys.argv), "checks": {}, "runs": []}
    for dtype_name in args.dtype:
        dtype = getattr(torch, dtype_name)
        errors = check(kernels, dtype)
        doc["checks"][dtype_name] = errors
        worst = ", ".join(f"{name} {err:.2e}" for name, err in errors.items())
        console.print(f"{dtype_name}, max relative error vs float64 over {len(CHECKS)} shapes: {worst}")
        for batch in args.batch:
            for regions in args.regions:
                spec = LayerSpec(batch, args.channels, args.size, args.size, regions, args.kernel, args.channels)
                doc["runs"].append(run_config(kernels, spec, dtype, args, console))
    if args.json:
        write_json(args.json, doc)


if __name__ == "__main__":
    main()
