"""The shared CUDA kernel (what TensorRT and ONNX Runtime's CUDA provider run), on a GPU.

Built as a PyTorch extension (drconv.cuda_kernel) and compared with the CPU op. Marked
`gpu`: skipped, with the reason printed, where CUDA is absent.
"""

import pytest
import torch
from test_ort import LAYERS

from drconv import region_conv
from drconv._geometry import conv_out_size

pytestmark = pytest.mark.gpu


def _case(c_in, c_out, regions, k, stride, dilation, h, w, batch, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    pad = dilation * (k // 2)
    ho, wo = (conv_out_size(size, k, stride, pad, dilation) for size in (h, w))
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
    with pytest.raises(ValueError, match="guide"):
        region_conv_cuda(x.cuda(), f.cuda(), g[:, :, :4].cuda(), s, p, d)


# Shapes past the small LAYERS: more than 32 regions (the kernel's region tables are
# scanned a warp at a time), more than one 64-channel tile, more than one 256-pixel block,
# one region holding every pixel, float16 on tensor cores with a ragged last tile.
@pytest.mark.parametrize(
    ("c_in", "c_out", "regions", "k", "h", "w", "batch", "guide_kind", "dtype"),
    [
        (16, 130, 40, 3, 37, 29, 3, "noise", torch.float32),
        (16, 130, 40, 3, 37, 29, 3, "noise", torch.float16),
        (8, 16, 4, 3, 40, 40, 2, "constant", torch.float32),
        (32, 72, 16, 1, 50, 47, 2, "smooth", torch.float16),
        (3, 64, 2, 7, 64, 64, 1, "smooth", torch.float32),
    ],
)
def test_bucketing_edges(c_in, c_out, regions, k, h, w, batch, guide_kind, dtype):
    from drconv.cuda_kernel import region_conv_cuda

    x, f, g, s, p, d = _case(c_in, c_out, regions, k, 1, 1, h, w, batch=batch, dtype=dtype, seed=regions)
    if guide_kind == "constant":
        g = torch.zeros_like(g)  # every pixel in region 0, the first maximum
    elif guide_kind == "smooth":
        g = torch.nn.functional.avg_pool2d(torch.nn.functional.pad(g, (4, 4, 4, 4), mode="replicate"), 9, 1)
    x, f, g = x.to(dtype), f.to(dtype), g.to(dtype)
    expected = region_conv(x.float(), f.float(), g.float(), s, p, d)
    got = region_conv_cuda(x.cuda(), f.cuda(), g.cuda(), s, p, d).float().cpu()
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(got, expected, atol=tol, rtol=tol)


def test_too_many_regions_is_a_value_error():
    from drconv.cuda_kernel import region_conv_cuda

    x = torch.randn(1, 1, 3, 3, device="cuda")
    f = torch.randn(1, 4097, 1, 1, 1, 1, device="cuda")
    g = torch.randn(1, 4097, 3, 3, device="cuda")
    with pytest.raises(ValueError, match="at most 4096 regions"):
        region_conv_cuda(x, f, g, (1, 1), (0, 0), (1, 1))


@pytest.mark.parametrize("regions", [1, 5, 40])
def test_bucketing_lists_every_pixel_once_by_region(regions):
    from drconv.cuda_kernel import bucket_cuda

    x, f, g, s, p, d = _case(3, 4, regions, 3, 1, 1, 23, 31, batch=2, dtype=torch.float32, seed=regions)
    counts, region, order = (t.cpu().long() for t in bucket_cuda(x.cuda(), f.cuda(), g.cuda(), s, p, d))
    expected_region = g.argmax(dim=1).flatten(1)
    assert torch.equal(region, expected_region)
    for n in range(2):
        assert torch.equal(counts[n], torch.bincount(expected_region[n], minlength=regions))
        assert torch.equal(order[n].sort().values, torch.arange(order.shape[1]))  # each pixel once
        listed = expected_region[n][order[n]]
        assert torch.equal(listed, listed.sort().values)  # region by region
