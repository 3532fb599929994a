import sys
from pathlib import Path

import pytest
import torch

from drconv._geometry import conv_out_size

sys.path.insert(0, str(Path(__file__).parent))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="CUDA is not available on this machine (torch.cuda.is_available() is False)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def random_case(n, c, k, h, w, regions, kernel, stride, dilation, padding=None, dtype=torch.float64, seed=0):
    """Inputs for one region_conv call; guide sized to the output."""
    g = torch.Generator().manual_seed(seed)
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    dh, dw = (dilation, dilation) if isinstance(dilation, int) else dilation
    if padding is None:
        ph, pw = dh * (kh // 2), dw * (kw // 2)
    else:
        ph, pw = (padding, padding) if isinstance(padding, int) else padding
    ho, wo = conv_out_size(h, kh, sh, ph, dh), conv_out_size(w, kw, sw, pw, dw)
    x = torch.randn(n, c, h, w, generator=g, dtype=dtype)
    filters = torch.randn(n, regions, k, c, kh, kw, generator=g, dtype=dtype)
    guide = torch.randn(n, regions, ho, wo, generator=g, dtype=dtype)
    return x, filters, guide, (sh, sw), (ph, pw), (dh, dw)
