"""The drconv command line, run as a user runs it: the installed console script, in a subprocess."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from drconv.libraries import OPENVINO_VERSION

DRCONV = shutil.which("drconv") or str(Path(sys.executable).parent / "drconv")


def run(*args):
    return subprocess.run([DRCONV, *args], capture_output=True, text=True, timeout=300)


def test_help_lists_commands():
    result = run("--help")
    assert result.returncode == 0
    for command in ("models", "info", "summary", "export", "verify", "build", "triton", "serve", "benchmark"):
        assert command in result.stdout


def test_models_lists_default():
    result = run("models")
    assert result.returncode == 0
    assert "drconv-tiny" in result.stdout and "default" in result.stdout


def test_info_json():
    result = run("info", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    for key in ("python", "torch", "onnx", "onnxruntime", "openvino", "tensorrt", "cuda_available", "plugins"):
        assert key in data
    assert set(data["plugins"]) == {"onnxruntime", "tensorrt", "openvino"}
    # `make test` installs OpenVINO (requirements/cpu.txt) and builds its extension
    assert data["openvino"] == OPENVINO_VERSION and data["plugins"]["openvino"].endswith("libdrconv_openvino.so")
    assert data["torch"].startswith("2.")
    assert isinstance(data["cuda_available"], bool)
    assert data["cpu_kernel_isa"] in {"avx512", "avx2", "baseline"}
    # `make test` builds the ONNX Runtime library first
    assert data["plugins"]["onnxruntime"].endswith("libdrconv_onnxruntime.so")


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


def test_export_custom_and_verify(tmp_path):
    out = tmp_path / "tiny.onnx"
    result = run("export", "-o", str(out), "--input-shape", "1,3,64,64", "--verify")
    assert result.returncode == 0, result.stderr
    assert out.is_file()
    assert "drconv::RegionConv2d" in result.stdout and "custom nodes: 3" in result.stdout
    assert "[batch, 3, height, width]" in result.stdout
    assert "ok" in result.stdout and "FAIL" not in result.stdout
    # verify on its own, at another batch and size than the export's
    again = run("verify", str(out), "--batch", "3", "--size", "40")
    assert again.returncode == 0, again.stderr
    assert "(3, 3, 40, 40)" in again.stdout


def test_export_filter_layout_and_fuse_flags(tmp_path):
    # A 1x1 DRConv2d + BatchNorm + ReLU: version 2 of the node by default, version 1 on request.
    (tmp_path / "mini.py").write_text(
        "import torch\nfrom drconv import DRConv2d\n\n"
        "def factory():\n"
        "    return torch.nn.Sequential(DRConv2d(3, 8, 1), torch.nn.BatchNorm2d(8), torch.nn.ReLU())\n"
    )
    common = ("export", "--model", "mini:factory", "--input-shape", "1,3,16,16", "--verify")
    v2 = subprocess.run([DRCONV, *common, "-o", "v2.onnx"], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert v2.returncode == 0, v2.stderr
    assert "drconv 2" in v2.stdout and "ok" in v2.stdout
    v1 = subprocess.run(
        [DRCONV, *common, "-o", "v1.onnx", "--filter-layout", "OIHW", "--no-fuse"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert v1.returncode == 0, v1.stderr
    assert "drconv 1" in v1.stdout and "ok" in v1.stdout
    plugin = subprocess.run(
        [DRCONV, *common, "-o", "plugin.onnx", "--plugin-v1"], capture_output=True, text=True, cwd=tmp_path, timeout=300
    )
    assert plugin.returncode == 0, plugin.stderr
    assert "drconv 1" in plugin.stdout and "ok" in plugin.stdout  # folded BN and IHWO lowered again
    bad = run("export", "-o", str(tmp_path / "x.onnx"), "--filter-layout", "HWIO")
    assert bad.returncode == 2 and "HWIO" in bad.stderr
    assert not (tmp_path / "x.onnx").exists()


def test_export_portable_static(tmp_path):
    out = tmp_path / "p.onnx"
    result = run("export", "-o", str(out), "--mode", "portable", "--static", "--input-shape", "2,3,32,32")
    assert result.returncode == 0, result.stderr
    assert "RegionConv2d" not in result.stdout and "custom nodes: 0" in result.stdout
    assert "[2, 3, 32, 32]" in result.stdout


def test_verify_fails_above_tolerance(tmp_path):
    out = tmp_path / "tiny.onnx"
    assert run("export", "-o", str(out), "--input-shape", "1,3,32,32").returncode == 0
    result = run("verify", str(out), "--atol", "0", "--rtol", "0")
    assert result.returncode == 1
    assert "FAIL" in result.stdout and "differs from PyTorch" in result.stderr


def test_export_unwritable_path_is_one_line(tmp_path):
    result = run("export", "-o", "/proc/drconv.onnx", "--input-shape", "1,3,32,32")
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error: cannot write /proc/drconv.onnx")
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not Path("/proc/drconv.onnx").exists()


def test_export_onto_a_fifo_is_refused_in_one_line(tmp_path):
    import os
    import stat

    fifo = tmp_path / "model.onnx"
    os.mkfifo(fifo)
    result = run("export", "-o", str(fifo), "--input-shape", "1,3,32,32")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: cannot write {fifo}: it exists and is not a regular file (a device, FIFO or socket), so drconv "
        "will not replace it; choose a writable location with -o"
    ]
    assert stat.S_ISFIFO(fifo.lstat().st_mode)


def test_opset_above_the_installed_onnx_is_a_usage_error(tmp_path):
    import onnx

    result = run("export", "-o", str(tmp_path / "x.onnx"), "--opset", "99", "--input-shape", "1,3,32,32")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: opset 99 is not supported: choose 18 to {onnx.defs.onnx_opset_version()} (the newest the "
        f"installed onnx {onnx.__version__} knows)"
    ]
    assert list(tmp_path.iterdir()) == []


def test_export_bad_mode_is_a_usage_error(tmp_path):
    result = run("export", "-o", str(tmp_path / "x.onnx"), "--mode", "fast")
    assert result.returncode == 2
    assert "fast" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_verify_rejects_a_non_onnx_file(tmp_path):
    bogus = tmp_path / "model.onnx"
    bogus.write_text("not a model")
    result = run("verify", str(bogus))
    assert result.returncode == 1
    assert "is not an ONNX model" in result.stderr and "Traceback" not in result.stderr


def test_user_text_prints_literally_no_markup_no_emoji(tmp_path):
    result = run("summary", "--model", "no_such_mod:factory")
    assert result.returncode == 1
    assert "'no_such_mod:factory'" in result.stderr and "\N{FACTORY}" not in result.stderr
    result = run("summary", "--model", "[bold]m[/]:smile")
    assert result.returncode == 1
    assert "'[bold]m[/]:smile'" in result.stderr and "\N{SMILING FACE WITH OPEN MOUTH}" not in result.stderr


def test_verify_of_a_static_export_says_batch_and_size_do_not_apply(tmp_path):
    path = tmp_path / "static.onnx"
    assert run("export", "-o", str(path), "--static", "--input-shape", "1,3,32,32").returncode == 0
    result = run("verify", str(path), "--batch", "3", "--size", "48")
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip().splitlines() == [
        "note: static.onnx has a fixed input shape 1x3x32x32, so --batch and --size do not apply; verifying at that "
        "shape"
    ]
    assert "(1, 3, 32, 32)" in result.stdout
    assert run("verify", str(path)).stderr.strip() == ""  # nothing to say when neither is given


def test_a_model_module_in_the_current_directory_is_found(tmp_path):
    (tmp_path / "mynet_for_drconv.py").write_text(
        "import torch\n\ndef build():\n    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [DRCONV, "summary", "--model", "mynet_for_drconv:build", "--input-shape", "1,3,16,16"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "mynet_for_drconv:build" in result.stdout


@pytest.mark.parametrize(
    ("args", "delay"),
    [
        (["export", "-o", "m.onnx"], 0.2),  # while Python starts and imports
        (["export", "-o", "m.onnx"], 1.5),  # while torch loads or the model traces
        (["benchmark", "--layer", "16x16x16", "--iters", "1000000", "--json", "b.json"], 6.0),  # while timing
    ],
)
def test_an_interrupt_is_one_line_and_exit_130_whenever_it_comes(tmp_path, args, delay):
    import signal
    import time

    child = subprocess.Popen([DRCONV, *args], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(delay)
        assert child.poll() is None, "the command ended before the interrupt; the test needs a longer one"
        child.send_signal(signal.SIGINT)
        _, stderr = child.communicate(timeout=120)
    finally:
        child.kill()  # a command the interrupt missed must not run on after the test
    assert child.returncode == 130
    assert stderr.strip() == "interrupted"
    assert list(tmp_path.iterdir()) == []  # no output and no temp file


def test_an_interrupt_during_a_finalizer_is_raised_after_it():
    """Python drops an exception raised in __del__ (it printed "Exception ignored in
    StorageWeakRef.__del__" in CI and the benchmark ran on): the handler raises it a moment later."""
    import signal
    import time

    from drconv import _entry

    class Finalized:
        def __del__(self):
            _entry._on_sigint(signal.SIGINT, sys._getframe())  # as the signal would: no exception here

    before = signal.getsignal(signal.SIGALRM)
    try:
        with pytest.raises(_entry.Interrupted):
            Finalized()  # freed at once: __del__ runs, and defers the interrupt
            time.sleep(2)  # the retry raises it here, in ordinary code
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, before)


