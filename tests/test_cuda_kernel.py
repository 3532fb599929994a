"""The shared CUDA kernel (what TensorRT and ONNX Runtime's CUDA provider run), on a GPU.

Built as a PyTorch extension (drconv.cuda_kernel) and compared with the CPU op. Marked
`gpu`: skipped, with the reason printed, where CUDA is absent.
"""

import pytest
import torch
from test_ort import LAYERS

from drconv import region_conv

pytestmark = pytest.mark.gpu


def _case(c_in, c_out, regions, k, stride, dilation, h, w, batch, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    pad = dilation * (k // 2)
    ho = (h + 2 * pad - dilation * (k - 1) - 1) // stride + 1
    wo = (w + 2 * pad - dilation * (k - 1) - 1) // stride + 1
    x = torch.randn(batch, c_in, h, w, generator=g)
    filters = torch.randn(batch, regions, c_out, c_in, k, k, generator=g) / (c_in * k * k) ** 0.5
    guide = torch.randn(batch, regions, ho, wo, generator=g)
    return x, filters, guide, (stride, stride), (pad, pad), (dilation, dilation)


@pytest.mark.parametrize("config", LAYERS[:12], ids=lambda c: "c{}k{}R{}k{}s{}d{}_{}x{}".format(*c))
@pytest.mark.parametrize("batch", [1, 3])
def test_float32_matches_cpu_op(config, batch):
    from drconv.cuda_kernel import region_conv_cuda

    x, f, g, s, p, d = _case(*config, batch=batch, dtype=torch.float32, seed=batch)
    expected = region_conv(x, f, g, s, p, d)
    got = region_conv_cuda(x.cuda(), f.cuda(), g.cuda(), s, p, d).cpu()
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("config", LAYERS[:12], ids=lambda c: "c{}k{}R{}k{}s{}d{}_{}x{}".format(*c))
def test_float16_matches_cpu_op(config):
    from drconv.cuda_kernel import region_conv_cuda

    x, f, g, s, p, d = _case(*config, batch=2, dtype=torch.float16, seed=7)
    x, f, g = x.half(), f.half(), g.half()
    # The reference sees the same float16-rounded inputs (and so the same regions), in float32.
    expected = region_conv(x.float(), f.float(), g.float(), s, p, d)
    got = region_conv_cuda(x.cuda(), f.cuda(), g.cuda(), s, p, d).float().cpu()
    torch.testing.assert_close(got, expected, atol=2e-2, rtol=1e-2)


def test_large_layer_and_nan_guide():
    from drconv.cuda_kernel import region_conv_cuda

    x, f, g, s, p, d = _case(64, 64, 8, 3, 1, 1, 56, 56, batch=8, dtype=torch.float32, seed=3)
    g[0, 3, 10, :] = float("nan")
    expected = region_conv(x, f, g, s, p, d)
    got = region_conv_cuda(x.cuda(), f.cuda(), g.cuda(), s, p, d).cpu()
    torch.testing.assert_close(got, expected, atol=1e-3, rtol=1e-3)


def test_bad_input_is_a_value_error():
    from drconv.cuda_kernel import region_conv_cuda

    x, f, g, s, p, d = _case(4, 4, 2, 3, 1, 1, 8, 8, batch=1, dtype=torch.float32, seed=0)
    with pytest.raises(ValueError, match="do not fit"):
        region_conv_cuda(x.cuda(), f.cuda(), g[:, :, :4].cuda(), s, p, d)
