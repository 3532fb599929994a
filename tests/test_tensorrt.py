"""The TensorRT plugin library, tested on the host: no GPU and no libnvinfer needed.

The C++ program loads libdrconv_tensorrt.so by path through getCreators/setLoggerFinder
(as IPluginRegistry::loadLibrary does) and checks the creator, the build-time methods and
serialization. The plugin is built by `make plugins` wherever the CUDA toolkit is.
"""

import shutil
import subprocess
from pathlib import Path

import pytest

from drconv.info import plugin_path

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
