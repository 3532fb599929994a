"""The TensorRT plugin library, tested on the host: no GPU and no libnvinfer needed.

The C++ program loads libdrconv_tensorrt.so by path through getCreators/setLoggerFinder
(as IPluginRegistry::loadLibrary does) and checks the creator, the build-time methods and
serialization. The plugin is built by `make plugins` wherever the CUDA toolkit is.
"""

import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from drconv.libraries import plugin_path

BUILD = Path(__file__).resolve().parent.parent / "build" / "plugins"
NVCC = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if Path("/usr/local/cuda/bin/nvcc").exists() else None)
needs_toolkit = pytest.mark.skipif(
    NVCC is None, reason="no CUDA toolkit (nvcc), so `make plugins` does not build the TensorRT plugin"
)


@needs_toolkit
def test_plugin_library_is_built_and_exports_only_the_loader_entry_points():
    library = plugin_path("tensorrt")
    assert library is not None, "libdrconv_tensorrt.so not built: run `make plugins`"
    symbols = subprocess.run(["nm", "-D", "--defined-only", str(library)], capture_output=True, text=True, check=True)
    exported = {line.split()[-1] for line in symbols.stdout.splitlines() if line.strip()}
    assert exported == {"getCreators", "setLoggerFinder"}
    needed = subprocess.run(["readelf", "-d", str(library)], capture_output=True, text=True, check=True).stdout
    assert "libnvinfer" not in needed and "libcudart" not in needed  # cudart is linked statically


@needs_toolkit
def test_plugin_host_program():
    program = BUILD / "tensorrt_plugin_test"
    assert program.is_file(), "tensorrt_plugin_test not built: run `make plugins`"
    result = subprocess.run([str(program), str(plugin_path("tensorrt"))], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAIL" not in result.stdout
    passed = int(result.stdout.strip().splitlines()[-1].split()[0])
    assert passed >= 40, result.stdout


# ---- the Python side, without TensorRT ------------------------------------------------------


def test_build_without_tensorrt_is_exit_2_and_writes_nothing(tmp_path):
    import importlib.util

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here; this checks the message for machines without it")
    import onnx
    from test_cli import run

    onnx_file = tmp_path / "m.onnx"
    x = onnx.helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, [1, 3, 8, 8])
    y = onnx.helper.make_tensor_value_info("output", onnx.TensorProto.FLOAT, [1, 3, 8, 8])
    relu = onnx.helper.make_node("Relu", ["input"], ["output"])
    onnx.save(onnx.helper.make_model(onnx.helper.make_graph([relu], "g", [x], [y])), str(onnx_file))
    result = run("build", str(onnx_file), "-o", str(tmp_path / "m.engine"))
    assert result.returncode == 2
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in line
    assert "TensorRT is not installed" in line and "pip install tensorrt" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


@pytest.mark.parametrize(
    ("make", "args", "message"),
    [
        (None, [], "missing.onnx: no such file"),
        ("text", [], "is not an ONNX model"),
        ("onnx", ["--min-shape", "input:1x3x8x8"], "input input has dynamic axes .* give --min-shape, --opt-shape"),
        ("onnx", [f"--{k}-shape=input:1x3" for k in ("min", "opt", "max")], "input input has rank 4"),
        ("onnx", ["--min-shape", "1x3x8x8"], "must look like input:1x3x224x224"),
        ("onnx", ["--min-shape", "x:1x3x8x8"], "no input named 'x'"),
    ],
)
def test_build_checks_its_arguments_before_tensorrt(tmp_path, make, args, message):
    """Wherever TensorRT is missing, a mistake in the arguments is what the user hears about."""
    import onnx
    from test_cli import run

    path = tmp_path / ("missing.onnx" if make is None else "m.onnx")
    if make == "text":
        path.write_text("not a model")
    elif make == "onnx":
        x = onnx.helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["n", 3, 8, 8])
        relu = onnx.helper.make_node("Relu", ["input"], ["output"])
        y = onnx.helper.make_tensor_value_info("output", onnx.TensorProto.FLOAT, ["n", 3, 8, 8])
        onnx.save(onnx.helper.make_model(onnx.helper.make_graph([relu], "g", [x], [y])), str(path))
    result = run("build", str(path), "-o", str(tmp_path / "m.engine"), *args)
    assert result.returncode == 1, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert re.search(message, result.stderr) and "TensorRT is not installed" not in result.stderr
    assert not (tmp_path / "m.engine").exists()


def test_shape_specs():
    from drconv.errors import DrconvError
    from drconv.runtime.trt import parse_shape_spec

    assert parse_shape_spec("input:1x3x224x224") == ("input", (1, 3, 224, 224))
    assert parse_shape_spec("a:b:2X3") == ("a:b", (2, 3))
    for bad in ("1x3x224x224", "input:", "input:1x0x2", "input:axb", ":1x2"):
        with pytest.raises(DrconvError, match="must look like input:1x3x224x224"):
            parse_shape_spec(bad)


