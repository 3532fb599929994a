"""Running an exported model needs no torch: numpy, onnx, onnxruntime and drconv's library.

A child process that cannot import torch runs a custom-node export through plain ONNX
Runtime with `drconv.get_library_path()`, and through `drconv.runtime.ort.session`; and
`drconv info` reports the environment there.
"""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import torch

from drconv.export import to_onnx
from drconv.libraries import plugin_path
from drconv.models import create

# Runs argv[1] (a custom-node export) on the input in argv[2] through plain ONNX Runtime with
# drconv.get_library_path() and through drconv.runtime.ort.session, saves both outputs to
# argv[3] and prints the library's path. Also the fresh environment's check in test_wheel.py.
RUN_MODEL = textwrap.dedent(
    """
    import numpy as np
    import onnxruntime as ort
    import drconv
    from drconv.runtime.ort import session

    model, x_path, out_path = sys.argv[1:4]
    x = np.load(x_path)
    options = ort.SessionOptions()
    options.register_custom_ops_library(drconv.get_library_path("onnxruntime"))
    plain = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    ours = session(model).run(None, {"input": x})[0]
    np.savez(out_path, plain=plain, ours=ours)
    print(drconv.get_library_path("onnxruntime"))
    """
)
CHILD = (
    'import sys\nsys.modules["torch"] = None  # `import torch` now raises ImportError\n'
    + RUN_MODEL
    + 'print("torch loaded:", sys.modules["torch"] is not None)\n'
)


def zoo_case(tmp_path: Path) -> tuple[Path, Path, np.ndarray]:
    """A custom-node export of the 0.5x zoo model, an input of another batch and size saved as .npy,
    and PyTorch's output on it."""
    torch.manual_seed(0)
    model = create("drconv-shufflenetv2-0.5x").eval()
    path = to_onnx(model, torch.randn(1, 3, 64, 64), tmp_path / "m.onnx")
    x = torch.randn(2, 3, 96, 64)
    with torch.no_grad():
        expected = model(x).numpy()
    np.save(tmp_path / "x.npy", x.numpy())
    return path, tmp_path / "x.npy", expected


def check_outputs(out: Path, expected: np.ndarray) -> None:
    """RUN_MODEL's two outputs: plain ONNX Runtime matches PyTorch, drconv's session matches it exactly."""
    got = np.load(out)
    np.testing.assert_allclose(got["plain"], expected, atol=1e-4, rtol=1e-3)
    np.testing.assert_array_equal(got["ours"], got["plain"])


def test_a_custom_export_runs_without_torch(tmp_path):
    assert plugin_path("onnxruntime") is not None, "libdrconv_onnxruntime.so not built: run `make plugins`"
    path, x_path, expected = zoo_case(tmp_path)
    out = tmp_path / "out.npz"
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), str(x_path), str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "torch loaded: False" in result.stdout
    check_outputs(out, expected)


INFO_CHILD = textwrap.dedent(
    """
    import sys
    sys.modules["torch"] = None
    from drconv.cli import main
    sys.argv = ["drconv", "info", "--json"]
    main()
    """
)


def test_drconv_info_runs_without_torch():
    result = subprocess.run([sys.executable, "-c", INFO_CHILD], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(result.stdout)
    assert data["torch"] is None and data["cpu_kernel_isa"] is None and data["cuda_available"] is False
    assert data["plugins"]["onnxruntime"] == str(plugin_path("onnxruntime"))
    assert data["onnxruntime"]


CLI_CHILD = textwrap.dedent(
    """
    import sys
    sys.modules["torch"] = None
    from drconv.cli import main
    sys.argv = ["drconv", *sys.argv[1:]]
    main()
    """
)


def _cli_without_torch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CLI_CHILD, *args], capture_output=True, text=True, timeout=300)


def test_benchmark_of_an_onnx_file_runs_without_torch(tmp_path):
    path = to_onnx(create("drconv-tiny").eval(), torch.randn(1, 3, 32, 32), tmp_path / "m.onnx")
    result = _cli_without_torch(
        "benchmark", str(path), "--input-shape", "1,3,32,32", "--iters", "3", "--json", str(tmp_path / "b.json")
    )
    assert result.returncode == 0, result.stderr[-3000:]
    doc = json.loads((tmp_path / "b.json").read_text())
    assert [r["backend"] for r in doc["results"]] == ["ort:m.onnx"]
    assert doc["results"][0]["iters"] >= 3


def test_commands_that_need_torch_say_so_in_one_line(tmp_path):
    for args in (
        ["export", "-o", str(tmp_path / "m.onnx")],
        ["benchmark", "--layer", "8x8x8"],
        ["summary"],
    ):
        result = _cli_without_torch(*args)
        assert result.returncode == 1, (args, result.stderr[-2000:])
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
        assert f"drconv {args[0]} needs torch" in lines[0] and "pip install 'drconv[torch]'" in lines[0]
    assert not (tmp_path / "m.onnx").exists()


def test_models_lists_the_built_in_models_without_torch():
    from drconv.model_names import names

    result = _cli_without_torch("models")
    assert result.returncode == 0, result.stderr[-2000:]
    for name in names():
        assert name in result.stdout
