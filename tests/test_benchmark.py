"""`drconv benchmark`: its statistics, its alternation, its outputs (table, JSON against the schema, PNG), its errors.

Tiny sizes and few rounds: these check structure and honesty (checks before timing,
ratios that follow from the figures), not speed; speed is in docs/performance.md.
"""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from test_cli import run

from drconv.benchmark import LAYER_BACKENDS, MODEL_BACKENDS, SCHEMA, Backend, Prepared, Stats, alternate
from drconv.benchmark.backends import LayerSpec, layer_inputs, naive_region_conv
from drconv.benchmark.files import check
from drconv.benchmark.report import noisy, results
from drconv.errors import DrconvError


def test_stats_of_known_samples():
    s = Stats.of([0.004, 0.001, 0.003, 0.002])  # seconds
    assert s.iters == 4
    assert s.min_ms == pytest.approx(1.0)
    assert s.mean_ms == pytest.approx(2.5)
    assert s.p50_ms == pytest.approx(2.5)
    assert s.std_ms == pytest.approx(math.sqrt(1.25))
    assert s.p50_ms <= s.p90_ms <= s.p99_ms <= 4.0


def test_alternate_bursts_in_turn_and_skips_warmup():
    calls = []
    backends = [Backend(name, lambda name=name: calls.append(name)) for name in "abc"]
    samples = alternate(backends, warmup=2, iters=5, burst=2, pause_s=0)
    # warmup per backend, then rounds of (one untimed call + a burst) per backend in turn;
    # the last burst is cut to make exactly `iters` timed calls
    rounds = ["a"] * 3 + ["b"] * 3 + ["c"] * 3
    assert calls == list("aabbcc") + rounds * 2 + list("aabbcc")
    assert {name: len(s) for name, s in samples.items()} == {"a": 5, "b": 5, "c": 5}
    assert all(t >= 0 for s in samples.values() for t in s)


def test_alternate_by_time_and_progress():
    seen = []
    samples = alternate([Backend("a", lambda: None)], warmup=0, seconds=0.05, progress=seen.append, burst=1)
    assert len(samples["a"]) >= 3
    assert seen[-1] == 1.0 and all(0 <= f <= 1 for f in seen)
    with pytest.raises(ValueError, match="iters or seconds"):
        alternate([Backend("a", lambda: None)], warmup=0, iters=3, seconds=1.0)


def test_naive_formulation_matches_the_op():
    spec = LayerSpec(2, 5, 9, 11, 3, 3, 4)
    x, filters, guide = layer_inputs(spec)
    import drconv

    torch.testing.assert_close(naive_region_conv(x, filters, guide, 1), drconv.region_conv(x, filters, guide))


def test_a_wrong_backend_is_refused_before_timing():
    reference = np.ones((1, 2, 3, 3))
    prepared = Prepared()
    check(prepared, "good", lambda: [reference.astype(np.float32)], reference, "cpu")
    assert prepared.errors["good"] == 0.0
    with pytest.raises(DrconvError, match="backend bad disagrees with the reference"):
        check(prepared, "bad", lambda: [reference * 1.01], reference, "cpu")
    with pytest.raises(DrconvError, match="disagrees"):
        check(prepared, "nan", lambda: [reference * np.nan], reference, "cpu")


def _validate(doc: dict) -> None:
    import jsonschema  # here, not at the top: the GPU tests in this file run where it is absent

    jsonschema.validate(doc, SCHEMA)
    by_name = {r["backend"]: r for r in doc["results"]}
    first = doc["results"][0]
    for r in doc["results"]:
        assert r["min_ms"] <= r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"]
        assert r["throughput"] == pytest.approx(r["items"] / r["p50_ms"] * 1e3)
        assert r["ratio_to_first"] == pytest.approx(r["p50_ms"] / first["p50_ms"])
        if r["bound"] is not None:
            assert r["ratio_to_bound"] == pytest.approx(r["p50_ms"] / by_name[r["bound"]]["p50_ms"])


