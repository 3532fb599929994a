"""What one call of the torch op costs beyond its arithmetic, side by side with F.conv2d.

On a layer whose arithmetic is nil (N=1, C_in = C_out = 1, a 1x1 map, R=1, k=1) a call is
all overhead: Python, the dispatcher, the autograd kernel, the workspace and the thread
pool's hand-offs. F.conv2d of the same shape is torch's own floor for a conv call.
The rows:

- `drconv.region_conv`: the public function (argument forms, then the op);
- `torch.ops.drconv.region_conv`: the registered op, called directly;
- `F.conv2d`: the dense conv of the same shape, the bound;
- the same three with grad enabled and an input that needs a gradient (autograd node).

    python benchmarks/bench_torch_overhead.py [--threads 2] [--iters 2000]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # see bench_region_conv.py

import argparse
import platform

import torch
import torch.nn.functional as F
from _timing import alternate, print_table
from rich.console import Console

import drconv
from drconv import ops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iters", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    x, filters, guide = torch.randn(1, 1, 1, 1), torch.randn(1, 1, 1, 1, 1, 1), torch.randn(1, 1, 1, 1)
    weight = torch.randn(1, 1, 1, 1)
    op = torch.ops.drconv.region_conv.default
    x_grad, weight_grad = x.clone().requires_grad_(True), weight.clone().requires_grad_(True)

    def no_grad(fn):
        def run() -> None:
            with torch.no_grad():
                fn()

        return run

    backends = {
        "F.conv2d": no_grad(lambda: F.conv2d(x, weight)),
        "drconv.region_conv": no_grad(lambda: drconv.region_conv(x, filters, guide)),
        "torch.ops.drconv.region_conv": no_grad(lambda: op(x, filters, guide, [1, 1], [0, 0], [1, 1])),
        "F.conv2d (grad)": lambda: F.conv2d(x_grad, weight_grad),
        "drconv.region_conv (grad)": lambda: drconv.region_conv(x_grad, filters, guide),
    }
    times = alternate(backends, args.iters, args.warmup)
    print_table(
        f"one call on a 1x1x1x1 layer (no arithmetic), {args.threads} threads, {args.iters} calls each",
        times,
        "F.conv2d",
    )
    Console().print(
        f"torch {torch.__version__}, CPU kernel {ops.cpu_kernel_isa()}, {platform.processor() or platform.machine()}"
    )


if __name__ == "__main__":
    main()
