"""`drconv serve`: the Triton Inference Server that nvidia-pytriton bundles (2.51, with its
python backend), run here on a python-backend repository of one exported model.

What the bundled server needs, set here rather than asked of the user:
- the python backend's stub for this interpreter's version, in a backend folder of our own
  (the bundle keeps one stub per Python version beside the backend, not in it);
- this interpreter's libpython first on LD_LIBRARY_PATH: the stub loads libpython3.X by name
  and may otherwise find a system one of another patch release, whose standard library does
  not match (`'_thread.RLock' object has no attribute '_recursion_count'` at model load);
- this interpreter's bin folder first on PATH, so the stub's Python finds this environment's
  packages (drconv, onnxruntime);
- readiness from /v2/models/NAME/ready (the server is "ready" before its model is);
- its own session, so a terminal's Ctrl-C reaches us, and we stop it with SIGTERM and wait.
Everything the server leaves is ours to remove: its workspace and its shared-memory
segments (named with a prefix of ours).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from drconv.errors import DrconvError, MissingDependency
from drconv.serving import repository

INSTALL_HINT = "pip install 'drconv[serve]'"
READY_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 10.0  # SIGTERM, then this long before SIGKILL
_SHM = Path("/dev/shm")


@dataclass(frozen=True)
class Triton:
    """The bundled server: its binary, its backends folder, its libraries, the stub for this Python."""

    binary: Path
    backends: Path
    libs: Path
    stub: Path


def bundled_triton() -> Triton:
    """nvidia-pytriton's tritonserver, or one line saying how to install it."""
    try:
        spec = importlib.util.find_spec("pytriton")
    except (ImportError, ValueError):  # a broken install, or one hidden in sys.modules
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependency(
            f"drconv serve needs nvidia-pytriton's Triton server, which is not installed: {INSTALL_HINT}"
        )
    root = Path(next(iter(spec.submodule_search_locations))) / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    triton = Triton(
        binary=root / "bin" / "tritonserver",
        backends=root / "backends",
        libs=root.parent.parent / "nvidia_pytriton.libs",
        stub=root / "python_backend_stubs" / version / "triton_python_backend_stub",
    )
    if not triton.binary.is_file():
        raise DrconvError(f"nvidia-pytriton has no server at {triton.binary}; reinstall it: {INSTALL_HINT}")
    if not triton.stub.is_file():
        raise DrconvError(f"nvidia-pytriton has no python backend stub for Python {version}; use Python 3.8 to 3.13")
    return triton


@dataclass(frozen=True)
class Ports:
    http: int = 8000
    grpc: int = 8001
    metrics: int = 8002


def check_ports(host: str, ports: Ports) -> None:
    """Refuse, before starting anything, a port that something else holds."""
    for flag, port in (("--http-port", ports.http), ("--grpc-port", ports.grpc), ("--metrics-port", ports.metrics)):
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            # as a server binds: a port left in TIME_WAIT by an earlier server is free, a listening one is not
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as exc:
                raise DrconvError(
                    f"port {port} on {host} is not free ({exc.strerror}); pass another {flag} or stop what holds it"
                ) from None
    if len({ports.http, ports.grpc, ports.metrics}) != 3:
        raise DrconvError(f"--http-port, --grpc-port and --metrics-port must differ, got {ports}")


def _environment(triton: Triton) -> dict[str, str]:
    env = dict(os.environ)
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (libdir, str(triton.libs), env.get("LD_LIBRARY_PATH")) if p)
    env["PATH"] = os.pathsep.join(p for p in (str(Path(sys.executable).parent), env.get("PATH")) if p)
    return env


def _backends(triton: Triton, workspace: Path) -> Path:
    """A backends folder with the python backend and this Python's stub, as the server looks for it."""
    python = workspace / "backends" / "python"
    python.mkdir(parents=True)
    for item in (triton.backends / "python").iterdir():
        if item.is_file():
            shutil.copy2(item, python / item.name)
    shutil.copy2(triton.stub, python / "triton_python_backend_stub")
    return python.parent


