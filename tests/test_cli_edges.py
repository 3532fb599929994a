"""The command line's rough edges that a new user met (issue 25), each run as a user runs it:
the console script in a subprocess, then its exit code, its one line, and the file system."""

import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from drconv.benchmark.timing import available_cores
from drconv.runtime.ort import session

DRCONV = shutil.which("drconv") or str(Path(sys.executable).parent / "drconv")
DOUBLE = Path(__file__).parent / "drconv_pytorch_double.py"


def run(*args, cwd=None, stdout=subprocess.PIPE):
    return subprocess.run([DRCONV, *map(str, args)], stdout=stdout, stderr=subprocess.PIPE, text=True, cwd=cwd,
                          timeout=300)  # fmt: skip


def one_line_error(result, code: int = 1) -> str:
    assert result.returncode == code, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize("command", [["benchmark", "--layer", "8x8x8"], ["profile", "drconv-tiny"]])
def test_threads_above_the_cores_are_refused(command):
    cores = available_cores()
    line = one_line_error(run(*command, "--threads", 10000))
    assert f"--threads 10000: this process may run on {cores} CPU core" in line and f"--threads {cores}" in line


@pytest.mark.parametrize("args", [["export", "-o", "out/"], ["benchmark", "--layer", "8x8x8", "--json", "out/"]])
def test_an_output_ending_in_a_slash_is_refused(tmp_path, args):
    result = run(*args, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "ends in '/', so it names a folder" in " ".join(re.sub("[│╭╮╰╯─]", " ", result.stderr).split())
    assert list(tmp_path.iterdir()) == []


def test_plot_writes_the_format_its_extension_names(tmp_path):
    svg, pdf = tmp_path / "p.svg", tmp_path / "p.pdf"
    for path in (svg, pdf):
        result = run("benchmark", "--layer", "8x8x8", "--backend", "torch", "--iters", 2, "--warmup", 0,
                     "--plot", path)  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
    assert b"<svg" in svg.read_bytes()[:1000]
    assert pdf.read_bytes().startswith(b"%PDF")


@pytest.mark.parametrize("name", ["p.xyz", "plot"])
def test_plot_without_an_image_extension_is_refused_before_timing(tmp_path, name):
    line = one_line_error(run("benchmark", "--layer", "8x8x8", "--plot", tmp_path / name))
    assert "which is no image format" in line and ".png" in line and ".svg" in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args", [["info", "--json"], ["info"], ["models"], ["summary", "--json", "--input-shape",
                                                                            "1,3,32,32"]])  # fmt: skip
def test_a_stdout_that_cannot_be_written_is_one_line(args):
    with open("/dev/full", "w") as full:
        line = one_line_error(run(*args, stdout=full))
    assert line == "error: cannot write the standard output: No space left on device"


def test_an_empty_onnx_file_says_so(tmp_path):
    (tmp_path / "empty.onnx").write_bytes(b"")
    line = one_line_error(run("verify", tmp_path / "empty.onnx"))
    assert "empty.onnx is empty (0 bytes)" in line


@pytest.mark.parametrize(
    ("shape", "said"),
    [
        ("1,3,4,4", "needs H and W >= 32, got 4x4"),
        ("1,4,64,64", "expects input [N, 3, H, W], got shape (2, 4, 64, 64)"),
    ],
)
def test_export_errors_show_sizes_not_trace_symbols(tmp_path, shape, said):
    line = one_line_error(run("export", "--input-shape", shape, "-o", tmp_path / "m.onnx"))
    assert said in line
    assert not re.search(r"\bs\d+", line), line
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("layer", ["100000x100000x100000", "100000x1x1"])
def test_layer_that_does_not_fit_names_layer(layer):
    line = one_line_error(run("benchmark", "--layer", layer))
    assert "give a smaller --layer or --batch" in line and "--input-shape" not in line


def test_help_shows_every_default_and_readable_placeholders():
    app_help = run("--help").stdout
    assert "<bool>" not in app_help
    for command in ("models", "info", "summary", "export", "verify", "build", "benchmark", "profile"):
        text = run(command, "--help").stdout
        assert "<bool>" not in text and "<list" not in text and "[default: (" not in text, (command, text)
    verify_help = " ".join(run("verify", "--help").stdout.split())
    assert "[default: 2]" in verify_help and "[default: 64]" in verify_help


def test_a_python_file_path_names_a_model(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "helpers.py").write_text("import torch\nWIDTH = 5\n")
    (tmp_path / "sub" / "mynet.py").write_text(
        "import torch\nfrom helpers import WIDTH\n\ndef build():\n    return torch.nn.Conv2d(3, WIDTH, 1)\n"
    )
    result = run("summary", "--model", "./sub/mynet.py:build", "--input-shape", "1,3,8,8", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout)["output_shape"] == [1, 5, 8, 8]
    line = one_line_error(run("summary", "--model", "./sub/nothere.py:build", cwd=tmp_path))
    assert "nothere.py is not a .py file; give path/to/file.py:factory or package.module:factory" in line


