"""ONNX Runtime on the CPU, side by side in one process, in alternation.

--model A.onnx B.onnx ...   whole models (e.g. drconv-tiny custom and portable) and PyTorch eager
--layer                     the issue-3 goals, on N=1 C=K=64 56x56 k=3 R=8:
                            one RegionConv2d node vs one ONNX Conv node of the same shape (the bound),
                            and a whole DRConv2d layer exported custom vs portable.
Run: `python benchmarks/bench_onnx.py --layer --threads 2 --iters 200`.
"""

from __future__ import annotations

import os

# numpy's OpenBLAS keeps idle threads spinning on these 2 cores; the measured code does
# not use it, so it gets one thread and leaves the cores to the backends.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import platform
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from _timing import alternate, print_table
from rich.console import Console

from drconv import DRConv2d
from drconv.benchmark.backends import LayerSpec, dense_conv_graph, layer_inputs
from drconv.export import to_onnx
from drconv.export.onnx import region_conv_graph
from drconv.models import create
from drconv.runtime.ort import session


def _session_from_proto(model, threads: int, tmp: Path):
    path = tmp / f"{model.graph.name}.onnx"
    onnx.save(model, str(path))
    return session(path, threads=threads)


def layer_goals(args) -> None:
    n, c, size, regions, k = 1, args.channels, args.size, args.regions, args.kernel
    spec = LayerSpec(n, c, size, size, regions, k, c)
    xt, ft, gt = layer_inputs(spec)
    x, filters, guide = xt.numpy(), ft.numpy(), gt.numpy()
    layer = DRConv2d(c, c, k, regions).eval()
    with tempfile.TemporaryDirectory() as tmp:
        dense_model = dense_conv_graph(filters[0, 0], x.shape, k // 2)
        dense = _session_from_proto(dense_model, args.threads, Path(tmp))
        region = _session_from_proto(region_conv_graph(xt, ft, gt, padding=(k // 2,) * 2), args.threads, Path(tmp))
        custom = session(to_onnx(layer, xt, Path(tmp) / "c.onnx"), threads=args.threads)
        portable = session(to_onnx(layer, xt, Path(tmp) / "p.onnx", mode="portable"), threads=args.threads)
    backends = {
        "ORT Conv node": lambda: dense.run(None, {"X": x}),
        "ORT RegionConv2d": lambda: region.run(None, {"X": x, "filters": filters, "guide": guide}),
        "layer custom": lambda: custom.run(None, {"input": x}),
        "layer portable": lambda: portable.run(None, {"input": x}),
    }
    times = alternate(backends, args.iters, args.warmup)
    shape = f"N={n} C=K={c} {size}x{size} k={k} R={regions}"
    print_table(f"ONNX Runtime CPU, {shape}, {args.threads} threads, {args.iters} iters", times, "ORT Conv node")
    med = {name: float(np.median(t)) for name, t in times.items()}
    node_ratio = med["ORT RegionConv2d"] / med["ORT Conv node"]
    layer_ratio = med["layer portable"] / med["layer custom"]
    Console().print(
        f"RegionConv2d node / Conv node: {node_ratio:.2f}x (goal <= 1.3)   "
        f"layer portable / custom: {layer_ratio:.2f}x (goal >= 4)"
    )


def models(args) -> None:
    shape = tuple(int(v) for v in args.input_shape.split(","))
    x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    torch.set_num_threads(args.threads)
    net = create("drconv-tiny").eval()
    xt = torch.from_numpy(x)
    backends = {"PyTorch eager": lambda: net(xt)}
    for path in args.model:
        sess = session(path, threads=args.threads)
        backends[f"ORT {Path(path).name}"] = lambda sess=sess: sess.run(None, {"input": x})
    with torch.no_grad():
        times = alternate(backends, args.iters, args.warmup)
    print_table(f"input {shape}, {args.threads} threads, {args.iters} iters", times, "PyTorch eager", "x PyTorch")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", nargs="+", help="ONNX files of drconv-tiny to time against PyTorch")
    parser.add_argument("--layer", action="store_true", help="the single-node and single-layer goals")
    parser.add_argument("--input-shape", default="1,3,224,224")
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--size", type=int, default=56)
    parser.add_argument("--regions", type=int, default=8)
    parser.add_argument("--kernel", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    if not args.model and not args.layer:
        parser.error("give --model FILE ... and/or --layer")
    if args.model:
        models(args)
    if args.layer:
        layer_goals(args)
    Console().print(f"onnxruntime {ort.__version__}, torch {torch.__version__}, {platform.machine()}")


if __name__ == "__main__":
    main()
