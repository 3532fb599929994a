"""The drconv command line, run as a user runs it: the installed console script, in a subprocess."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DRCONV = shutil.which("drconv") or str(Path(sys.executable).parent / "drconv")


def run(*args):
    return subprocess.run([DRCONV, *args], capture_output=True, text=True, timeout=300)


def test_help_lists_commands():
    result = run("--help")
    assert result.returncode == 0
    for command in ("models", "info", "summary"):
        assert command in result.stdout


def test_models_lists_default():
    result = run("models")
    assert result.returncode == 0
    assert "drconv-tiny" in result.stdout and "default" in result.stdout


def test_info_json():
    result = run("info", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    for key in ("python", "torch", "onnx", "onnxruntime", "tensorrt", "cuda_available", "plugins"):
        assert key in data
    assert set(data["plugins"]) == {"onnxruntime", "tensorrt"}
    assert data["torch"].startswith("2.")
    assert isinstance(data["cuda_available"], bool)
    assert data["native_cpu_kernel"] is True


def test_summary_runs_forward():
    result = run("summary", "--input-shape", "2,3,64,48")
    assert result.returncode == 0, result.stderr
    assert "features.2.0" in result.stdout  # a DRConv2d layer's row
    assert "(2, 1000)" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["summary", "--input-shape", "1,3,16,16"], "needs H and W >= 32"),
        (["summary", "--model", "no_such_pkg:make"], "cannot import module 'no_such_pkg'"),
        (["summary", "--model", "unknown-net"], "unknown model 'unknown-net'"),
        (["summary", "--checkpoint", "/nonexistent/w.pt"], "/nonexistent/w.pt: no such file"),
        (["summary", "--input-shape", "1,4,64,64"], "expects input [N, 3, H, W]"),
    ],
)
def test_user_errors_are_one_line(args, message):
    result = run(*args)
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_bad_option_value_is_a_usage_error():
    result = run("summary", "--input-shape", "a,b")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