def test_layer_benchmark_json_plot_and_table(tmp_path):
    out, png = tmp_path / "layer.json", tmp_path / "layer.png"
    result = run(
        "benchmark", "--layer", "6x13x11", "--regions", "3", "--kernel", "3", "--out-channels", "5", "--batch", "2",
        "--threads", "1", "--iters", "3", "--warmup", "1", "--json", str(out), "--plot", str(png),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    doc = json.loads(out.read_text())
    _validate(doc)
    assert [r["backend"] for r in doc["results"]] == list(LAYER_BACKENDS["cpu"])
    by_name = {r["backend"]: r for r in doc["results"]}
    assert by_name["ort-custom"]["bound"] == "ort-dense" and by_name["torch"]["bound"] == "torch-dense"
    for name, r in by_name.items():
        assert r["iters"] == 3 and r["items"] == 2  # --iters counts calls per backend
        if name.endswith("-dense"):
            assert r["max_rel_error"] is None and r["bound"] is None
        else:  # torch too: timed on IHWO filters, against the reference run on OIHW ones
            assert r["max_rel_error"] < 1e-3
    assert doc["config"]["layer"] == {
        "batch": 2, "channels": 6, "height": 13, "width": 11, "regions": 3, "kernel": 3, "out_channels": 5,
    }  # fmt: skip
    assert doc["config"]["command"].startswith("drconv benchmark --layer 6x13x11")
    assert doc["env"]["threads"] == 1 and doc["env"]["versions"]["torch"] == torch.__version__
    assert doc["config"]["burst"] >= 1 and doc["config"]["pause_ms"] > 0
    with Image.open(png) as image:
        assert image.format == "PNG" and image.width > 300 and image.height > 200
    for name in LAYER_BACKENDS["cpu"]:
        assert name in result.stdout
    assert "/bound" in result.stdout


def test_model_and_file_targets(tmp_path):
    onnx_path = tmp_path / "tiny.onnx"
    exported = run("export", "-o", str(onnx_path), "--input-shape", "1,3,32,32")
    assert exported.returncode == 0, exported.stderr
    out = tmp_path / "model.json"
    result = run(
        "benchmark", str(onnx_path), "--model", "drconv-tiny", "--input-shape", "1,3,40,36", "--batch", "2",
        "--iters", "2", "--warmup", "0", "--threads", "2", "--json", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    doc = json.loads(out.read_text())
    _validate(doc)
    names = [r["backend"] for r in doc["results"]]
    assert names == [*MODEL_BACKENDS["cpu"], "ort:tiny.onnx"]
    assert doc["config"]["input_shape"] == [2, 3, 40, 36]
    assert all(r["items"] == 2 and r["bound"] is None for r in doc["results"])
    assert doc["results"][1]["max_rel_error"] < 1e-3  # ort-custom checked against PyTorch eager


def test_seconds_instead_of_iters(tmp_path):
    out = tmp_path / "s.json"
    result = run(
        "benchmark", "--layer", "4x8x8", "--backend", "torch,torch-dense", "--seconds", "0.3", "--json", str(out)
    )
    assert result.returncode == 0, result.stderr
    doc = json.loads(out.read_text())
    _validate(doc)
    assert [r["backend"] for r in doc["results"]] == ["torch", "torch-dense"]
    assert doc["config"]["seconds"] == 0.3 and doc["config"]["iters"] is None
    assert doc["results"][0]["iters"] >= 3
    assert doc["results"][0]["iters"] == doc["results"][1]["iters"]  # same number of calls each


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--layer", "8x8x8", "--backend", "torch,nope"], "unknown backend 'nope'"),
        (["--layer", "8x8x8", "--backend", "trt"], "backend trt does not apply to --layer on cpu"),
        (["--backend", "ort-dense"], "backend ort-dense does not apply to models on cpu"),
        (["missing.onnx"], "missing.onnx: no such file"),
        (["missing.engine"], "missing.engine: no such file"),
        (["--layer", "8x8"], "must look like 64x56x56"),
        (["--layer", "8x8x8", "--kernel", "2"], "use an odd size"),
        (["--layer", "8x8x8", "--iters", "3", "--seconds", "1"], "give --iters or --seconds, not both"),
        (["--layer", "8x8x8", "--device", "cuda"], "CUDA is not available"),
        (["--input-shape", "1,4,64,64", "--backend", "torch"], "cannot run on input (1, 4, 64, 64)"),
        (["--layer", "8x8x8", "--input-shape", "1,3,8,8"], "--input-shape is for models and files, not --layer"),
        (["drconv-tiny", "--layer", "8x8x8"], "TARGETs is for models and files, not --layer"),
        (["--regions", "4"], "describe a --layer: add --layer CxHxW"),
        (["drconv-tiny", "--model", "drconv-tiny"], "give the model once"),
        (["x.onnx", "--checkpoint", "w.pt"], "--checkpoint loads weights into a model"),
    ],
)
def test_bad_input_is_one_line(tmp_path, args, message):
    if "--device" in args and torch.cuda.is_available():
        pytest.skip("this machine has CUDA, so --device cuda is not an error here")
    out = tmp_path / "never.json"
    result = run("benchmark", *args, "--json", str(out))
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_static_file_and_a_shape_that_does_not_fit(tmp_path):
    onnx_path = tmp_path / "static.onnx"
    assert run("export", "-o", str(onnx_path), "--static", "--input-shape", "1,3,32,32").returncode == 0
    result = run("benchmark", str(onnx_path), "--input-shape", "1,3,48,48")
    assert result.returncode == 1
    assert "does not fit" in result.stderr and "axis 2 is fixed to 32" in result.stderr


