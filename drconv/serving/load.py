"""A load test against a running Triton server (`drconv benchmark --url`): concurrent clients
over HTTP or gRPC (KServe v2), each sending its requests one after another; latency
percentiles, throughput, errors, and the batch sizes the server formed, read from its
statistics extension (/v2/models/NAME/stats) before and after.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from drconv.errors import DrconvError, MissingDependency

INSTALL_HINT = "pip install 'drconv[serve]'"
NETWORK_TIMEOUT_S = 60.0
_GATE_TIMEOUT_S = 600.0  # for every client to have warmed up
_NUMPY_TYPES = {
    "FP32": np.float32,
    "FP16": np.float16,
    "FP64": np.float64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "BOOL": np.bool_,
}


def parse_url(url: str) -> tuple[str, str]:
    """'http://host:8000' -> ('http', 'host:8000'); grpc:// for gRPC; no scheme means HTTP."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme not in ("http", "grpc") or not parts.hostname or parts.port is None:
        raise DrconvError(f"--url {url!r}: give http://HOST:PORT or grpc://HOST:PORT")
    return parts.scheme, parts.netloc


def _client(protocol: str, address: str):
    try:
        if protocol == "grpc":
            import tritonclient.grpc as client
        else:
            import tritonclient.http as client
    except ImportError:
        raise MissingDependency(f"a load test needs tritonclient, which is not installed: {INSTALL_HINT}") from None
    if protocol == "grpc":
        return client, client.InferenceServerClient(address)
    return client, client.InferenceServerClient(address, network_timeout=NETWORK_TIMEOUT_S)


def _as_dict(value: Any) -> dict:
    """A gRPC client's protobuf answer as the HTTP client's dict (its int64 are strings in JSON)."""
    if isinstance(value, dict):
        return value
    from google.protobuf import json_format

    return json_format.MessageToDict(value, preserving_proto_field_name=True)


@dataclass(frozen=True)
class ModelInput:
    name: str
    datatype: str
    shape: tuple[int, ...]  # as sent: batch and every dynamic axis filled in


def model_inputs(
    client, address: str, name: str, batch: int, input_shape: tuple[int, ...] | None
) -> tuple[list[ModelInput], list[str], int]:
    """The model's inputs as one request sends them, its output names and its max_batch_size."""
    try:
        metadata = _as_dict(client.get_model_metadata(name))
        config = _as_dict(client.get_model_config(name))
    except Exception as exc:
        raise DrconvError(f"no model {name!r} is ready at {address}: {_first_line(exc)}") from None
    config = config.get("config", config)
    max_batch = int(config.get("max_batch_size", 0))
    if max_batch and batch > max_batch:
        raise DrconvError(f"--batch {batch} is over the model's max_batch_size {max_batch}")
    inputs = []
    for meta in metadata["inputs"]:
        dims = [int(d) for d in meta["shape"]]
        if max_batch:
            dims[0] = batch
        if any(d < 0 for d in dims):
            if input_shape is None or len(input_shape) != len(dims):
                raise DrconvError(
                    f"input {meta['name']} has dynamic axes {dims}: give --input-shape with {len(dims)} sizes"
                )
            dims = [s if d < 0 else d for d, s in zip(dims, input_shape, strict=True)]
        if meta["datatype"] not in _NUMPY_TYPES:
            raise DrconvError(f"input {meta['name']} is of type {meta['datatype']}, which the load test cannot make")
        inputs.append(ModelInput(meta["name"], meta["datatype"], tuple(dims)))
    return inputs, [o["name"] for o in metadata["outputs"]], max_batch