@pytest.mark.parametrize(
    "args",
    [
        ["summary", "--input-shape", "1,3,100000,100000"],
        ["export", "-o", "m.onnx", "--input-shape", "1,3,100000,100000"],
        ["benchmark", "--batch", "1000000"],
    ],
)
def test_an_input_larger_than_memory_is_refused_before_allocating(tmp_path, args):
    result = subprocess.run([DRCONV, *args], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert re.fullmatch(
        r"error: input [0-9x]+ needs ~[0-9,.]+ GiB as float32, this machine has [0-9.,]+ GiB available "
        r"\([0-9.,]+ GiB in all\); give a smaller --input-shape( or --batch)?",
        line,
    ), line
    assert list(tmp_path.iterdir()) == []


def test_running_out_of_memory_is_one_line(capsys):
    import typer

    from drconv.cli import user_errors

    @user_errors
    def allocate():
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:118] DefaultCPUAllocator: can't allocate memory: 9e12 bytes")

    with pytest.raises(typer.Exit) as exit_info:
        allocate()
    assert exit_info.value.exit_code == 1
    assert capsys.readouterr().err.strip() == (
        "error: out of memory on this input; give a smaller --input-shape, --batch or --size"
    )

    @user_errors
    def other_bug():
        raise RuntimeError("a bug, not the user's")

    with pytest.raises(RuntimeError, match="a bug"):  # anything else is not hidden
        other_bug()


