"""The exports of the zoo and drconv-tiny give the outputs drconv's exports gave before the
exporter wrote the nodes directly: arrays saved from that export (tests/data/export_reference.py,
commit 7b65bb0), compared in PyTorch, ONNX Runtime and OpenVINO."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from drconv import contract
from drconv.export import to_onnx
from drconv.runtime import openvino, ort

DATA = Path(__file__).resolve().parent / "data"
sys.path.insert(0, str(DATA))
from export_reference import MODELS, checksum, reference_input, reference_model  # noqa: E402


@pytest.fixture(scope="module")
def saved():
    return np.load(DATA / "export_reference.npz")


@pytest.fixture(scope="module", params=MODELS)
def exported(request, tmp_path_factory, saved):
    name = request.param
    model, x = reference_model(name), reference_input(name)
    # The same model and input as when the arrays were saved: else a difference says nothing.
    assert checksum(model) == pytest.approx(float(saved[f"{name}/checksum"]), rel=1e-12)
    np.testing.assert_array_equal(x.numpy(), saved[f"{name}/input"])
    sample = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    path = to_onnx(model, sample, tmp_path_factory.mktemp("reference") / f"{name}.onnx")
    return name, model, x, path


def _close(got: np.ndarray, expected: np.ndarray) -> None:
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * scale)


def test_pytorch_gives_the_saved_outputs(exported, saved):
    name, model, x, _ = exported
    with torch.no_grad():
        _close(model(x).numpy(), saved[f"{name}/torch"])


def test_onnx_runtime_gives_the_saved_outputs(exported, saved):
    name, _, x, path = exported
    _close(ort.session(path, threads=2).run(None, {"input": x.numpy()})[0], saved[f"{name}/ort"])


def test_openvino_gives_the_saved_outputs(exported, saved):
    name, _, x, path = exported
    _close(openvino.compile(path, threads=2)([x.numpy()])[0], saved[f"{name}/openvino"])


def test_the_export_writes_the_nodes_directly(exported):
    name, _, _, path = exported
    proto = onnx.load(str(path))
    ops = [n.op_type for n in proto.graph.node]
    if name == "drconv-tiny":  # 3x3 DRConv2d layers: RegionConv2d nodes, filters from their generators
        assert ops.count(contract.REGION_CONV.name) == 3 and contract.MIXTURE.name not in ops
        return
    # Each MixtureDRConv2d is one routed node with its BatchNormalization and ReLU folded in:
    # nothing of the mixture, the routing or the epilogue is left in the graph.
    mixtures = [n for n in proto.graph.node if n.op_type == contract.MIXTURE.name]
    assert len(mixtures) == 32 and contract.REGION_CONV.name not in ops
    assert not {"Sigmoid", "MatMul", "BatchNormalization"} & set(ops)
    assert ops.count("Gemm") == 1 and ops.count("ReduceMean") <= 1  # the classifier's head only
    # routed mixtures: the lowest version that has them (not the latest: nothing else is used)
    assert contract.domain_version(proto) == contract.MIXTURE.input_since[contract.MixtureInput.ROUTING]
    for node in mixtures:
        assert node.input[contract.MixtureInput.COEFFICIENTS] == ""
        given = (contract.MixtureInput.BASIS, contract.MixtureInput.B, contract.MixtureInput.ROUTING)
        assert all(node.input[i] for i in (*given, contract.MixtureInput.ROUTING_BIAS))
