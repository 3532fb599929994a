"""The shared C++ CPU kernel, built with CMake and run plain and under ASan/UBSan."""

import shutil
import subprocess
from pathlib import Path

import pytest

PLUGINS = Path(__file__).resolve().parent.parent / "plugins"


@pytest.mark.parametrize("sanitize", ["OFF", "ON"], ids=["plain", "asan-ubsan"])
def test_cpu_kernel_program(tmp_path, sanitize):
    if shutil.which("cmake") is None:
        pytest.fail("cmake is required to build the native kernels (apt-get install cmake)")
    build = tmp_path / "build"
    subprocess.run(
        ["cmake", "-S", str(PLUGINS), "-B", str(build), f"-DDRCONV_SANITIZE={sanitize}", "-DCMAKE_BUILD_TYPE=Debug"],
        check=True,
        capture_output=True,
    )
    compiled = subprocess.run(["cmake", "--build", str(build), "-j", "2"], capture_output=True, text=True)
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
    assert "warning" not in compiled.stdout + compiled.stderr
    result = subprocess.run([str(build / "region_conv_cpu_test")], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 failed" in result.stdout
    assert "runtime error" not in result.stderr  # UBSan reports
