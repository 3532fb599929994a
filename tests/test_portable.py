"""The portable graph (standard ONNX ops) agrees with the op where values are not finite and in
float16: the first NaN of a guide wins (torch.argmax's rule), an Inf input stays Inf, and the
output keeps the input's dtype."""

import numpy as np
import onnxruntime as ort
import pytest
import torch

from drconv import region_conv
from drconv.export.onnx import region_conv_graph

GEOMETRIES = [((1, 1), (1, 1), (1, 1)), ((2, 1), (0, 2), (1, 2))]


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, 8, 7, generator=g)
    filters = torch.randn(2, 4, 5, 3, 3, 3, generator=g)
    return x, filters


def _guide(x, geometry, seed: int = 1):
    stride, padding, dilation = geometry
    h = (x.shape[2] + 2 * padding[0] - dilation[0] * 2 - 1) // stride[0] + 1
    w = (x.shape[3] + 2 * padding[1] - dilation[1] * 2 - 1) // stride[1] + 1
    return torch.randn(x.shape[0], 4, h, w, generator=torch.Generator().manual_seed(seed))


def _portable(x, filters, guide, geometry):
    proto = region_conv_graph(x, filters, guide, *geometry, mode="portable")
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    assert sess.get_outputs()[0].type == {torch.float32: "tensor(float)", torch.float16: "tensor(float16)"}[x.dtype]
    return sess.run(None, {"X": x.numpy(), "filters": filters.numpy(), "guide": guide.numpy()})[0]


def _same(got: np.ndarray, expected: np.ndarray, tol: float) -> None:
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_array_equal(np.isposinf(got), np.isposinf(expected))
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(expected))
    finite = np.isfinite(expected)
    np.testing.assert_allclose(got[finite], expected[finite], rtol=tol, atol=tol)


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_nan_and_inf_guides_pick_the_regions_torch_picks(geometry):
    x, filters = _inputs()
    guide = _guide(x, geometry)
    guide[0, 2, 1, 1] = float("nan")  # one NaN: it wins
    guide[0, 1, 2, 2] = guide[0, 3, 2, 2] = float("nan")  # two: the first wins
    guide[0, :, 0, 3] = float("nan")  # all NaN: region 0
    guide[1, 1, 0, 0] = float("inf")
    guide[1, :, 1, 0] = float("-inf")  # all -Inf: region 0
    guide[1, 3, 2, 1] = float("-inf")
    expected = region_conv(x, filters, guide, *geometry).numpy()
    _same(_portable(x, filters, guide, geometry), expected, 1e-4)


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_an_inf_input_stays_inf(geometry):
    x, filters = _inputs()
    filters = filters.abs()  # one sign, so that a sum of infinities is one infinity
    x[0, 1, 3, 3] = float("inf")
    x[1, 0, 5, 2] = float("-inf")
    guide = _guide(x, geometry)
    expected = region_conv(x, filters, guide, *geometry).numpy()
    assert np.isinf(expected).any() and not np.isnan(expected).any()
    _same(_portable(x, filters, guide, geometry), expected, 1e-4)


def test_float16_returns_float16():
    x, filters = _inputs()
    geometry = GEOMETRIES[0]
    guide = _guide(x, geometry)
    got = _portable(x.half(), filters.half(), guide.half(), geometry)
    assert got.dtype == np.float16
    expected = region_conv(x.half().float(), filters.half().float(), guide.half().float(), *geometry).numpy()
    np.testing.assert_allclose(got.astype(np.float32), expected, rtol=2e-2, atol=2e-2)
