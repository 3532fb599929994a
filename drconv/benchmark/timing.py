"""Timing backends side by side: in alternation, with CUDA events where the work is on a GPU.

Rounds take every backend in turn (A B C A B C ...), so machine drift, thermal state and
neighbours' load hit all of them alike; backends timed one after the other in loops of
their own would not be comparable. Within a round each backend gets a short burst of
calls, after a pause and one untimed call: ONNX Runtime's and OpenMP's idle workers spin
for milliseconds after a call (their defaults, which is what users run), and called
strictly A B C A B C those spinning threads take the cores from the next backend (measured
on 2 cores: a RegionConv2d node read 1.6x slower right after a PyTorch conv, and PyTorch
eager 2x slower after ONNX Runtime). The pause lets them park, the untimed call pays the
wake-up, and the burst measures each backend as a serving loop runs it, in its own
default configuration.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Backend", "Prepared", "Stats", "alternate", "default_threads"]

MIN_ROUNDS = 3  # percentiles of fewer samples say nothing
BURST = 10  # timed calls per backend per round
PAUSE_S = 0.05  # before each burst: longer than the runtimes' spin-then-park


@dataclass(frozen=True)
class Backend:
    """One thing to time: `run` does one inference (inputs prepared beforehand)."""

    name: str
    run: Callable[[], object]
    items: int = 1  # images per call, for throughput
    bound: str | None = None  # the backend whose p50 bounds this one from below (same multiply-adds)
    cuda: bool = False  # time with CUDA events on the current stream instead of the host clock


@dataclass
class Prepared:
    """Backends ready to time, with what the checks found and what was left out."""

    backends: list[Backend] = field(default_factory=list)
    errors: dict[str, float] = field(default_factory=dict)  # max relative error vs the reference
    skipped: dict[str, str] = field(default_factory=dict)  # backend -> why it is not here
    config: dict = field(default_factory=dict)


def available_cores() -> int:
    """The CPU cores (logical) this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_threads() -> int:
    """One per core this process may use: what PyTorch and ONNX Runtime pick on their own."""
    try:
        import torch
    except ImportError:  # the torch-free runtime: the cores this process may run on
        return available_cores()
    return torch.get_num_threads()


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
    burst: int = BURST,
    pause_s: float = PAUSE_S,
) -> dict[str, list[float]]:
    """Seconds per call of each backend: `iters` calls each, or as many as fit in `seconds`.

    First `warmup` untimed calls of each backend (in turn). Then rounds: for each backend,
    a pause of `pause_s`, one untimed call, `burst` timed calls. With `seconds`, rounds
    go on until that much wall time has passed (at least MIN_ROUNDS of them). `progress`
    gets the fraction done after every round.
    """
    if (iters is None) == (seconds is None):
        raise ValueError("give iters or seconds, not both")
    if burst < 1:
        raise ValueError(f"burst must be >= 1, got {burst}")
    timers = [(b, _timer(b)) for b in backends]
    for backend, _ in timers:
        for _ in range(warmup):
            backend.run()
    samples: dict[str, list[float]] = {b.name: [] for b, _ in timers}
    began = time.perf_counter()
    rounds = 0
    while True:
        calls = burst if iters is None else min(burst, iters - rounds * burst)
        for backend, timer in timers:
            time.sleep(pause_s)
            backend.run()
            samples[backend.name].extend(timer() for _ in range(calls))
        rounds += 1
        if iters is not None:
            done = min(rounds * burst / iters, 1.0)
        else:
            elapsed = time.perf_counter() - began
            done = 1.0 if rounds >= MIN_ROUNDS and elapsed >= seconds else min(elapsed / seconds, 0.99)
        if progress is not None:
            progress(done)
        if done >= 1.0:
            return samples
