"""How the region conv's cost grows: with R at 56x56, and with the image size at R=8.

Runs `drconv benchmark --layer`'s backends (drconv.benchmark) for each point, side by side
in alternation, and writes the medians as JSON and as a two-panel plot. The custom op
should stay flat in R (one filter per pixel) while the portable graph and the naive
formulation grow linearly (R filters per pixel). Run:
`python benchmarks/bench_scaling.py --threads 2 --iters 60 --plot docs/img/scaling.png --json build/scaling.json`.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # see bench_onnx.py

import argparse
import json
import tempfile
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import track

from drconv.benchmark import env
from drconv.benchmark.backends import LayerSpec, prepare_layer
from drconv.benchmark.report import pyplot, results, save_png, write_json
from drconv.benchmark.timing import alternate

BACKENDS = ["torch", "torch-naive", "torch-dense", "ort-custom", "ort-portable", "ort-dense"]


def point(spec: LayerSpec, threads: int, iters: int, warmup: int) -> dict[str, float]:
    """p50 in ms of each backend at one layer shape."""
    with tempfile.TemporaryDirectory() as tmp:
        prepared = prepare_layer(spec, BACKENDS, "cpu", threads, Path(tmp))
        with torch.no_grad():
            samples = alternate(prepared.backends, warmup, iters)
    return {r.backend: r.stats.p50_ms for r in results(prepared.backends, samples, prepared.errors)}


def plot(path: Path, by_regions: dict[int, dict], by_size: dict[int, dict], title: str) -> None:
    fig, (left, right) = pyplot().subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    for i, name in enumerate(BACKENDS):
        style = {"color": f"C{i}", "marker": "o", "linestyle": "--" if name.endswith("-dense") else "-"}
        left.plot(list(by_regions), [p[name] for p in by_regions.values()], label=name, **style)
        right.plot(list(by_size), [p[name] for p in by_size.values()], label=name, **style)
    left.set(xlabel="regions R (56x56)", ylabel="p50 latency, ms", title="cost vs R (linear axes)")
    left.set_xticks(list(by_regions), [str(r) for r in by_regions])
    right.set(
        xscale="log",
        yscale="log",
        xlabel="height = width (R=8)",
        ylabel="p50 latency, ms",
        title="cost vs size (log axes)",
    )
    right.minorticks_off()
    right.set_xticks(list(by_size), [str(s) for s in by_size])
    left.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    save_png(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--regions", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--sizes", type=int, nargs="+", default=[28, 56, 112])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iters", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--plot", type=Path, default=Path("docs/img/scaling.png"))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--replot", type=Path, help="only redraw --plot from a JSON this script wrote")
    args = parser.parse_args()
    if args.replot:
        doc = json.loads(args.replot.read_text())
        as_int = lambda sweep: {int(k): v for k, v in sweep.items()}  # noqa: E731
        threads = doc["env"]["threads"]
        title = (
            f"region conv C=K={args.channels} k=3, N=1, {threads} threads, p50 in alternation ({doc['env']['date']})"
        )
        plot(args.plot, as_int(doc["by_regions"]), as_int(doc["by_size"]), title)
        return
    torch.set_num_threads(args.threads)
    c = args.channels

    by_regions = {
        r: point(LayerSpec(1, c, 56, 56, r, 3, c), args.threads, args.iters, args.warmup)
        for r in track(args.regions, description="R sweep", console=Console(stderr=True))
    }
    by_size = {
        s: point(LayerSpec(1, c, s, s, 8, 3, c), args.threads, args.iters, args.warmup)
        for s in track(args.sizes, description="size sweep", console=Console(stderr=True))
    }
    for label, sweep in (("R (56x56)", by_regions), ("size (R=8)", by_size)):
        print(f"| {label} | " + " | ".join(BACKENDS) + " | ort-custom / ort-dense | ort-portable / ort-custom |")
        print("|" + "---|" * (len(BACKENDS) + 3))
        for key, p in sweep.items():
            cells = " | ".join(f"{p[name]:.3f}" for name in BACKENDS)
            print(f"| {key} | {cells} | {p['ort-custom'] / p['ort-dense']:.2f} | "
                  f"{p['ort-portable'] / p['ort-custom']:.2f} |")  # fmt: skip
        print()
    title = f"region conv C=K={c} k=3, N=1, {args.threads} threads, p50 of {args.iters} rounds in alternation"
    plot(args.plot, by_regions, by_size, title)
    if args.json:
        doc = {"env": env.collect(args.threads), "by_regions": by_regions, "by_size": by_size}
        write_json(args.json, doc)
    print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
