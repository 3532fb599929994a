"""The benchmark scripts' shorthand over drconv.benchmark: named callables in, a table of medians out."""

from __future__ import annotations

from collections.abc import Callable

from rich.console import Console

from drconv.benchmark.report import results, table
from drconv.benchmark.timing import Backend
from drconv.benchmark.timing import alternate as _alternate


def alternate(backends: dict[str, Callable[[], object]], iters: int, warmup: int) -> dict[str, list[float]]:
    """Seconds per call of each backend, run A B C A B C ... so that machine drift hits all alike."""
    return _alternate([Backend(name, fn) for name, fn in backends.items()], warmup, iters)


def print_table(title: str, times: dict[str, list[float]], bound: str, ratio_label: str = "x bound") -> None:
    """Statistics of each backend, and the ratio of each p50 to that of `bound` (/bound)."""
    rows = results([Backend(name, lambda: None, bound=bound if name != bound else None) for name in times], times, {})
    Console().print(table(f"{title} (/bound = {ratio_label})", rows))