def _die_with_parent() -> None:
    """In the server's process, before exec: SIGTERM it when the process that started it dies,
    so that a `drconv serve` killed outright (SIGKILL) takes the server along (Linux)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Server:
    """A started server: where it listens and what to remove after it."""

    process: subprocess.Popen
    workspace: Path
    name: str
    host: str
    ports: Ports
    shm_prefix: str
    log: Path

    @property
    def urls(self) -> dict[str, str]:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return {
            "http": f"http://{host}:{self.ports.http}",
            "grpc": f"grpc://{host}:{self.ports.grpc}",
            "metrics": f"http://{host}:{self.ports.metrics}/metrics",
        }

    def _ready(self) -> bool:
        url = f"{self.urls['http']}/v2/models/{self.name}/ready"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout: float = READY_TIMEOUT_S, stop: threading.Event | None = None) -> None:
        """Return when the model is ready (or `stop` is set); raise if the server dies or times out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not (stop is not None and stop.is_set()):
            if self.process.poll() is not None:
                raise DrconvError(f"the Triton server stopped while loading the model: {self.failure()}")
            if self._ready():
                return
            time.sleep(0.2)
        if stop is not None and stop.is_set():
            return
        raise DrconvError(f"the model was not ready after {timeout:.0f} s: {self.failure()}")

    def failure(self) -> str:
        """The server log's line that says what went wrong (its last error, or its last line)."""
        try:
            lines = [line.strip() for line in self.log.read_text(errors="replace").splitlines() if line.strip()]
        except OSError:
            return "no log"
        markers = ("UNAVAILABLE", "error:", "Error", "E1", "E0")
        errors = [line for line in lines if any(m in line for m in markers) and "NVML" not in line]
        errors = [e for e in errors if "CudaDriverHelper" not in e and "DCGM" not in e] or lines[-1:]
        return (errors[-1] if errors else "no log").strip("| ")[:400]

    def stop(self) -> None:
        """SIGTERM, wait, SIGKILL the group if need be; remove the workspace and our shared memory."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        with contextlib.suppress(ProcessLookupError):  # stubs the server left, if any
            os.killpg(self.process.pid, signal.SIGKILL)
        for segment in _SHM.glob(f"{self.shm_prefix}*"):
            with contextlib.suppress(OSError):
                segment.unlink()
        shutil.rmtree(self.workspace, ignore_errors=True)


def start(
    onnx_path: str | os.PathLike,
    *,
    name: str | None = None,
    host: str = "127.0.0.1",
    ports: Ports = Ports(),
    max_batch_size: int | None = None,
    instances: int = 1,
) -> Server:
    """Start the bundled Triton on a python-backend repository of `onnx_path`; returns once it runs.

    Call `wait_ready()` next, and `stop()` in every case.
    """
    triton = bundled_triton()
    name = name or Path(onnx_path).stem
    workspace = Path(tempfile.mkdtemp(prefix="drconv-serve-"))
    try:
        repo = workspace / "models"
        # the file is checked (a drconv export?) as the repository is written, before the ports
        repository.write(
            onnx_path, repo, name=name, backend="python", max_batch_size=max_batch_size, instances=instances
        )
        check_ports(host, ports)
        backends = _backends(triton, workspace)
        shm_prefix = f"drconv_{os.getpid()}_"
        log = workspace / "tritonserver.log"
        command = [
            str(triton.binary),
            f"--model-repository={repo}",
            f"--backend-directory={backends}",
            f"--backend-config=python,shm-region-prefix-name={shm_prefix}",
            f"--http-address={host}",
            f"--grpc-address={host}",
            f"--metrics-address={host}",
            f"--http-port={ports.http}",
            f"--grpc-port={ports.grpc}",
            f"--metrics-port={ports.metrics}",
            "--exit-timeout-secs=5",
            "--disable-auto-complete-config",
        ]
        with open(log, "wb") as out:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=_environment(triton),
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
    except BaseException:
        shutil.rmtree(workspace, ignore_errors=True)
        raise
    return Server(process, workspace, name, host, ports, shm_prefix, log)


@contextlib.contextmanager
def stop_signals() -> Iterator[threading.Event]:
    """An event set by SIGTERM or SIGINT (Ctrl-C) while in the block; the old handlers after it.

    A process started in the background by a non-interactive shell ignores SIGINT, so
    SIGTERM is the signal to rely on.
    """
    stop = threading.Event()
    old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    for s in old:
        signal.signal(s, lambda *_: stop.set())
    try:
        yield stop
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def serve(
    onnx_path: str | os.PathLike,
    *,
    on_ready: Callable[[Server], None],
    on_start: Callable[[Server], None] | None = None,
    name: str | None = None,
    host: str = "127.0.0.1",
    ports: Ports = Ports(),
    max_batch_size: int | None = None,
    instances: int = 1,
) -> int:
    """Run until SIGTERM or Ctrl-C (returns 0) or until the server dies (raises); clean up either way."""
    with stop_signals() as stop:
        server = start(onnx_path, name=name, host=host, ports=ports, max_batch_size=max_batch_size, instances=instances)
        try:
            if on_start is not None:
                on_start(server)
            server.wait_ready(stop=stop)
            if stop.is_set():
                return 0
            on_ready(server)
            while not stop.wait(0.5):
                if server.process.poll() is not None:
                    raise DrconvError(f"the Triton server stopped: {server.failure()}")
            return 0
        finally:
            server.stop()
