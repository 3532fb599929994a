"""The layer table of docs/performance.md: `drconv benchmark --layer` on each region-conv shape
of the ShuffleNetV2 zoo (1x1, R=8) and the two 3x3 shapes, one run per shape, printed as a
markdown table of p50 ratios to the same runtime's dense conv.

    python benchmarks/bench_layers.py --out build/perf/layers [--batch 1] [--iters 200]
        [--backend ort-custom,ort-dense,torch,torch-dense] [--only 96x7x7:1:8,...]

Each shape's JSON (the CLI's schema) lands in --out; the table goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

# (C x H x W, kernel, regions): the 1x1 region convs of drconv-shufflenetv2-0.5x and -1.0x
# (C_in = C_out), then issue 5's two 3x3 shapes.
SHAPES: list[tuple[str, int, int]] = [
    *((shape, 1, 8) for shape in ("24x56x56", "24x28x28", "48x28x28", "48x14x14", "96x14x14", "96x7x7")),
    *((shape, 1, 8) for shape in ("58x56x56", "58x28x28", "116x28x28", "116x14x14", "232x14x14", "232x7x7")),
    ("64x56x56", 3, 8),
    ("192x14x14", 3, 2),
]
PAIRS = (("ort-custom", "ort-dense"), ("torch", "torch-dense"), ("ov-custom", "ov-dense"))


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for one JSON per shape")
    parser.add_argument("--batch", type=int, default=1, help="N of every layer")
    parser.add_argument("--iters", type=int, default=200, help="timed calls per backend")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads")
    parser.add_argument("--backend", default="ort-custom,ort-dense,torch,torch-dense", help="backends to time")
    parser.add_argument("--only", default=None, help="comma-separated SHAPE:K:R to run instead of the table's")
    return parser.parse_args(argv)


def run_shape(shape: str, kernel: int, regions: int, args: argparse.Namespace) -> dict:
    out = args.out / f"{shape}-k{kernel}-r{regions}-b{args.batch}.json"
    drconv = Path(sys.executable).with_name("drconv")
    command = [
        str(drconv), "benchmark", "--layer", shape, "--kernel", str(kernel), "--regions", str(regions),
        "--batch", str(args.batch), "--threads", str(args.threads), "--iters", str(args.iters),
        "--backend", args.backend, "--json", str(out),
    ]  # fmt: skip
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())


def ratios(result: dict) -> dict[str, float]:
    p50 = {row["backend"]: row["p50_ms"] for row in result["results"]}
    return {f"{a}/{b}": p50[a] / p50[b] for a, b in PAIRS if a in p50 and b in p50} | {
        f"{a} ms": p50[a] for pair in PAIRS for a in pair if a in p50
    }


def main(argv: list[str]) -> None:
    args = parse(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    shapes = SHAPES
    if args.only:
        shapes = [(s, int(k), int(r)) for s, k, r in (item.split(":") for item in args.only.split(","))]
    rows = []
    for shape, kernel, regions in shapes:
        result = run_shape(shape, kernel, regions, args)
        rows.append((f"{shape} k{kernel} R{regions}", ratios(result)))
        print(rows[-1][0], {k: round(v, 3) for k, v in rows[-1][1].items()}, file=sys.stderr, flush=True)
    columns = sorted({key for _, r in rows for key in r}, key=lambda k: (" ms" in k, k))
    print(f"| layer (N={args.batch}) | " + " | ".join(columns) + " |")
    print("|" + " --- |" * (len(columns) + 1))
    for name, r in rows:
        print(f"| {name} | " + " | ".join(f"{r[c]:.3g}" if c in r else "-" for c in columns) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