LONG_NAMES = textwrap.dedent(
    """
    from collections import OrderedDict
    import torch
    from drconv import DRConv2d

    def build():
        torch.manual_seed(0)
        return torch.nn.Sequential(OrderedDict(
            stage1_block0_branch_right_region_conv_first=DRConv2d(3, 4, 1, region_num=2),
            stage1_block0_branch_right_region_conv_second=DRConv2d(4, 4, 1, region_num=2),
        ))
    """
)


def test_piped_tables_print_whole_names(tmp_path):
    (tmp_path / "longnet.py").write_text(LONG_NAMES)
    result = run("export", "--model", "longnet:build", "--input-shape", "1,3,16,16", "-o", "m.onnx", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    result = run("verify", "m.onnx", "--model", "longnet:build", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    for name in ("stage1_block0_branch_right_region_conv_first", "stage1_block0_branch_right_region_conv_second"):
        assert name in result.stdout
    info = run("info")
    assert "…" not in result.stdout + info.stdout
    assert str(Path(DRCONV).parent.parent) in info.stdout  # the executable's full path


def test_import_drconv_reaches_its_submodules_lazily():
    code = (
        "import sys, drconv\n"
        "assert 'torch' not in sys.modules and 'drconv.models' not in sys.modules\n"
        "print(type(drconv.models.create('drconv-tiny')).__name__, drconv.contract.DOMAIN)\n"
        "assert 'models' in dir(drconv)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["DRConvTiny", "drconv"]


# A DRConv-PyTorch project: its layer in its own drconv.py, its model importing it by that name.
USERS_NET = textwrap.dedent(
    """
    import torch
    from torch import nn
    from drconv import DRConv2d

    def build():
        torch.manual_seed(0)
        return nn.Sequential(DRConv2d(3, 8, 3, region_num=4, padding=0), nn.ReLU(), DRConv2d(8, 6, 3, region_num=2))
    """
)
# Their own model's output, with their own drconv.py (the folder first on the path, as for a script).
USERS_OUTPUT = textwrap.dedent(
    """
    import sys
    import numpy as np
    import torch
    import drconv, mynet
    assert drconv.__file__.endswith("drconv.py") and "site-packages" not in drconv.__file__, drconv.__file__
    model = mynet.build().eval()
    if sys.argv[1] != "-":
        model.load_state_dict(torch.load(sys.argv[1]))
    with torch.no_grad():
        np.save(sys.argv[3], model(torch.from_numpy(np.load(sys.argv[2]))).numpy())
    """
)


@pytest.fixture
def users_project(tmp_path):
    shutil.copy(DOUBLE, tmp_path / "drconv.py")
    (tmp_path / "mynet.py").write_text(USERS_NET)
    (tmp_path / "theirs.py").write_text(USERS_OUTPUT)
    subprocess.run(  # a trained checkpoint: the weights moved away from the factory's
        [sys.executable, "-c", "import torch, mynet\nm = mynet.build()\n"
         "[p.data.mul_(-0.7).add_(0.02) for p in m.parameters()]\ntorch.save(m.state_dict(), 'ckpt.pt')"],
        cwd=tmp_path, check=True, timeout=120,
    )  # fmt: skip
    np.save(tmp_path / "x.npy", torch.randn(2, 3, 20, 24, generator=torch.Generator().manual_seed(3)).numpy())
    return tmp_path


@pytest.mark.parametrize("checkpoint", [None, "ckpt.pt"])
def test_a_projects_own_drconv_py_builds_its_model(users_project, checkpoint):
    weights = ["--checkpoint", checkpoint] if checkpoint else []
    result = run("export", "--model", "mynet:build", *weights, "--input-shape", "1,3,32,32", "-o", "m.onnx",
                 cwd=users_project)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "converted 2 DRConv-PyTorch DRConv2d layers (from the model's own drconv.py, not this package)" in (
        result.stderr
    )
    subprocess.run([sys.executable, "theirs.py", checkpoint or "-", "x.npy", "y.npy"], cwd=users_project, check=True,
                   timeout=120)  # fmt: skip
    x = np.load(users_project / "x.npy")
    expected = np.load(users_project / "y.npy")
    assert expected.shape == (2, 6, 16, 20)  # their padding 0, not drconv's 'same'
    got = session(users_project / "m.onnx").run(None, {"input": x})[0]
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-3)
