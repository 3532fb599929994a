"""A benchmark's results: per-backend statistics and ratios, as a rich table, JSON and a PNG plot."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from rich import box
from rich.table import Table

from drconv._atomic import atomic_path, write_bytes
from drconv.benchmark.timing import Backend, Stats
from drconv.errors import DrconvError

__all__ = [
    "SCHEMA",
    "Result",
    "image_format",
    "noisy",
    "plot",
    "pyplot",
    "results",
    "save_png",
    "table",
    "to_json",
    "write_json",
]

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Result:
    backend: str
    device: str
    items: int
    stats: Stats
    throughput: float  # items per second at the median latency
    bound: str | None  # the backend whose p50 this one's is divided by (the same multiply-adds, dense)
    ratio_to_bound: float | None
    ratio_to_first: float
    max_rel_error: float | None  # vs the reference op, checked before timing; None where not comparable

    def to_dict(self) -> dict:
        out = {"backend": self.backend, "device": self.device, "items": self.items}
        out |= asdict(self.stats)
        out |= {k: v for k, v in asdict(self).items() if k not in ("backend", "device", "items", "stats")}
        return out


def results(backends: list[Backend], samples: dict[str, list[float]], errors: dict[str, float]) -> list[Result]:
    """Statistics of each backend, with its ratio to its bound and to the first backend (p50 / p50)."""
    stats = {b.name: Stats.of(samples[b.name]) for b in backends}
    first = stats[backends[0].name].p50_ms
    out = []
    for b in backends:
        s = stats[b.name]
        bound = stats[b.bound].p50_ms if b.bound else None
        out.append(
            Result(
                backend=b.name,
                device="cuda" if b.cuda else "cpu",
                items=b.items,
                stats=s,
                throughput=b.items / (s.p50_ms / 1e3),
                bound=b.bound,
                ratio_to_bound=s.p50_ms / bound if bound else None,
                ratio_to_first=s.p50_ms / first,
                max_rel_error=errors.get(b.name),
            )
        )
    return out


# p50 over the fastest call above which a backend's timings are called noisy. On an idle
# 2-core machine every CPU backend stayed within 1.11; runs taken while the machine was
# busy read 1.45-1.53 for some backend, and their ratios to the bound moved by up to 25%.
NOISY = 1.25


def noisy(rows: list[Result], limit: float = NOISY) -> dict[str, float]:
    """Backends whose p50 exceeds `limit` times their fastest call, with that factor."""
    return {r.backend: r.stats.p50_ms / r.stats.min_ms for r in rows if r.stats.p50_ms > limit * r.stats.min_ms}


def _ms(value: float) -> str:
    return f"{value:.3f}" if value < 10 else f"{value:.1f}" if value < 1000 else f"{value:.0f}"


def table(title: str, rows: list[Result], bound_is: str = "the dense conv of the same shape") -> Table:
    """Latencies in ms; `/bound` is p50 over the p50 of the backend's bound, `/first` over the first row's."""
    groups: dict[str, list[str]] = {}
    for r in rows:
        if r.bound:
            groups.setdefault(r.bound, []).append(r.backend)
    caption = None
    if groups:
        pairs = "; ".join(f"{', '.join(names)} -> {bound}" for bound, names in groups.items())
        caption = f"/bound: p50 over the p50 of {bound_is} ({pairs})"
    out = Table(
        title=title, title_justify="left", caption=caption, caption_justify="left", box=box.SIMPLE_HEAD, padding=(0, 0)
    )
    # Long file names fold onto a second line rather than squeezing the figures.
    out.add_column("backend", max_width=20, overflow="fold")
    for col in ("p50", "p90", "p99", "mean", "min", "std", "items/s", "/bound", "/first"):
        out.add_column(col, justify="right", no_wrap=True)
    for r in rows:
        s = r.stats
        out.add_row(
            r.backend,
            *(_ms(v) for v in (s.p50_ms, s.p90_ms, s.p99_ms, s.mean_ms, s.min_ms, s.std_ms)),
            f"{r.throughput:,.0f}",
            _ratio(r.ratio_to_bound) if r.ratio_to_bound is not None else "-",
            _ratio(r.ratio_to_first),
        )
    return out


def _ratio(value: float) -> str:
    """Two decimals, or three significant digits where two decimals would round to 0.00."""
    return f"{value:.2f}" if value >= 0.01 else f"{value:.3g}"


def to_json(env: dict, config: dict, rows: list[Result], skipped: dict[str, str]) -> dict:
    return {
        "schema_version": SCHEMA_VERSION,
        "env": env,
        "config": config,
        "results": [r.to_dict() for r in rows],
        "skipped": skipped,
    }


def write_json(path: str | os.PathLike, document: dict) -> None:
    write_bytes(path, (json.dumps(document, indent=2) + "\n").encode(), "--json")


def pyplot():
    """matplotlib.pyplot, headless."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def image_format(path: str | os.PathLike, what: str = "--plot") -> str:
    """The image format `path`'s extension names (png, svg, pdf, ...: matplotlib's), or a one-line error."""
    from matplotlib.backend_bases import FigureCanvasBase

    formats = FigureCanvasBase.get_supported_filetypes()
    extension = Path(path).suffix.lower().removeprefix(".")
    if extension not in formats:
        named = f"extension .{extension}" if extension else "no extension"
        raise DrconvError(
            f"{what} {path}: {named}, which is no image format; end the name with one of "
            f"{', '.join('.' + f for f in sorted(formats))}"
        )
    return extension


