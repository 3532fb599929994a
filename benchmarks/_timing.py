"""Shared by the benchmark scripts: run backends in alternation and print medians against a bound."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from rich.console import Console
from rich.table import Table


def alternate(backends: dict[str, Callable[[], object]], iters: int, warmup: int) -> dict[str, list[float]]:
    """Seconds per call of each backend, run A B C A B C ... so that machine drift hits all alike."""
    times: dict[str, list[float]] = {name: [] for name in backends}
    for i in range(warmup + iters):
        for name, fn in backends.items():
            start = time.perf_counter()
            fn()
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def print_table(title: str, times: dict[str, list[float]], bound: str, ratio_label: str = "x bound") -> None:
    """Median, p90 and the ratio of each median to the median of `bound`."""
    reference = statistics.median(times[bound])
    table = Table(title=title)
    for col in ("backend", "median ms", "p90 ms", ratio_label):
        table.add_column(col, justify="right" if col != "backend" else "left")
    for name, samples in times.items():
        ordered = sorted(samples)
        median = statistics.median(ordered)
        p90 = ordered[int(0.9 * (len(ordered) - 1))]
        table.add_row(name, f"{median * 1e3:.3f}", f"{p90 * 1e3:.3f}", f"{median / reference:.2f}")
    Console().print(table)