def test_profile_shapes_from_options_and_static_inputs():
    from drconv.errors import DrconvError
    from drconv.runtime.trt import BuildOptions, _profile_shapes

    static = {"input": (1, 3, 64, 64)}
    assert _profile_shapes(static, BuildOptions()) == {"input": ((1, 3, 64, 64),) * 3}
    dynamic = {"input": (None, 3, None, None)}
    with pytest.raises(DrconvError, match="dynamic axes"):
        _profile_shapes(dynamic, BuildOptions())
    shapes = BuildOptions(
        min_shapes={"input": (1, 3, 32, 32)},
        opt_shapes={"input": (4, 3, 224, 224)},
        max_shapes={"input": (8, 3, 512, 512)},
    )
    assert _profile_shapes(dynamic, shapes) == {"input": ((1, 3, 32, 32), (4, 3, 224, 224), (8, 3, 512, 512))}
    with pytest.raises(DrconvError, match="axis 1 is fixed to 3"):
        _profile_shapes(
            dynamic,
            BuildOptions(
                min_shapes={"input": (1, 4, 32, 32)},
                opt_shapes={"input": (1, 4, 32, 32)},
                max_shapes={"input": (1, 4, 32, 32)},
            ),
        )
    with pytest.raises(DrconvError, match="min <= opt <= max"):
        _profile_shapes(
            dynamic,
            BuildOptions(
                min_shapes={"input": (8, 3, 32, 32)},
                opt_shapes={"input": (1, 3, 32, 32)},
                max_shapes={"input": (8, 3, 32, 32)},
            ),
        )
    with pytest.raises(DrconvError, match="no input named 'x'"):
        _profile_shapes(static, BuildOptions(min_shapes={"x": (1, 3, 64, 64)}))


class _Registry:
    """TensorRT's plugin registry as far as loading goes: loadLibrary fails (returns None) when
    any of the library's creators is registered already, as IPluginRegistry::loadLibrary documents."""

    def __init__(self) -> None:
        self.creators: set[tuple[str, str, str]] = set()
        self.loads = 0

    def load_library(self, path: str):
        self.loads += 1
        if ("RegionConv2d", "1", "") in self.creators:
            return None
        self.creators.add(("RegionConv2d", "1", ""))
        return object()  # a handle

    def get_creator(self, name: str, version: str, namespace: str = ""):
        return object() if (name, version, namespace) in self.creators else None


@pytest.mark.skipif(plugin_path("tensorrt") is None, reason="libdrconv_tensorrt.so not built (no CUDA toolkit)")
def test_the_plugin_library_is_loaded_once_per_process():
    from types import SimpleNamespace

    from drconv.runtime import trt

    registry = _Registry()
    fake = SimpleNamespace(get_plugin_registry=lambda: registry)
    assert registry.load_library("x") is not None and registry.load_library("x") is None  # the stand-in refuses
    registry.creators.clear()
    for _ in range(3):  # build, load, benchmark: each asks for the library
        assert trt._load_plugin(fake) == plugin_path("tensorrt")
    assert registry.loads == 3  # two direct calls above, then one load for the three
    assert ("RegionConv2d", "1", "") in registry.creators


def test_engine_and_sidecar_are_a_checked_pair(tmp_path, monkeypatch):
    from drconv._atomic import write_bytes
    from drconv.errors import DrconvError
    from drconv.runtime import trt

    engine = tmp_path / "m.engine"
    trt._write_engine(engine, b"engine one", {"tensorrt": "10.9", "compute_capability": "8.6", "gpu": "A"})
    meta = json.loads((tmp_path / "m.engine.json").read_text())
    assert meta["engine_sha256"] == hashlib.sha256(b"engine one").hexdigest()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.engine", "m.engine.json"]  # no temporary files left
    monkeypatch.setattr(trt, "_gpu", lambda: ("A", "8.6"))
    trt._check_sidecar(engine, b"engine one", "10.9")  # the pair as written: accepted
    # A build interrupted between its two renames: a new engine beside the old sidecar.
    write_bytes(engine, b"engine two")
    with pytest.raises(DrconvError, match="does not belong to"):
        trt._check_sidecar(engine, engine.read_bytes(), "10.9")
    with pytest.raises(DrconvError, match=r"built with TensorRT 10\.9, this is 10\.10"):
        trt._check_sidecar(engine, b"engine one", "10.10")
    monkeypatch.setattr(trt, "_gpu", lambda: ("B", "9.0"))
    with pytest.raises(DrconvError, match=r"compute capability 8.6 \(A\), this GPU is 9.0"):
        trt._check_sidecar(engine, b"engine one", "10.9")
