"""The scripts in benchmarks/ run, on tiny sizes: a refactor of drconv cannot break them silently.

They measure; these runs only prove that each script still imports, runs end to end and
writes what it says. The GPU scripts run under `-m gpu` (benchmarks/gpu_suite.sh) and are
import-checked here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from drconv.libraries import plugin_path

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "benchmarks"


def _run(*args: str, timeout: int = 300) -> str:
    done = subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{args[0]} exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return done.stdout


def test_every_script_is_covered_here():
    covered = {"ab_ort_library", "bench_layers", "bench_scaling", "bench_torch_overhead", "bench_model_breakdown"}
    covered |= {"bench_coherent", "ab_filter_layout"}
    covered |= {"bench_cuda", "profile_cuda", "_timing"}
    assert {p.stem for p in SCRIPTS.glob("*.py")} == covered


def test_bench_layers(tmp_path):
    out = _run(str(SCRIPTS / "bench_layers.py"), "--out", str(tmp_path), "--iters", "3", "--only", "8x5x5:1:2",
               "--backend", "ort-custom,ort-dense,torch,torch-dense")  # fmt: skip
    written = list(tmp_path.glob("*.json"))
    assert len(written) == 1 and json.loads(written[0].read_text())["config"]["mode"] == "layer"
    assert "8x5x5" in out


def test_bench_scaling(tmp_path):
    _run(str(SCRIPTS / "bench_scaling.py"), "--channels", "4", "--regions", "1", "2", "--sizes", "8", "--iters", "3",
         "--warmup", "1", "--plot", str(tmp_path / "s.png"), "--json", str(tmp_path / "s.json"))  # fmt: skip
    assert (tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "s.json").read_text())


def test_bench_torch_overhead():
    out = _run(str(SCRIPTS / "bench_torch_overhead.py"), "--iters", "5", "--warmup", "1")
    assert "conv2d" in out


def test_bench_model_breakdown():
    out = _run(str(SCRIPTS / "bench_model_breakdown.py"), "--size", "64", "--iters", "3", "--warmup", "1")
    assert "export" in out


def test_bench_coherent(tmp_path):
    out = tmp_path / "coherent.json"
    _run(str(SCRIPTS / "bench_coherent.py"), "--size", "64", "--iters", "3", "--threads", "1", "--json", str(out))
    document = json.loads(out.read_text())
    assert set(document["p50_ms"]) == {"random-init", "coherent", "twin"}
    assert all(0.0 <= share <= 1.0 for share in document["same_region_as_right_neighbour"].values())
    sys.path.insert(0, str(SCRIPTS))
    try:
        from bench_coherent import pattern
    finally:
        sys.path.remove(str(SCRIPTS))
    # R = 8: two rows of four rectangles, each region one block of pixels
    regions = pattern(8, 16, 16)[0].argmax(axis=0)
    assert (regions[:8, :4] == 0).all() and (regions[:8, 12:] == 3).all() and (regions[8:, 4:8] == 5).all()


def test_ab_filter_layout():
    out = " ".join(_run(str(SCRIPTS / "ab_filter_layout.py"), "--size", "32", "--iters", "4").split())
    assert "B (IHWO through a Transpose, 3 nodes)" in out and "B/A median of pairs" in out


def test_ab_ort_library():
    library = plugin_path("onnxruntime")
    assert library is not None, "libdrconv_onnxruntime.so is not built (make plugins)"
    out = _run(str(SCRIPTS / "ab_ort_library.py"), str(library), str(library), "--layer", "8x5x5", "--iters", "5")
    assert "B / A" in out or "b/a" in out.lower()


def test_ab_ort_library_blocked_model(tmp_path):
    from drconv.export import to_onnx
    from drconv.models import create

    library = plugin_path("onnxruntime")
    model = to_onnx(create("drconv-shufflenetv2-0.5x").eval(), torch.randn(1, 3, 64, 64), tmp_path / "zoo.onnx")
    args = ("--model", str(model), "--size", "64", "--iters", "3", "--b-blocked")
    out = _run(str(SCRIPTS / "ab_ort_library.py"), str(library), str(library), *args)
    assert "B blocked" in out and "B/A" in out  # the outputs were checked equal before timing


@pytest.mark.parametrize("script", ["bench_cuda", "profile_cuda"])
def test_the_gpu_scripts_parse_their_arguments(script):
    assert "usage" in _run(str(SCRIPTS / f"{script}.py"), "--help").lower()


@pytest.mark.gpu
def test_bench_cuda_runs_on_a_gpu(tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("CUDA is not available: torch.cuda.is_available() is False")
    _run(str(SCRIPTS / "bench_cuda.py"), "--dtype", "float32", "--batch", "1", "--regions", "2", "--rounds", "2",
         "--json", str(tmp_path / "b.json"))  # fmt: skip
    assert json.loads((tmp_path / "b.json").read_text())["runs"]
