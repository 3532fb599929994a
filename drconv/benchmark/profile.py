"""Where a model's time goes, from the runtime's own profiler: time per operator type, side by
side with a baseline (`drconv profile`). No torch here: it profiles .onnx files.

ONNX Runtime's profiler records every node's kernel time; OpenVINO's (PERF_COUNT) every
executed operation's. Both are summed per operator type over the profiled runs and divided
by them: node counts, µs per run. A profiler adds its own cost to each node, so the totals
exceed a timed run's; the shares and the differences between two graphs are what to read.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from drconv.errors import DrconvError

__all__ = ["RUNTIMES", "OpTime", "compare", "profile_file", "totals"]

RUNTIMES = ("ort", "openvino")
WARMUP = 10  # unprofiled-equivalent runs first: ONNX Runtime's are in its profile and left out


@dataclass(frozen=True)
class OpTime:
    """One operator type in a profile: how many nodes, and their time per run."""

    op: str
    nodes: int
    us: float


def _ort(path: Path, x: np.ndarray, threads: int | None, runs: int) -> dict[str, OpTime]:
    from drconv.runtime.ort import image_input, session

    with tempfile.TemporaryDirectory(prefix="drconv-profile-") as tmp:
        sess = session(path, threads=threads, spinning=False, profile=Path(tmp) / "ort")
        feed = {image_input(path)[0]: x}
        for _ in range(WARMUP + runs):
            sess.run(None, feed)
        events = json.loads(Path(sess.end_profiling()).read_text())
    # Only the nodes of the last `runs` runs (each one "model_run" span): those from the first's start on.
    starts = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e["name"] == "model_run")[-runs:]
    total: dict[str, float] = defaultdict(float)
    nodes: dict[str, set[str]] = defaultdict(set)
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        if e["ts"] < starts[0]:
            continue
        op = e["args"]["op_name"]
        total[op] += e["dur"]
        nodes[op].add(e["name"])
    return {op: OpTime(op, len(nodes[op]), total[op] / len(starts)) for op in total}


def _openvino(path: Path, x: np.ndarray, threads: int | None, runs: int) -> dict[str, OpTime]:
    from drconv.runtime import openvino
    from drconv.runtime.ort import needs_custom_ops

    compiled = openvino.compile(path, threads=threads, extension=needs_custom_ops(path), profile=True)
    request = compiled.create_infer_request()
    for _ in range(WARMUP):
        request.infer([x])
    total: dict[str, float] = defaultdict(float)
    nodes: dict[str, set[str]] = defaultdict(set)
    for _ in range(runs):
        request.infer([x])
        for info in request.profiling_info:  # this run's operations
            if str(info.status).endswith("EXECUTED"):  # not NOT_RUN or OPTIMIZED_OUT
                total[info.node_type] += info.real_time.total_seconds() * 1e6
                nodes[info.node_type].add(info.node_name)
    return {op: OpTime(op, len(nodes[op]), total[op] / runs) for op in total}


def profile_file(
    path: str | os.PathLike, runtime: str, shape: tuple[int, ...], threads: int | None = None, runs: int = 100
) -> dict[str, OpTime]:
    """Time per operator type of the .onnx file `path` in `runtime` ("ort" or "openvino", CPU,
    float32), over `runs` runs on a random input of `shape` (the file's fixed axes must agree)."""
    from drconv.benchmark.files import fitted_shape

    path = Path(path)
    if runtime not in RUNTIMES:
        raise DrconvError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    if runs < 1:
        raise DrconvError(f"runs must be >= 1, got {runs}")
    shape = fitted_shape(path, shape)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    return (_ort if runtime == "ort" else _openvino)(path, x, threads, runs)


def compare(model: dict[str, OpTime], baseline: dict[str, OpTime] | None = None) -> list[dict]:
    """One row per operator type, the model's slowest first: nodes and µs per run of each, and
    the model's µs less the baseline's."""
    ops = sorted(set(model) | set(baseline or {}), key=lambda op: -(model[op].us if op in model else 0.0))
    rows = []
    for op in ops:
        mine = model.get(op, OpTime(op, 0, 0.0))
        row = {"op": op, "nodes": mine.nodes, "us": round(mine.us, 2)}
        if baseline is not None:
            base = baseline.get(op, OpTime(op, 0, 0.0))
            row |= {
                "baseline_nodes": base.nodes,
                "baseline_us": round(base.us, 2),
                "diff_us": round(mine.us - base.us, 2),
            }
        rows.append(row)
    return rows


def totals(profile: dict[str, OpTime]) -> OpTime:
    """Every operator type together."""
    return OpTime("total", sum(t.nodes for t in profile.values()), sum(t.us for t in profile.values()))
