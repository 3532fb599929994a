"""Timing backends side by side: in alternation, with CUDA events where the work is on a GPU.

Each round calls every backend once (A B C A B C ...), so machine drift, thermal state and
neighbours' load hit all of them alike; a backend timed alone in its own loop would not be
comparable with the next one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Backend", "Stats", "alternate"]

MIN_ROUNDS = 3  # percentiles of fewer samples say nothing


@dataclass(frozen=True)
class Backend:
    """One thing to time: `run` does one inference (inputs prepared beforehand)."""

    name: str
    run: Callable[[], object]
    items: int = 1  # images per call, for throughput
    bound: str | None = None  # the backend whose p50 bounds this one from below (same multiply-adds)
    cuda: bool = False  # time with CUDA events on the current stream instead of the host clock


@dataclass(frozen=True)
class Stats:
    """Latency statistics of one backend in milliseconds."""

    iters: int
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    min_ms: float
    std_ms: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Stats:
        ms = np.asarray(seconds, dtype=np.float64) * 1e3
        p50, p90, p99 = np.percentile(ms, [50, 90, 99])
        return cls(len(ms), float(ms.mean()), float(p50), float(p90), float(p99), float(ms.min()), float(ms.std()))


def _timer(backend: Backend) -> Callable[[], float]:
    """A function that runs the backend once and returns its latency in seconds."""
    if not backend.cuda:

        def host() -> float:
            start = time.perf_counter()
            backend.run()
            return time.perf_counter() - start

        return host

    import torch

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def device() -> float:
        # Nothing queued before may run inside the interval, and the interval ends when
        # the GPU is done, not when the launches return.
        torch.cuda.synchronize()
        start.record()
        backend.run()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3

    return device


def alternate(
    backends: Sequence[Backend],
    warmup: int,
    iters: int | None = None,
    seconds: float | None = None,
    progress: Callable[[float], None] | None = None,
) -> dict[str, list[float]]:
    """Seconds per call of each backend, from rounds of one call each.

    Runs `warmup` untimed rounds, then `iters` rounds, or rounds until `seconds` of wall time
    have passed (at least MIN_ROUNDS). `progress` gets the fraction done after every round.
    """
    if (iters is None) == (seconds is None):
        raise ValueError("give iters or seconds, not both")
    timers = [(b.name, _timer(b)) for b in backends]
    for _ in range(warmup):
        for _, timer in timers:
            timer()
    samples: dict[str, list[float]] = {name: [] for name, _ in timers}
    began = time.perf_counter()
    rounds = 0
    while True:
        for name, timer in timers:
            samples[name].append(timer())
        rounds += 1
        if iters is not None:
            done = rounds / iters
        else:
            elapsed = time.perf_counter() - began
            done = 1.0 if rounds >= MIN_ROUNDS and elapsed >= seconds else min(elapsed / seconds, 0.99)
        if progress is not None:
            progress(min(done, 1.0))
        if done >= 1.0 or math.isclose(done, 1.0):
            return samples
