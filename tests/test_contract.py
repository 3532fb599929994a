"""The node contract: the Python and C++ tables agree, and every backend refuses what it does not implement."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx_graphs import _one_node_model, region_conv_node_model

from drconv import contract
from drconv.errors import DrconvError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cpp_table(tmp_path_factory) -> dict:
    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        pytest.fail("a C++ compiler is required to read the contract header (apt-get install g++)")
    program = tmp_path_factory.mktemp("contract") / "contract_table"
    subprocess.run(
        [compiler, "-std=c++17", "-Wall", "-Wextra", "-Werror", f"-I{ROOT / 'plugins' / 'common'}",
         str(ROOT / "plugins" / "tests" / "contract_table.cpp"), "-o", str(program)],
        check=True,
    )  # fmt: skip
    return json.loads(subprocess.run([str(program), "99"], capture_output=True, text=True, check=True).stdout)


def test_the_python_and_cpp_tables_agree(cpp_table):
    table = contract.table()
    nodes = [dict(node) for node in cpp_table["nodes"]]
    fewest = [node.pop("min_inputs") for node in nodes]
    assert {**{k: cpp_table[k] for k in table}, "nodes": nodes} == table
    for node, count in zip(contract.NODE_TYPES, fewest, strict=True):
        assert count == max(i + 1 for i, required in enumerate(node.required) if required)


def test_the_messages_agree(cpp_table):
    assert cpp_table["version_error"] == contract.version_error(99)
    assert f"versions {contract.FIRST_VERSION} to {contract.LATEST_VERSION}" in cpp_table["version_error"]
    assert cpp_table["both_error"] == contract.mixture_inputs_error(True, True, False)
    assert cpp_table["neither_error"] == contract.mixture_inputs_error(False, False, False)
    assert cpp_table["bias_error"] == contract.mixture_inputs_error(True, False, True)
    assert contract.mixture_inputs_error(True, False, False) is None
    assert contract.mixture_inputs_error(False, True, True) is None


def test_the_tables_say_what_each_version_added():
    assert sorted(contract.VERSIONS) == list(range(contract.FIRST_VERSION, contract.LATEST_VERSION + 1))
    for node in contract.NODE_TYPES:
        assert all(node.since <= s <= contract.LATEST_VERSION for s in node.input_since)
        assert node.name in contract.VERSIONS[node.since]
    assert contract.version_error(contract.LATEST_VERSION) is None
    assert contract.version_error(contract.FIRST_VERSION - 1) is not None


def _future_model(path: Path, version: int) -> Path:
    """A lone RegionConv2d (valid in every version) importing the drconv domain at `version`."""
    proto = region_conv_node_model(declare_shapes=((1, 3, 6, 6), (1, 2, 4, 3, 1, 1), (1, 2, 6, 6)))
    for opset in proto.opset_import:
        if opset.domain == contract.DOMAIN:
            opset.version = version
    onnx.save(proto, str(path))
    return path


BACKENDS = ["onnxruntime", "openvino", "tensorrt"]


def _load(backend: str, path: Path, tmp_path: Path):
    if backend == "onnxruntime":
        from drconv.runtime import ort

        return ort.session(path)
    if backend == "openvino":
        from drconv.runtime import openvino

        return openvino.compile(path)
    from drconv.runtime import trt

    # The version is checked before TensorRT is imported: this runs where TensorRT is missing too.
    return trt.build_engine(path, tmp_path / "m.engine", trt.BuildOptions())


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_backend_refuses_a_version_it_does_not_implement(backend, tmp_path):
    path = _future_model(tmp_path / "future.onnx", 99)
    with pytest.raises(DrconvError) as caught:
        _load(backend, path, tmp_path)
    assert str(caught.value) == f"{path}: {contract.version_error(99)}"


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_every_backend_runs_the_latest_version(backend, tmp_path):
    path = _future_model(tmp_path / "latest.onnx", contract.LATEST_VERSION)
    x, filters, guide = (np.random.default_rng(0).standard_normal(s, dtype=np.float32) for s in
                         ((1, 3, 6, 6), (1, 2, 4, 3, 1, 1), (1, 2, 6, 6)))  # fmt: skip
    if backend == "onnxruntime":
        y = _load(backend, path, tmp_path).run(None, {"X": x, "filters": filters, "guide": guide})[0]
    else:
        y = _load(backend, path, tmp_path)([x, filters, guide])[0]
    assert y.shape == (1, 4, 6, 6)


def test_a_model_with_drconv_nodes_and_no_import_is_refused(tmp_path):
    proto = region_conv_node_model()
    keep = [o for o in proto.opset_import if o.domain != contract.DOMAIN]
    del proto.opset_import[:]
    proto.opset_import.extend(keep)
    with pytest.raises(DrconvError, match="drconv nodes but no opset import for the drconv domain"):
        contract.check_versions(proto, "m.onnx")


def _both_inputs_model() -> onnx.ModelProto:
    names = ("X", "coefficients", "basis", "guide", "", "routing")
    ranks = {"X": 4, "coefficients": 3, "basis": 5, "guide": 4, "routing": 2}
    shapes = [[f"{n}{i}" for i in range(ranks[n])] if n else None for n in names]
    proto = _one_node_model(contract.MIXTURE.name, names, shapes, 4, (1, 1), (0, 0, 0, 0), (1, 1), {})
    kept = [i for i in proto.graph.input if i.name]
    del proto.graph.input[:]
    proto.graph.input.extend(kept)
    return proto


def test_every_backend_refuses_a_wrong_input_combination_with_one_message(tmp_path):
    from drconv.runtime import openvino, ort

    message = contract.mixture_inputs_error(True, True, False)
    path = tmp_path / "both.onnx"
    onnx.save(_both_inputs_model(), str(path))
    with pytest.raises(DrconvError) as caught:
        openvino.compile(path)
    assert message in str(caught.value)
    session = ort.session(path)  # ONNX Runtime checks inputs when the kernel runs
    rng = np.random.default_rng(1)
    feeds = {
        "X": rng.standard_normal((1, 3, 4, 4), dtype=np.float32),
        "coefficients": rng.standard_normal((1, 2, 2), dtype=np.float32),
        "basis": rng.standard_normal((2, 4, 3, 1, 1), dtype=np.float32),
        "guide": rng.standard_normal((1, 2, 4, 4), dtype=np.float32),
        "routing": rng.standard_normal((3, 4), dtype=np.float32),
    }
    with pytest.raises(Exception, match=message):
        session.run(None, feeds)


def test_the_docs_version_table_is_the_contracts():
    text = (ROOT / "docs" / "region_conv_op.md").read_text()
    rows = re.findall(r"^\| (\d+) \| (.+?) \|$", text, flags=re.MULTILINE)
    assert {int(v): what for v, what in rows} == contract.VERSIONS