class _WholeModel(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 1)


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("text", "a text file, not a PyTorch checkpoint; expected a state_dict saved with torch.save"),
        ("empty", "the file is empty; expected a state_dict"),
        (
            "whole",
            r"holds a pickled test_cli\._WholeModel \(a whole model\?\), not only tensors; expected a state_dict",
        ),
        ("keys", r"does not fit the model: \d+ missing keys \(.*, \.\.\.\); 1 unexpected key \(nothing_here\)"),
    ],
)
def test_checkpoint_errors_say_what_the_file_is_in_one_short_line(tmp_path, kind, message):
    path = tmp_path / "w.pt"
    if kind == "text":
        path.write_text("these are not weights\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "whole":
        torch.save(_WholeModel(), path)
    else:
        torch.save({"nothing_here": torch.zeros(1)}, path)
    result = run("summary", "--checkpoint", str(path))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert re.search(message, line), line
    assert len(line) < 300 and "\x1b[" not in line and "weights_only" not in line


def test_export_with_a_size_of_one_says_those_axes_are_static(tmp_path):
    import onnx

    (tmp_path / "pointwise_net.py").write_text(
        "import torch\n\ndef build():\n"
        "    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())\n"
    )
    out = tmp_path / "m.onnx"
    result = subprocess.run(
        [DRCONV, "export", "-o", str(out), "--model", "pointwise_net:build", "--input-shape", "1,3,1,1"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip().splitlines() == [
        "note: --input-shape 1x3x1x1 has a height or width of 1, which torch.export fixes: those axes will be "
        "static; trace with sizes above 1 for dynamic ones"
    ]
    dims = onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 3, 1, 1]


def test_benchmark_header_counts_what_ran(tmp_path):
    result = run(
        "benchmark", "--layer", "8x8x8", "--kernel", "1", "--threads", "1", "--iters", "3", "--backend", "torch"
    )
    assert result.returncode == 0, result.stderr
    header = " ".join(result.stdout.split())
    assert "1 thread:" in header and "1 threads" not in header
    assert "3 calls each, in alternating bursts of 3" in header


def test_ratios_never_round_to_zero():
    from drconv.benchmark.report import _ratio

    assert _ratio(1.234) == "1.23" and _ratio(0.0042) == "0.0042" and _ratio(0.05) == "0.05"


def test_benchmark_checks_a_file_against_the_model_given_with_it(tmp_path):
    from drconv.export import to_onnx
    from drconv.models import create

    path = to_onnx(create("drconv-tiny").eval(), torch.randn(1, 3, 64, 64), tmp_path / "tiny.onnx")
    common = ["--input-shape", "1,3,64,64", "--iters", "3", "--backend", "torch"]
    report = tmp_path / "b.json"
    ok = run("benchmark", "drconv-tiny", str(path), *common, "--json", str(report))
    assert ok.returncode == 0, ok.stderr
    rows = {r["backend"]: r for r in json.loads(report.read_text())["results"]}
    assert rows["ort:tiny.onnx"]["max_rel_error"] < 1e-3

    other = run("benchmark", "drconv-shufflenetv2-0.5x", str(path), *common)
    assert other.returncode == 1 and "Traceback" not in other.stderr
    (line,) = other.stderr.strip().splitlines()
    assert line.startswith(f"error: {path} is not drconv-shufflenetv2-0.5x: their outputs differ by ")
    assert line.endswith("pass --no-check to time it anyway")
    forced = run("benchmark", "drconv-shufflenetv2-0.5x", str(path), *common, "--no-check")
    assert forced.returncode == 0 and "ort:tiny.onnx" in forced.stdout
