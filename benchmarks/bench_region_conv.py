"""Region-wise conv forward vs the dense-conv bound, side by side in one process.

Backends run in alternation (A B C D A B C D ...) so machine drift hits all alike;
medians are reported with the ratio to F.conv2d of the same shape (the same
multiply-adds as one region conv). Run: `make bench` or
`python benchmarks/bench_region_conv.py --threads 2 --iters 200`.
"""

from __future__ import annotations

import os

# numpy's OpenBLAS keeps idle threads spinning on these 2 cores; the measured code does
# not use it, so it gets one thread and leaves the cores to the backends.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import platform

import torch
import torch.nn.functional as F
from _timing import alternate, print_table
from rich.console import Console

import drconv
from drconv import _torch_kernels
from drconv._geometry import check_inputs
from drconv.benchmark.backends import LayerSpec, layer_inputs, naive_region_conv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--channels", type=int, default=64, help="C_in = C_out")
    parser.add_argument("--size", type=int, default=56)
    parser.add_argument("--regions", type=int, default=8)
    parser.add_argument("--kernel", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iters", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    spec = LayerSpec(args.batch, args.channels, args.size, args.size, args.regions, args.kernel, args.channels)
    x, filters, guide = layer_inputs(spec)
    pad = args.kernel // 2
    dense_weight = filters[0, 0].contiguous()
    geo = check_inputs(x, filters, guide, (1, 1), (pad, pad), (1, 1))
    backends = {
        "F.conv2d dense": lambda: F.conv2d(x, dense_weight, padding=pad),
        "drconv.region_conv": lambda: drconv.region_conv(x, filters, guide),
        "bucketed fallback": lambda: _torch_kernels.forward(x, filters, guide, geo),
        "naive R filters": lambda: naive_region_conv(x, filters, guide, pad),
    }
    reference = backends["naive R filters"]()
    for name, fn in backends.items():
        err = (fn() - reference).abs().max().item() if "dense" not in name else 0.0
        if err > 1e-3:
            raise SystemExit(f"{name} disagrees with the naive reference by {err}")

    with torch.no_grad():
        times = alternate(backends, args.iters, args.warmup)
    print_table(
        f"region conv forward, N={args.batch} C=K={args.channels} {args.size}x{args.size} k={args.kernel} "
        f"R={args.regions}, {args.threads} threads, {args.iters} iters in alternation",
        times,
        "F.conv2d dense",
        "x dense",
    )
    Console().print(
        f"torch {torch.__version__}, CPU kernel {drconv.ops.cpu_kernel_isa()}, "
        f"{platform.processor() or platform.machine()}"
    )


if __name__ == "__main__":
    main()
