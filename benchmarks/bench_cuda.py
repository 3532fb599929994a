"""The shared CUDA kernel against cuDNN's dense conv of the same shape and the naive R-filter formulation.

CUDA events, backends in alternation, medians (drconv.benchmark's timing). Issue 4's goal:
<= 1.5x cuDNN at N=8, C=K=64, 56x56, k=3, R=8, float16. Run on a GPU machine:
`python benchmarks/bench_cuda.py --dtype float16 --iters 200`. (`drconv benchmark --layer
64x56x56 --device cuda` times the same in float32, with TensorRT where it is installed.)
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from rich.console import Console

from drconv.benchmark.backends import LayerSpec, layer_inputs, naive_region_conv
from drconv.benchmark.report import results, table
from drconv.benchmark.timing import Backend, alternate


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
    spec = LayerSpec(args.batch, args.channels, args.size, args.size, args.regions, args.kernel, args.channels)
    x, filters, guide = (t.to("cuda", dtype) for t in layer_inputs(spec))
    weight = filters[0, 0].contiguous()
    pad = args.kernel // 2
    backends = [
        Backend("drconv CUDA kernel", lambda: region_conv_cuda(x, filters, guide, padding=(pad, pad)),
                items=spec.batch, bound="cuDNN dense conv", cuda=True),
        Backend("naive R filters", lambda: naive_region_conv(x, filters, guide, pad),
                items=spec.batch, bound="cuDNN dense conv", cuda=True),
        Backend("cuDNN dense conv", lambda: F.conv2d(x, weight, padding=pad), items=spec.batch, cuda=True),
    ]  # fmt: skip
    err = (backends[0].run().float() - backends[1].run().float()).abs().max().item()
    with torch.no_grad():
        samples = alternate(backends, args.warmup, args.iters)
    rows = results(backends, samples, {})
    Console().print(table(f"{spec.describe()} {args.dtype}, {torch.cuda.get_device_name(0)}: ms", rows))
    Console().print(f"max |kernel - naive| = {err:.3g}; torch {torch.__version__}, CUDA {torch.version.cuda}")


if __name__ == "__main__":
    main()