def test_an_engine_needs_cuda(tmp_path):
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"not really an engine")
    result = run("benchmark", str(engine))
    assert result.returncode == 1
    assert "is a TensorRT engine: it runs only with --device cuda" in result.stderr


def test_unwritable_json_fails_before_timing(tmp_path):
    target = tmp_path / "no" / "such" / "dir" / "out.json"
    result = run("benchmark", "--layer", "8x8x8", "--json", str(target))
    assert result.returncode == 1
    assert f"directory {target.parent} does not exist" in result.stderr
    assert "timing" not in result.stdout and not target.exists()


@pytest.mark.gpu
def test_layer_benchmark_on_cuda(tmp_path):
    out = tmp_path / "cuda.json"
    result = run("benchmark", "--layer", "16x20x20", "--device", "cuda", "--iters", "5", "--json", str(out))
    assert result.returncode == 0, result.stderr
    doc = json.loads(out.read_text())
    _validate(doc)
    names = [r["backend"] for r in doc["results"]]
    assert {"torch", "torch-naive", "cudnn-dense"} <= set(names)
    assert doc["env"]["gpu"]["name"] == torch.cuda.get_device_name(0)
    assert all(r["device"] == "cuda" for r in doc["results"])


def test_noisy_timings_are_named():
    backends = [Backend("steady", lambda: None, items=1), Backend("busy", lambda: None, items=1, bound="steady")]
    samples = {"steady": [1.00e-3, 1.02e-3, 1.05e-3], "busy": [1.0e-3, 1.6e-3, 1.7e-3]}
    rows = results(backends, samples, {})
    assert noisy(rows) == pytest.approx({"busy": 1.6})
    assert noisy(rows, limit=2.0) == {}


def test_model_against_its_plain_twin(tmp_path):
    out = tmp_path / "twin.json"
    result = run(
        "benchmark",
        "drconv-shufflenetv2-0.5x",
        "--baseline",
        "twin",
        "--backend",
        "torch",
        "--input-shape",
        "1,3,64,64",
        "--iters",
        "3",
        "--warmup",
        "1",
        "--json",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    assert data["config"]["baseline"] == "shufflenetv2-0.5x"
    rows = {r["backend"]: r for r in data["results"]}
    assert set(rows) == {"torch", "baseline:torch"}
    assert rows["torch"]["bound"] == "baseline:torch"
    assert rows["torch"]["ratio_to_bound"] == pytest.approx(rows["torch"]["p50_ms"] / rows["baseline:torch"]["p50_ms"])
    assert "same runtime on shufflenetv2-0.5x" in " ".join((result.stdout + result.stderr).split())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["shufflenetv2-0.5x", "--baseline", "twin"], "has no plain twin"),
        (["--layer", "8x8x8", "--baseline", "twin"], "--baseline is for models"),
        (["model.onnx", "--baseline", "twin"], "--baseline compares a model"),
    ],
)
def test_baseline_errors(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model.onnx").write_bytes(b"")
    result = run("benchmark", *args, "--iters", "1")
    assert result.returncode != 0
    assert message in " ".join((result.stdout + result.stderr).split())


def test_the_request_is_checked_before_anything_loads(tmp_path):
    from drconv.benchmark.request import DEFAULT_ITERS, BenchmarkRequest

    assert BenchmarkRequest().checked().iters == DEFAULT_ITERS
    assert BenchmarkRequest(seconds=1.0).checked().iters is None
    with pytest.raises(DrconvError, match="--model is for models and files, not --layer"):
        BenchmarkRequest(layer="8x8x8", model="drconv-tiny").checked()
    with pytest.raises(DrconvError, match="describe a --layer"):
        BenchmarkRequest(kernel=3).checked()
    with pytest.raises(DrconvError, match="one model at a time"):
        BenchmarkRequest(targets=["drconv-tiny", "drconv-shufflenetv2-0.5x"]).checked()
    onnx_only = BenchmarkRequest(targets=[str(tmp_path / "m.onnx")])
    assert onnx_only.files == [tmp_path / "m.onnx"] and not onnx_only.specs and not onnx_only.needs_torch
    assert BenchmarkRequest(targets=["drconv-tiny"]).needs_torch
    assert BenchmarkRequest(input_shape=(1, 3, 64, 48), batch=4).shape == (4, 3, 64, 48)
