"""The shared CUDA kernel against cuDNN's dense conv of the same shape and the naive R-filter formulation.

CUDA events, backends in alternation, medians. Issue 4's goal: <= 1.5x cuDNN at N=8,
C=K=64, 56x56, k=3, R=8, float16. Run on a GPU machine:
`python benchmarks/bench_cuda.py --dtype float16 --iters 200`.
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--size", type=int, default=56)
    parser.add_argument("--regions", type=int, default=8)
    parser.add_argument("--kernel", type=int, default=3)
    parser.add_argument("--dtype", choices=["float16", "float32"], default="float16")
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("error: no CUDA GPU visible to torch (torch.cuda.is_available() is False)")
    from drconv.cuda_kernel import region_conv_cuda

    torch.backends.cudnn.benchmark = True
    dtype = getattr(torch, args.dtype)
    n, c, size, regions, k = args.batch, args.channels, args.size, args.regions, args.kernel
    pad = k // 2
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, c, size, size, generator=g).to("cuda", dtype)
    filters = (torch.randn(n, regions, c, c, k, k, generator=g) / (c * k * k) ** 0.5).to("cuda", dtype)
    noise = torch.randn(n, regions, size + 8, size + 8, generator=g)
    guide = F.avg_pool2d(noise, 9, 1).to("cuda", dtype)  # coherent regions, as a trained guide gives
    weight = filters[0, 0].contiguous()

    def naive():
        y = F.conv2d(x.reshape(1, n * c, size, size), filters.reshape(n * regions * c, c, k, k), padding=pad, groups=n)
        y = y.view(n, regions, c, size, size)
        index = guide.argmax(1, keepdim=True).unsqueeze(2).expand(-1, -1, c, -1, -1)
        return y.gather(1, index).squeeze(1)

    backends = {
        "cuDNN dense conv (bound)": lambda: F.conv2d(x, weight, padding=pad),
        "drconv CUDA kernel": lambda: region_conv_cuda(x, filters, guide, (1, 1), (pad, pad), (1, 1)),
        "naive R filters (public impl.)": naive,
    }
    err = (backends["drconv CUDA kernel"]().float() - naive().float()).abs().max().item()
    times: dict[str, list[float]] = {name: [] for name in backends}
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for i in range(args.warmup + args.iters):
        for name, fn in backends.items():
            start.record()
            fn()
            end.record()
            end.synchronize()
            if i >= args.warmup:
                times[name].append(start.elapsed_time(end))
    bound = statistics.median(times["cuDNN dense conv (bound)"])
    table = Table(title=f"N={n} C=K={c} {size}x{size} k={k} R={regions} {args.dtype}, {torch.cuda.get_device_name(0)}")
    for col in ("backend", "median ms", "p90 ms", "x cuDNN"):
        table.add_column(col, justify="left" if col == "backend" else "right")
    for name, samples in times.items():
        ordered = sorted(samples)
        median = statistics.median(ordered)
        table.add_row(name, f"{median:.4f}", f"{ordered[int(0.9 * (len(ordered) - 1))]:.4f}", f"{median / bound:.2f}")
    Console().print(table)
    Console().print(f"max |kernel - naive| = {err:.3g}; torch {torch.__version__}, CUDA {torch.version.cuda}")


if __name__ == "__main__":
    main()
