"""The native code built with CMake: the shared CPU kernel's test program (plain and under
ASan/UBSan) and the ONNX Runtime library under ASan/UBSan, driven from a Python process."""

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from drconv import region_conv

ROOT = Path(__file__).resolve().parent.parent
PLUGINS = ROOT / "plugins"
MAIN_BUILD = ROOT / "build" / "plugins"


def _cmake_args() -> list[str]:
    """Reuse the main build's ONNX Runtime headers: no second download."""
    args = []
    cache = MAIN_BUILD / "CMakeCache.txt"
    if cache.is_file():
        match = re.search(r"^ONNXRUNTIME_INCLUDE_DIR:PATH=(.+)$", cache.read_text(), re.MULTILINE)
        if match:
            args.append(f"-DONNXRUNTIME_INCLUDE_DIR={match.group(1)}")
    return args


def _build(build: Path, sanitize: str, *targets: str) -> None:
    if shutil.which("cmake") is None:
        pytest.fail("cmake is required to build the native kernels (apt-get install cmake)")
    configured = subprocess.run(
        [
            "cmake",
            "-S",
            str(PLUGINS),
            "-B",
            str(build),
            f"-DDRCONV_SANITIZE={sanitize}",
            "-DCMAKE_BUILD_TYPE=Debug",
            "-DDRCONV_WITH_CUDA=OFF",
            *_cmake_args(),
        ],
        capture_output=True,
        text=True,
    )
    assert configured.returncode == 0, configured.stdout + configured.stderr
    target_args = [arg for t in targets for arg in ("--target", t)]
    compiled = subprocess.run(["cmake", "--build", str(build), "-j", "2", *target_args], capture_output=True, text=True)
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
    assert "warning" not in compiled.stdout + compiled.stderr


@pytest.mark.parametrize("sanitize", ["OFF", "ON"], ids=["plain", "asan-ubsan"])
def test_cpu_kernel_program(tmp_path, sanitize):
    _build(tmp_path / "build", sanitize, "region_conv_cpu_test")
    result = subprocess.run(
        [str(tmp_path / "build" / "region_conv_cpu_test")], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = re.search(r"^(\d+) passed, (\d+) failed$", result.stdout, re.MULTILINE)
    assert summary is not None and summary.group(2) == "0", result.stdout[-2000:]
    # the program counts its cases as they run: one "ok" line each
    assert int(summary.group(1)) == len(re.findall(r"^ok ", result.stdout, re.MULTILINE)) > 90
    assert "runtime error" not in result.stderr  # UBSan reports


SANITIZED_RUN = textwrap.dedent(
    """
    import sys
    import numpy as np
    sys.path.insert(0, {tests!r})
    from onnx_graphs import ort_session, region_conv_node_model

    rng = np.random.default_rng(0)
    outputs = {{}}
    cases = [  # (x shape, R, C_out, kernel, strides, pads, dilations)
        ((2, 3, 9, 11), 4, 5, (3, 3), (2, 1), (1, 1), (1, 2)),
        ((1, 4, 16, 16), 8, 8, (5, 5), (1, 1), (2, 2), (1, 1)),
        ((3, 2, 7, 5), 3, 3, (1, 3), (1, 2), (0, 1), (1, 1)),
        ((1, 5, 40, 37), 6, 7, (3, 3), (1, 1), (1, 1), (1, 1)),
    ]
    for i, (xs, r, k, (kh, kw), st, pd, dl) in enumerate(cases):
        ho = (xs[2] + 2 * pd[0] - dl[0] * (kh - 1) - 1) // st[0] + 1
        wo = (xs[3] + 2 * pd[1] - dl[1] * (kw - 1) - 1) // st[1] + 1
        x = rng.standard_normal(xs, dtype=np.float32)
        f = rng.standard_normal((xs[0], r, k, xs[1], kh, kw), dtype=np.float32)
        g = rng.standard_normal((xs[0], r, ho, wo), dtype=np.float32)
        g[0, r - 1, 0, :] = np.nan
        sess = ort_session(region_conv_node_model(strides=st, pads=(*pd, *pd), dilations=dl), {library!r})
        outputs[f"y{{i}}"] = sess.run(None, {{"X": x, "filters": f, "guide": g}})[0]
        outputs[f"x{{i}}"], outputs[f"f{{i}}"], outputs[f"g{{i}}"] = x, f, g
        for bad in ({{"guide": g[:, :, :-1]}}, {{"filters": f[:, :, :, :0]}}, {{"X": x[:, :1]}}):
            feeds = {{"X": x, "filters": f, "guide": g, **bad}}
            try:
                sess.run(None, feeds)
            except Exception:
                pass
            else:
                raise SystemExit("no error for " + str(list(bad)))
    # ONNX Runtime's NCHWc layout (issue 24): a routed mixture with X and Y blocked against the
    # same node in NCHW, both under the sanitizers; the zoo's 24 channels, no multiple of 16.
    from onnx_graphs import blocked_mixture_feeds, blocked_mixture_node_model, from_blocked, to_blocked

    for n, c, hw, block in ((1, 24, 28, 16), (2, 20, 9, 8)):
        feeds = blocked_mixture_feeds(n, c, c, hw, hw, 8, 8)
        want = ort_session(blocked_mixture_node_model(0, 0), {library!r}).run(None, feeds)[0]
        sess = ort_session(blocked_mixture_node_model(block, block), {library!r})
        got = sess.run(None, dict(feeds, X=to_blocked(feeds["X"], block)))[0]
        got, padding = from_blocked(got, c, block)
        if padding.any() or not np.allclose(got, want, rtol=1e-5, atol=1e-5):
            raise SystemExit(f"blocked node differs from the NCHW node at n={{n}} c={{c}} block={{block}}")
    np.savez({out!r}, **outputs)
    print("done")
    """
)


def test_ort_library_under_sanitizers(tmp_path):
    build = tmp_path / "build"
    _build(build, "ON", "drconv_onnxruntime")
    out = tmp_path / "outputs.npz"
    script = SANITIZED_RUN.format(
        tests=str(ROOT / "tests"), library=str(build / "libdrconv_onnxruntime.so"), out=str(out)
    )
    gcc = shutil.which("g++") or "g++"
    preload = [
        subprocess.run([gcc, f"-print-file-name={lib}"], capture_output=True, text=True).stdout.strip()
        for lib in ("libasan.so", "libstdc++.so.6")
    ]  # libstdc++ too: ASan must see the real __cxa_throw
    env = {
        **os.environ,
        "LD_PRELOAD": " ".join(preload),
        "ASAN_OPTIONS": "detect_leaks=0:halt_on_error=1",
        "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1",
    }
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    assert "AddressSanitizer" not in result.stderr and "runtime error" not in result.stderr
    assert result.stdout.strip().endswith("done")
    data = np.load(out)
    for i in range(4):
        x, f, g = (torch.from_numpy(data[f"{k}{i}"]) for k in "xfg")
        st, pd, dl = [
            ((2, 1), (1, 1), (1, 2)),
            ((1, 1), (2, 2), (1, 1)),
            ((1, 2), (0, 1), (1, 1)),
            ((1, 1), (1, 1), (1, 1)),
        ][i]
        expected = region_conv(x, f, g, st, pd, dl).numpy()
        np.testing.assert_allclose(data[f"y{i}"], expected, atol=1e-4, rtol=1e-4)