def save_png(fig, path: str | os.PathLike, what: str = "--plot") -> None:
    """Write the figure atomically, in the format its extension names (PNG at 120 dpi), and release it."""
    image = image_format(path, what)
    with atomic_path(Path(path), what) as tmp:
        fig.savefig(tmp, format=image, dpi=120)
    pyplot().close(fig)


def plot(path: str | os.PathLike, title: str, rows: list[Result]) -> None:
    """Bars of p50 with whiskers up to p90, and each bound's p50 as a dashed line; PNG, headless."""
    plt = pyplot()
    names = [r.backend for r in rows]
    p50 = [r.stats.p50_ms for r in rows]
    whisker = [[0.0] * len(rows), [r.stats.p90_ms - r.stats.p50_ms for r in rows]]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(rows) + 2), 4.2), layout="constrained")
    bounds = {r.bound for r in rows if r.bound}
    colors = ["#9e9e9e" if r.backend in bounds else "#1f77b4" for r in rows]
    ax.bar(names, p50, yerr=whisker, capsize=4, color=colors)
    for i, bound in enumerate(sorted(bounds)):
        level = next(r.stats.p50_ms for r in rows if r.backend == bound)
        ax.axhline(level, linestyle="--", color=f"C{i + 1}", label=f"bound: {bound} p50 {level:.3g} ms")
    ax.set_ylabel("latency, ms (bar p50, whisker p90)")
    ax.set_title(title, fontsize=10)
    ax.tick_params(axis="x", labelrotation=20)
    if bounds:
        ax.legend(fontsize=8)
    save_png(fig, path)


_NUMBER = {"type": "number"}
_MS = {"type": "number", "minimum": 0}
SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "drconv benchmark result",
    "type": "object",
    "required": ["schema_version", "env", "config", "results", "skipped"],
    "properties": {
        "schema_version": {"const": SCHEMA_VERSION},
        "env": {
            "type": "object",
            "required": ["date", "cpu", "cpu_count", "threads", "gpu", "versions", "git"],
            "properties": {
                "date": {"type": "string"},
                "cpu": {"type": "string"},
                "cpu_count": {"type": "integer"},
                "threads": {"type": "integer", "minimum": 1},
                "gpu": {"type": ["object", "null"]},
                "versions": {"type": "object", "required": ["drconv", "torch", "onnxruntime"]},
                "git": {"type": ["string", "null"]},
            },
        },
        "config": {
            "type": "object",
            "required": ["mode", "device", "warmup", "burst", "pause_ms", "command"],
            "properties": {
                "mode": {"enum": ["layer", "model", "files"]},
                "device": {"enum": ["cpu", "cuda"]},
                "warmup": {"type": "integer", "minimum": 0},
                "iters": {"type": ["integer", "null"]},
                "seconds": {"type": ["number", "null"]},
                "burst": {"type": "integer", "minimum": 1},
                "pause_ms": {"type": "number", "minimum": 0},
                "command": {"type": "string"},
            },
        },
        "results": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": [
                    "backend",
                    "device",
                    "items",
                    "iters",
                    "p50_ms",
                    "p90_ms",
                    "p99_ms",
                    "mean_ms",
                    "min_ms",
                    "std_ms",
                    "throughput",
                    "bound",
                    "ratio_to_bound",
                    "ratio_to_first",
                    "max_rel_error",
                ],
                "properties": {
                    "backend": {"type": "string"},
                    "device": {"enum": ["cpu", "cuda"]},
                    "items": {"type": "integer", "minimum": 1},
                    "iters": {"type": "integer", "minimum": 1},
                    **{k: _MS for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms", "std_ms")},
                    "throughput": {"type": "number", "exclusiveMinimum": 0},
                    "bound": {"type": ["string", "null"]},
                    "ratio_to_bound": {"type": ["number", "null"], "exclusiveMinimum": 0},
                    "ratio_to_first": {**_NUMBER, "exclusiveMinimum": 0},
                    "max_rel_error": {"type": ["number", "null"], "minimum": 0},
                },
            },
        },
        "skipped": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}
