"""The package as a user installs it: an sdist, wheels built from it and from the tree with
CMake driven by setup.py, installed into a fresh virtual environment without torch, where a
custom-node model runs in plain ONNX Runtime and through drconv.runtime.ort."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from pathlib import Path

import pytest
from test_torchless import RUN_MODEL, check_outputs, zoo_case

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
MAIN_BUILD = ROOT / "build" / "plugins"
LIB = "drconv/lib/"


def _build_env(tmp: Path, **extra: str) -> dict[str, str]:
    """The main build's fetched headers (no second download), and a private header cache."""
    env = {**os.environ, "DRCONV_DEPS_DIR": str(tmp / "deps"), **extra}
    cache = MAIN_BUILD / "CMakeCache.txt"
    text = cache.read_text() if cache.is_file() else ""
    for var in ("ONNXRUNTIME_INCLUDE_DIR", "TensorRT_INCLUDE_DIR"):
        match = re.search(rf"^{var}:PATH=(.+)$", text, re.MULTILINE)
        if match and match.group(1):
            env.setdefault(var, match.group(1))
    return env


def _run(args: list[str], env: dict[str, str] | None = None, timeout: int = 900, **kwargs) -> str:
    result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=timeout, **kwargs)
    assert result.returncode == 0, f"{args}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def _wheel(source: Path, out: Path, env: dict[str, str]) -> Path:
    """`pip wheel SOURCE` in an isolated build environment, as a user runs it."""
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(out), str(source)], env=env)
    (wheel,) = out.glob("drconv-*.whl")
    return wheel


def _build_info(wheel: Path) -> dict:
    with zipfile.ZipFile(wheel) as z:
        return json.loads(z.read(LIB + "build_info.json"))


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    """An sdist of the checkout, a wheel built from it, and one built from a copy of the tree with CUDA off."""
    tmp = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", str(tmp / "dist"), str(ROOT)])
    (sdist,) = (tmp / "dist").glob("drconv-*.tar.gz")
    wheel = _wheel(sdist, tmp / "from-sdist", _build_env(tmp))
    tree = tmp / "tree"
    junk = shutil.ignore_patterns(".venv", ".git", "build", "dist", "docs", "*.egg-info", "__pycache__", "*.so", "lib")
    shutil.copytree(ROOT, tree, ignore=junk)
    cpu_wheel = _wheel(tree, tmp / "from-tree", _build_env(tmp, DRCONV_WITH_CUDA="OFF"))
    return {"tmp": tmp, "sdist": sdist, "wheel": wheel, "cpu_wheel": cpu_wheel}


def test_the_sdist_holds_what_the_build_needs(built):
    with tarfile.open(built["sdist"]) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    for needed in (
        "setup.py",
        "pyproject.toml",
        "plugins/CMakeLists.txt",
        "plugins/cmake/fetch-onnxruntime-headers.sh",
        "plugins/common/region_conv_cpu.h",
        "plugins/onnxruntime/region_conv2d_cpu.cc",
        "plugins/tensorrt/region_conv2d_plugin.cc",
        "plugins/openvino/region_conv2d_op.cc",
        "plugins/openvino/exports.map",
        "drconv/csrc/region_conv_torch.cpp",
        "drconv/csrc/region_conv_checks.h",
    ):
        assert needed in names, needed
    assert not [n for n in names if n.endswith((".so", ".a"))]


def test_the_wheel_carries_its_libraries(built):
    with zipfile.ZipFile(built["wheel"]) as z:
        names = set(z.namelist())
    assert LIB + "libdrconv_onnxruntime.so" in names
    assert "drconv/csrc/common/region_conv_cuda.cu" in names  # the CUDA torch kernel's sources
    assert not [n for n in names if "/_C" in n]  # an isolated build has no torch: no torch extension
    info = _build_info(built["wheel"])
    assert "onnxruntime" in info["built"]
    # OpenVINO comes with the build requirements (pyproject.toml): every wheel carries its extension.
    assert LIB + "libdrconv_openvino.so" in names and "openvino" in info["built"]
    if shutil.which("nvcc") or Path("/usr/local/cuda/bin/nvcc").is_file():
        assert LIB + "libdrconv_tensorrt.so" in names and info["built"] == ["onnxruntime", "tensorrt", "openvino"]
    else:
        assert "nvcc" in info["left_out"]["tensorrt"]


def test_a_wheel_built_without_cuda_says_what_it_left_out(built):
    with zipfile.ZipFile(built["cpu_wheel"]) as z:
        names = set(z.namelist())
    assert LIB + "libdrconv_onnxruntime.so" in names and LIB + "libdrconv_tensorrt.so" not in names
    assert LIB + "libdrconv_openvino.so" in names
    assert _build_info(built["cpu_wheel"])["left_out"] == {"tensorrt": "DRCONV_WITH_CUDA is OFF"}


