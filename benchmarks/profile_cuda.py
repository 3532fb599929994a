"""The CUDA kernel's launches, for a profiler: `ncu --clock-control none python benchmarks/profile_cuda.py`.

Builds the extension (drconv.cuda_kernel), then runs the region conv of
`drconv benchmark --layer 64x56x56 --regions 8 --kernel 3` at --batch N, --warmup times
untimed and once more, for each --dtype. Profile the last launch of each kernel with
`--launch-skip` (or `-k regex:gemm` and `-c`), so that what is read is a warm one.
"""

from __future__ import annotations

import argparse

import torch

from drconv.benchmark.backends import LayerSpec, layer_inputs
from drconv.cuda_kernel import region_conv_cuda


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8, help="samples per call")
    parser.add_argument("--regions", type=int, default=8, help="regions R")
    parser.add_argument("--dtype", choices=["float16", "float32"], nargs="+", default=["float16", "float32"])
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls before the profiled one")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("error: no CUDA GPU visible to torch (torch.cuda.is_available() is False)")
    spec = LayerSpec(args.batch, 64, 56, 56, args.regions, 3, 64)
    for name in args.dtype:
        x, filters, guide = (t.to("cuda", getattr(torch, name)) for t in layer_inputs(spec))
        for _ in range(args.warmup + 1):
            region_conv_cuda(x, filters, guide)
        torch.cuda.synchronize()
        print(f"{name}: {args.warmup + 1} calls of {spec.describe()}")


if __name__ == "__main__":
    main()
