"""Serving: Triton model repositories for four backends (`drconv triton`), a real Triton server
(`drconv serve`, nvidia-pytriton's bundled 2.51 with its python backend) under concurrent HTTP
and gRPC clients, the load test (`drconv benchmark --url`), and the user's mistakes.

Every network call goes to 127.0.0.1, every wait is bounded.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import onnx
import pytest
from google.protobuf import text_format
from onnx import TensorProto, helper
from tritonclient.grpc import model_config_pb2

from drconv.libraries import PLUGIN_FILES
from drconv.serving import load, repository

DRCONV = shutil.which("drconv") or str(Path(sys.executable).parent / "drconv")
MODEL = "drconv-shufflenetv2-0.5x"
SIZE = 64
READY_S = 240  # the first start imports torch-free drconv, ONNX Runtime and loads the model: seconds


def run(*args, timeout=300, env=None):
    return subprocess.run([DRCONV, *args], capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """The zoo model's custom export, traced at 64x64 (dynamic batch, height and width)."""
    import torch

    from drconv.export import to_onnx
    from drconv.models import load_model

    path = tmp_path_factory.mktemp("serving") / "zoo.onnx"
    net = load_model(MODEL)
    to_onnx(net, torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0)), path)
    return path


def _parse(folder: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse((folder / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())


def _file_signature(path: Path) -> tuple[list, list]:
    proto = onnx.load(str(path), load_external_data=False)
    initializers = {t.name for t in proto.graph.initializer}

    def info(value):
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim]
        return value.name, value.type.tensor_type.elem_type, dims

    return [info(v) for v in proto.graph.input if v.name not in initializers], [info(v) for v in proto.graph.output]


def _library_in_config(config: model_config_pb2.ModelConfig) -> str | None:
    if config.backend == "onnxruntime":
        return config.model_operations.op_library_filename[0]
    if config.backend == "openvino":
        return config.parameters["CPU_EXTENSION_PATH"].string_value
    return None


@pytest.mark.parametrize("backend", repository.BACKENDS)
@pytest.mark.parametrize("library_dir", [None, "/models/{name}"])
def test_configs_parse_and_match_the_file(exported, tmp_path, backend, library_dir):
    name = f"zoo-{backend}"
    where = library_dir.format(name=name) if library_dir else None
    result = run(
        "triton",
        str(exported),
        "-o",
        str(tmp_path / "repo"),
        "--name",
        name,
        "--backend",
        backend,
        *(["--library-dir", where] if where else []),
        "--input-shape",
        f"1,3,{SIZE},{SIZE}",
    )
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "repo" / name
    config = _parse(folder)
    assert (config.name, config.backend, config.max_batch_size) == (name, backend, repository.DEFAULT_MAX_BATCH_SIZE)
    assert config.HasField("dynamic_batching")
    assert [g.count for g in config.instance_group] == [1]
    inputs, outputs = _file_signature(exported)
    types = {TensorProto.FLOAT: model_config_pb2.TYPE_FP32}
    for declared, (file_name, elem, dims) in zip(config.input, inputs, strict=True):
        assert declared.name == file_name and declared.data_type == types[elem]
        assert dims[0] == -1  # the batch axis, which Triton's batch dimension stands for
        # TensorRT's engine fixes H and W to --input-shape; the others keep the file's dynamic axes
        assert list(declared.dims) == ([3, SIZE, SIZE] if backend == "tensorrt" else dims[1:])
    for declared, (file_name, elem, dims) in zip(config.output, outputs, strict=True):
        assert declared.name == file_name and declared.data_type == types[elem] and list(declared.dims) == dims[1:]
    library = _library_in_config(config)
    if backend in ("onnxruntime", "openvino"):
        expected_dir = where or str(folder.resolve())
        assert library == f"{expected_dir}/{PLUGIN_FILES[backend]}"
        # where --library-dir says the folder will be, the library is in the folder
        local = Path(library) if where is None else folder / Path(library).relative_to(where)
        assert local.is_file() and local.read_bytes()[:4] == b"\x7fELF"
        assert (folder / "1" / "model.onnx").read_bytes() == exported.read_bytes()
        assert config.default_model_filename == "model.onnx"
    elif backend == "tensorrt":
        assert (folder / PLUGIN_FILES["tensorrt"]).is_file()
        assert f"plugins={where or folder.resolve()}/{PLUGIN_FILES['tensorrt']}" in result.stdout
        assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
        try:
            import tensorrt  # noqa: F401
        except ImportError:  # the engine is left to the GPU machine, with the command that builds it
            assert (folder / "model.onnx").read_bytes() == exported.read_bytes()
            assert f"--max-shape input:{repository.DEFAULT_MAX_BATCH_SIZE}x3x{SIZE}x{SIZE}" in result.stderr
        else:
            assert (folder / "1" / "model.plan").stat().st_size > 0
    else:
        assert (folder / "1" / "model.py").read_text() == repository.PYTHON_MODEL.read_text()
        assert (folder / "1" / "model.onnx").read_bytes() == exported.read_bytes()
        assert not list(folder.glob("*.so"))  # the installed drconv's library serves it


def test_a_fixed_batch_gets_no_batching_and_full_dims(exported, tmp_path):
    proto = onnx.load(str(exported))
    for value in (*proto.graph.input, *proto.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = 1
    fixed = tmp_path / "fixed.onnx"
    onnx.save(proto, str(fixed))
    written = repository.write(fixed, tmp_path / "repo", backend="onnxruntime")
    config = _parse(written.folder)
    assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
    assert list(config.input[0].dims) == [1, 3, -1, -1] and list(config.output[0].dims) == [1, 1000]
    result = run("triton", str(fixed), "-o", str(tmp_path / "repo2"), "--max-batch-size", "4")
    assert result.returncode == 1 and "fixed batch axis" in result.stderr and "Traceback" not in result.stderr


def test_the_folder_appears_whole_or_not_at_all(exported, tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    first = repository.write(exported, repo, name="m", backend="openvino")
    before = (first.folder / "config.pbtxt").read_text()
    refused = run("triton", str(exported), "-o", str(repo), "--name", "m")
    assert refused.returncode == 1 and "exists; pass --force" in refused.stderr

    def broken(src, dst, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(repository.shutil, "copyfile", broken)
    with pytest.raises(repository.DrconvError, match="No space left on device"):
        repository.write(exported, repo, name="m", backend="onnxruntime", force=True)
    assert sorted(p.name for p in repo.iterdir()) == ["m"]  # no staging folder left
    assert (repo / "m" / "config.pbtxt").read_text() == before  # the old model untouched
    monkeypatch.undo()
    replaced = repository.write(exported, repo, name="m", backend="onnxruntime", force=True)
    assert 'backend: "onnxruntime"' in (replaced.folder / "config.pbtxt").read_text()
    assert sorted(p.name for p in repo.iterdir()) == ["m"]


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if text.encode() in (proc / "cmdline").read_bytes():
                    found.append(int(proc.name))
            except OSError:
                pass
    return found


def _metric(text: str, name: str, model: str) -> float:
    match = re.search(rf'^{name}{{model="{model}",version="1"}} ([0-9.e+]+)$', text, re.M)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


@pytest.fixture(scope="module")
def server(exported, tmp_path_factory):
    """`drconv serve` on the export, as a user starts it, with its own TMPDIR to see what it leaves."""
    tmp = tmp_path_factory.mktemp("serve-tmp")
    http, grpc, metrics = _free_ports(3)
    env = dict(os.environ, TMPDIR=str(tmp))
    process = subprocess.Popen(
        [
            DRCONV,
            "serve",
            str(exported),
            "--name",
            "zoo",
            "--http-port",
            str(http),
            "--grpc-port",
            str(grpc),
            "--metrics-port",
            str(metrics),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines = []
    deadline = time.monotonic() + READY_S
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("stop with"):
            break
    if not lines or not lines[-1].startswith("stop with"):
        process.send_signal(signal.SIGTERM)
        process.wait(30)
        pytest.fail(f"drconv serve did not become ready: {''.join(lines)} {process.stderr.read()[-2000:]}")
    info = {"process": process, "tmp": tmp, "http": http, "grpc": grpc, "metrics": metrics, "stdout": "".join(lines)}
    yield info
    if process.poll() is None:  # a test failed before the last one stopped it: stop it as a user would
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(30)


def test_the_server_prints_its_urls(server):
    out = server["stdout"]
    assert f"http://127.0.0.1:{server['http']}/v2/models/zoo" in out
    assert f"grpc://127.0.0.1:{server['grpc']}" in out and f"http://127.0.0.1:{server['metrics']}/metrics" in out


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_concurrent_clients_get_onnx_runtimes_answers(server, exported, protocol):
    from drconv.runtime import ort

    url = f"{protocol}://127.0.0.1:{server[protocol]}"
    report = load.run(url, "zoo", clients=8, requests=25, warmup=1, input_shape=(1, 3, SIZE, SIZE), keep=True)
    assert report.errors == 0, report.first_error
    assert report.requests == 200 and len(report.pairs) == 200
    session = ort.session(exported)
    for feed, answer in report.pairs:
        expected = session.run(None, feed)[0]
        # batched with other clients' requests on the server, alone here: equal to float32 rounding
        np.testing.assert_allclose(answer["output"], expected, rtol=1e-4, atol=1e-5)
    assert (
        all(size >= 1 for size in report.batch_sizes)
        and sum(size * count for size, count in report.batch_sizes.items()) == 200
    )


def test_the_dynamic_batcher_merged_requests(server):
    # after the two 8 x 25 runs above (one file, one worker: they ran first)
    with urllib.request.urlopen(f"http://127.0.0.1:{server['metrics']}/metrics", timeout=10) as response:
        text = response.read().decode()
    inferences = _metric(text, "nv_inference_count", "zoo")
    executions = _metric(text, "nv_inference_exec_count", "zoo")
    assert inferences >= 400 and executions < inferences  # some execution ran more than one request


def test_the_load_test_command_reports_percentiles(server, tmp_path):
    out = tmp_path / "load.json"
    result = run(
        "benchmark",
        "--url",
        f"http://127.0.0.1:{server['http']}",
        "--name",
        "zoo",
        "--clients",
        "4",
        "--iters",
        "10",
        "--warmup",
        "1",
        "--input-shape",
        f"1,3,{SIZE},{SIZE}",
        "--json",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    assert "p50" in result.stdout and "p99" in result.stdout and "batch sizes the server formed" in result.stdout
    doc = json.loads(out.read_text())
    assert doc["errors"] == 0 and doc["requests"] == 40
    assert 0 < doc["p50_ms"] <= doc["p90_ms"] <= doc["p99_ms"] and doc["requests_per_s"] > 0
    assert sum(int(size) * count for size, count in doc["batch_sizes"].items()) == 40
    assert doc["env"]["cpu"]


def test_a_port_in_use_is_one_line(exported, server):
    result = run(
        "serve",
        str(exported),
        "--http-port",
        str(server["http"]),
        "--grpc-port",
        str(_free_ports(1)[0]),
        "--metrics-port",
        str(_free_ports(1)[0]),
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and f"port {server['http']} on 127.0.0.1 is not free" in result.stderr


def test_sigterm_stops_the_server_and_leaves_nothing(server):
    # the last test of the file: pytest runs a file's tests in order
    process = server["process"]
    workspaces = list(server["tmp"].glob("drconv-serve-*"))
    assert len(workspaces) == 1 and _processes_mentioning(str(workspaces[0]))
    shm = list(Path("/dev/shm").glob(f"drconv_{process.pid}_*"))
    assert shm  # the python backend's segments, named with our prefix
    process.send_signal(signal.SIGTERM)
    assert process.wait(15) == 0
    assert "stopped" in process.stdout.read()
    # the workspace is gone (onnxruntime itself leaves its telemetry's .ses in TMPDIR on import)
    assert not list(server["tmp"].glob("drconv-serve-*"))
    assert not _processes_mentioning(str(workspaces[0]))  # server and stubs
    assert not list(Path("/dev/shm").glob(f"drconv_{process.pid}_*"))


def test_a_killed_drconv_serve_takes_its_server_along(exported, tmp_path):
    """SIGKILL gives drconv serve no chance to stop the server: the kernel tells the server
    (PR_SET_PDEATHSIG), which stops and removes its shared memory; only the workspace stays."""
    http, grpc, metrics = _free_ports(3)
    process = subprocess.Popen(
        [DRCONV, "serve", str(exported), "--http-port", str(http), "--grpc-port", str(grpc),
         "--metrics-port", str(metrics)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=dict(os.environ, TMPDIR=str(tmp_path)),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + READY_S
        while time.monotonic() < deadline and not process.stdout.readline().startswith("stop with"):
            assert process.poll() is None, "drconv serve stopped before it was ready"
        workspace = next(tmp_path.glob("drconv-serve-*"))
        assert _processes_mentioning(str(workspace))
    finally:
        process.kill()
        process.wait(30)
    deadline = time.monotonic() + 15
    while _processes_mentioning(str(workspace)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _processes_mentioning(str(workspace))
    assert not list(Path("/dev/shm").glob(f"drconv_{process.pid}_*"))


def test_a_file_that_is_not_a_drconv_model_is_one_line(tmp_path):
    plain = tmp_path / "plain.onnx"
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "plain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    onnx.save(helper.make_model(graph), str(plain))
    text = tmp_path / "notes.onnx"
    text.write_text("not a model")
    for command in ("serve", "triton"):
        extra = ["-o", str(tmp_path / "repo")] if command == "triton" else ["--http-port", str(_free_ports(1)[0])]
        for path, message in ((plain, "has no drconv node"), (text, "is not an ONNX model")):
            result = run(command, str(path), *extra, timeout=60)
            assert result.returncode == 1 and message in result.stderr, result.stderr
            assert result.stderr.strip().count("\n") == 0
    assert not (tmp_path / "repo").exists() or not list((tmp_path / "repo").iterdir())


def test_the_missing_extra_is_one_line(exported, tmp_path):
    # Python started with a sitecustomize that hides nvidia-pytriton and tritonclient, as where drconv[serve] is absent
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(
        "import sys\nfor name in ('pytriton', 'tritonclient', 'tritonclient.http', 'tritonclient.grpc'):\n"
        "    sys.modules[name] = None\n"
    )
    env = dict(os.environ, PYTHONPATH=str(hide))
    served = run("serve", str(exported), "--http-port", str(_free_ports(1)[0]), env=env, timeout=60)
    loaded = run("benchmark", "--url", "http://127.0.0.1:1", "--name", "zoo", env=env, timeout=60)
    for result in (served, loaded):
        assert result.returncode == 1, result.stderr
        assert "pip install 'drconv[serve]'" in result.stderr and result.stderr.strip().count("\n") == 0


def test_the_python_model_batches_by_shape_and_fails_requests_alone(monkeypatch, tmp_path):
    """model.py's execute, with Triton's python backend utilities stood in for: requests of one
    shape run as one batch and each gets its own rows; a failing group fails only its requests."""
    import importlib.util
    import types

    class Tensor:
        def __init__(self, name, array):
            self.name, self.array = name, array

        def as_numpy(self):
            return self.array

    class Response:
        def __init__(self, output_tensors, error=None):
            self.outputs, self.error = {t.name: t.array for t in output_tensors}, error

    utils = types.SimpleNamespace(
        Tensor=Tensor,
        InferenceResponse=Response,
        TritonError=str,
        get_input_tensor_by_name=lambda request, name: Tensor(name, request[name]),
    )
    calls = []

    class Session:
        def run(self, names, feed):
            x = feed["input"]
            calls.append(x.shape)
            if x.shape[2] == 5:
                raise RuntimeError("bad size\nmore")
            return [x.sum(axis=(1, 2, 3))[:, None] * np.arange(1, 3)]

    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", utils)
    from drconv.runtime import ort

    monkeypatch.setattr(ort, "session", lambda path: Session())
    spec = importlib.util.spec_from_file_location("served_model", repository.PYTHON_MODEL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.TritonPythonModel()
    config = {"input": [{"name": "input"}], "output": [{"name": "output"}], "max_batch_size": 8}
    model.initialize({"model_config": json.dumps(config), "model_repository": str(tmp_path), "model_version": "1"})
    rng = np.random.default_rng(0)
    shapes = [(1, 3, 4, 4), (2, 3, 4, 4), (1, 3, 5, 5), (1, 3, 4, 4), (1, 3, 6, 6)]
    requests = [{"input": rng.standard_normal(s).astype(np.float32)} for s in shapes]
    responses = model.execute(requests)
    assert sorted(calls) == sorted([(4, 3, 4, 4), (1, 3, 5, 5), (1, 3, 6, 6)])  # one run per shape
    for request, response in zip(requests, responses, strict=True):
        if request["input"].shape[2] == 5:
            assert response.error == "drconv: bad size" and not response.outputs
            continue
        expected = request["input"].sum(axis=(1, 2, 3))[:, None] * np.arange(1, 3)
        assert response.error is None
        np.testing.assert_allclose(response.outputs["output"], expected, rtol=1e-6)


def test_a_load_test_without_a_server_is_one_line():
    port = _free_ports(1)[0]
    for url in (f"http://127.0.0.1:{port}", f"grpc://127.0.0.1:{port}"):
        result = run("benchmark", "--url", url, "--name", "zoo", timeout=120)
        assert result.returncode == 1 and result.stderr.startswith(
            f"error: no model 'zoo' is ready at 127.0.0.1:{port}"
        )
        assert result.stderr.strip().count("\n") == 0
    for args, message in (
        (["--url", "ftp://host:1", "--name", "zoo"], "give http://HOST:PORT or grpc://HOST:PORT"),
        (["--url", f"http://127.0.0.1:{port}"], "a load test takes --url and --name"),
        (["drconv-tiny", "--url", f"http://127.0.0.1:{port}", "--name", "zoo"], "and not TARGET"),
    ):
        result = run("benchmark", *args, timeout=120)
        assert result.returncode in (1, 2) and message in result.stderr and "Traceback" not in result.stderr