VENV_CHECK = (
    textwrap.dedent(
        """
        import sys
        try:
            import torch  # noqa: F401
        except ImportError:
            pass
        else:
            raise SystemExit("torch is installed in the fresh environment")
        """
    )
    + RUN_MODEL
)


def test_a_fresh_environment_without_torch_runs_a_custom_node_model(built):
    tmp = built["tmp"]
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    py, cli = venv / "bin" / "python", venv / "bin" / "drconv"
    _run(
        [
            str(py),
            "-m",
            "pip",
            "install",
            "--quiet",
            f"{built['wheel']}[cpu]",
            "-c",
            str(ROOT / "requirements" / "cpu.txt"),
        ]
    )

    path, x_path, expected = zoo_case(tmp)
    out = tmp / "out.npz"
    library = _run([str(py), "-c", VENV_CHECK, str(path), str(x_path), str(out)], cwd=tmp).strip()
    assert library.startswith(str(venv)) and library.endswith("drconv/lib/libdrconv_onnxruntime.so")
    check_outputs(out, expected)

    info = json.loads(_run([str(cli), "info", "--json"], cwd=tmp))
    assert info["torch"] is None and info["onnxruntime"] and info["plugins"]["onnxruntime"] == library
    assert info["plugins_left_out"] == _build_info(built["wheel"])["left_out"]
    report = tmp / "bench.json"
    _run([str(cli), "benchmark", str(path), "--input-shape", "1,3,64,64", "--iters", "3", "--json", str(report)])
    assert json.loads(report.read_text())["results"][0]["backend"] == "ort:m.onnx"
    refused = subprocess.run([str(cli), "export", "-o", str(tmp / "x.onnx")], capture_output=True, text=True)
    assert refused.returncode == 1 and "pip install 'drconv[torch]'" in refused.stderr


def test_build_info_names_a_failed_header_fetch(tmp_path):
    """A reason with CMake's list separator in it (';') still makes valid JSON."""
    env = {
        **_build_env(tmp_path),
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(tmp_path / "no-wheels"),
        "PIP_CONFIG_FILE": os.devnull,
    }
    env.pop("TensorRT_INCLUDE_DIR", None)
    env.pop("TENSORRT_ROOT", None)
    build = tmp_path / "build"
    _run(
        ["cmake", "-S", str(ROOT / "plugins"), "-B", str(build), f"-DPython3_EXECUTABLE={sys.executable}"]
        + [f"-DONNXRUNTIME_INCLUDE_DIR={env['ONNXRUNTIME_INCLUDE_DIR']}"] * ("ONNXRUNTIME_INCLUDE_DIR" in env),
        env=env,
    )
    info = json.loads((build / "build_info.json").read_text())
    assert info["built"] == ["onnxruntime", "openvino"]  # OpenVINO's config found from this Python's package
    assert set(info["left_out"]) == {"tensorrt"}
    reason = info["left_out"]["tensorrt"]
    assert "fetching failed" in reason or "no CUDA compiler" in reason, reason


NVCC = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if Path("/usr/local/cuda/bin/nvcc").is_file() else None)


def test_nvcc_compiles_the_wheels_cuda_kernel_sources(built, tmp_path):
    """What drconv.cuda_kernel compiles on a user's GPU machine, from the wheel's files alone (compile
    only): the kernel, and the torch binding's header of checks with the headers it includes. (The
    binding itself includes ATen's CUDA context, which needs cuSPARSE's headers: not installed here.)"""
    if NVCC is None:
        pytest.skip("nvcc is not installed here (CUDA toolkit at /usr/local/cuda), so the CUDA sources cannot compile")
    import sysconfig

    from torch.utils.cpp_extension import include_paths

    with zipfile.ZipFile(built["wheel"]) as z:
        z.extractall(tmp_path, [n for n in z.namelist() if n.startswith("drconv/csrc/")])
    csrc = tmp_path / "drconv" / "csrc"
    includes = [f"-I{csrc / 'common'}", f"-I{csrc}"]  # drconv.cuda_kernel.extension's include paths
    _run([NVCC, "-std=c++17", "-arch=sm_75", "-c", *includes, str(csrc / "common" / "region_conv_cuda.cu"),
          "-o", str(tmp_path / "kernel.o")])  # fmt: skip
    (tmp_path / "checks.cpp").write_text('#include "region_conv_checks.h"\n#include "region_conv_cuda.h"\n')
    cuda_include = Path(NVCC).resolve().parent.parent / "include"
    torch_includes = [f"-I{p}" for p in (*include_paths(), cuda_include, sysconfig.get_paths()["include"])]
    _run([NVCC, "-std=c++20", "-c", *includes, *torch_includes, str(tmp_path / "checks.cpp"),
          "-o", str(tmp_path / "checks.o")])  # fmt: skip
    assert (tmp_path / "kernel.o").stat().st_size > 0 and (tmp_path / "checks.o").stat().st_size > 0