def batch_counts(client, name: str) -> dict[int, int]:
    """Executions per batch size the server has formed for `name` so far."""
    stats = _as_dict(client.get_inference_statistics(name))
    counts: dict[int, int] = {}
    for model in stats.get("model_stats", []):
        for entry in model.get("batch_stats", []):
            size = int(entry["batch_size"])
            counts[size] = counts.get(size, 0) + int(entry["compute_infer"]["count"])
    return counts


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@dataclass
class LoadReport:
    url: str
    name: str
    protocol: str
    clients: int
    batch: int
    shapes: dict[str, list[int]]
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str | None = None
    wall_s: float = 0.0
    batch_sizes: dict[int, int] = field(default_factory=dict)  # executions per batch size in the timed part
    pairs: list[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return len(self.latencies_ms) + self.errors

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")

    @property
    def throughput(self) -> float:
        """Successful requests per second, all clients together."""
        return len(self.latencies_ms) / self.wall_s if self.wall_s > 0 else 0.0

    def to_json(self) -> dict:
        return {
            "url": self.url,
            "model": self.name,
            "protocol": self.protocol,
            "clients": self.clients,
            "batch": self.batch,
            "shapes": self.shapes,
            "requests": self.requests,
            "errors": self.errors,
            "first_error": self.first_error,
            "wall_s": self.wall_s,
            "p50_ms": self.percentile(50),
            "p90_ms": self.percentile(90),
            "p99_ms": self.percentile(99),
            "requests_per_s": self.throughput,
            "images_per_s": self.throughput * self.batch,
            "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())},
        }


def run(
    url: str,
    name: str,
    *,
    clients: int = 8,
    requests: int | None = 25,
    seconds: float | None = None,
    warmup: int = 2,
    batch: int = 1,
    input_shape: tuple[int, ...] | None = None,
    keep: bool = False,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
    on_start: Callable[[], None] | None = None,
) -> LoadReport:
    """`clients` threads, each with its own connection, send `requests` each (or for `seconds`).

    `keep`: also return every (inputs, outputs) pair, to check the answers. Each request's
    input is new random data (a seeded generator per client). `progress(done)` after each
    request; `on_start()` once the model is found, before the first request.
    """
    if clients < 1 or batch < 1 or warmup < 0:
        raise DrconvError("--clients and --batch must be 1 or more, --warmup 0 or more")
    if (requests is None) == (seconds is None):
        raise DrconvError("give either a request count per client or a duration in seconds")
    protocol, address = parse_url(url)
    module, probe = _client(protocol, address)
    inputs, outputs, _ = model_inputs(probe, address, name, batch, input_shape)
    report = LoadReport(url, name, protocol, clients, batch, {i.name: list(i.shape) for i in inputs})
    if on_start is not None:
        on_start()
    lock = threading.Lock()
    # Clients warm up, then wait at the gate; the statistics are read (in this thread: a
    # client belongs to the thread that made it) and the clock starts before `go` lets them on.
    gate = threading.Barrier(clients + 1)
    go = threading.Event()
    started = [0.0]
    crashes: list[BaseException] = []

    def one(client, rng: np.random.Generator) -> tuple[dict, dict | None, float, str | None]:
        feed = {i.name: rng.standard_normal(i.shape).astype(_NUMPY_TYPES[i.datatype]) for i in inputs}
        tensors = []
        for i in inputs:
            tensor = module.InferInput(i.name, list(i.shape), i.datatype)
            tensor.set_data_from_numpy(feed[i.name])
            tensors.append(tensor)
        wanted = [module.InferRequestedOutput(o) for o in outputs]
        start = time.perf_counter()
        try:
            kwargs = {"client_timeout": NETWORK_TIMEOUT_S} if protocol == "grpc" else {}
            result = client.infer(name, tensors, outputs=wanted, **kwargs)
            answer = {o: result.as_numpy(o) for o in outputs}
        except Exception as exc:
            return feed, None, 0.0, _first_line(exc)
        if any(a is None for a in answer.values()):
            return feed, None, 0.0, "a response lacked an output"
        return feed, answer, (time.perf_counter() - start) * 1e3, None

    def timed(client, rng: np.random.Generator) -> None:
        deadline = started[0] + seconds if seconds is not None else None
        sent = 0
        while (sent < requests) if requests is not None else (time.perf_counter() < deadline):
            feed, answer, ms, error = one(client, rng)
            sent += 1
            with lock:
                if error is None:
                    report.latencies_ms.append(ms)
                    if keep:
                        report.pairs.append((feed, answer))
                else:
                    report.errors += 1
                    report.first_error = report.first_error or error
                done = report.requests
            if progress:
                progress(done)

    def worker(index: int) -> None:
        rng = np.random.default_rng([seed, index])
        client = None
        try:
            client = _client(protocol, address)[1]
            for _ in range(warmup):
                one(client, rng)
        except BaseException as exc:
            crashes.append(exc)
        finally:
            with contextlib.suppress(threading.BrokenBarrierError):
                gate.wait(_GATE_TIMEOUT_S)
        try:
            if go.wait(_GATE_TIMEOUT_S) and client is not None:
                timed(client, rng)
        except BaseException as exc:
            crashes.append(exc)
        finally:
            with contextlib.suppress(Exception):
                client.close()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    try:
        gate.wait(_GATE_TIMEOUT_S)
    except threading.BrokenBarrierError:
        raise DrconvError(f"the clients did not warm up within {_GATE_TIMEOUT_S:.0f} s") from None
    before = batch_counts(probe, name)
    started[0] = time.perf_counter()
    go.set()
    for t in threads:
        t.join()
    if crashes:
        raise DrconvError(f"a client failed: {_first_line(crashes[0])}")
    report.wall_s = time.perf_counter() - started[0]
    report.batch_sizes = _formed(probe, name, before, report.requests * batch)
    return report


def _formed(client, name: str, before: dict[int, int], sent: int) -> dict[int, int]:
    """The batches formed since `before`: the server may count an execution just after it answers."""
    for _ in range(20):
        after = batch_counts(client, name)
        formed = {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0) > 0}
        if sum(size * count for size, count in formed.items()) >= sent:
            break
        time.sleep(0.05)
    return formed
