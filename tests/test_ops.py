"""region_conv against the naive oracle, its registration as one op, and its error contract."""

import pytest
import torch
import torch.nn.functional as F
from conftest import random_case
from reference import naive_region_conv

import drconv
from drconv import _torch_kernels, ops
from drconv._geometry import check_inputs

# (N, C_in, C_out, H, W, R, kernel, stride, dilation, padding)
CASES = [
    (1, 3, 4, 8, 8, 1, 3, 1, 1, None),
    (2, 4, 5, 9, 7, 8, 3, 1, 1, None),
    (1, 5, 3, 11, 13, 8, 5, 1, 1, None),
    (3, 2, 6, 10, 10, 4, 1, 1, 1, None),
    (2, 3, 3, 15, 9, 3, 3, 2, 1, None),
    (1, 4, 4, 16, 16, 8, 3, 2, 2, None),
    (2, 6, 2, 13, 17, 2, 5, 2, 1, None),
    (1, 3, 3, 12, 12, 5, 3, 1, 3, None),
    (2, 2, 4, 9, 9, 8, 3, 3, 1, 0),
    (1, 3, 2, 10, 6, 6, (3, 1), (1, 2), (2, 1), None),
    (1, 4, 4, 7, 7, 1, 3, 1, 1, 0),
    (2, 3, 5, 8, 12, 7, (1, 3), 1, (1, 2), (0, 3)),
    (1, 1, 1, 5, 5, 8, 3, 1, 1, 2),
    (4, 3, 2, 6, 6, 3, 3, 1, 1, None),
    (1, 8, 8, 21, 19, 8, 3, 1, 1, None),
    (1, 2, 3, 33, 5, 2, 3, 2, 2, (1, 0)),
    (2, 5, 5, 14, 14, 4, 5, 3, 1, 1),
    (1, 3, 3, 300, 4, 2, 3, 1, 1, None),  # more pixels per region than one kernel tile
    (1, 4, 2, 6, 9, 16, 3, 1, 1, None),  # more regions than some sizes
    (2, 3, 3, 10, 10, 8, (5, 3), (2, 1), (1, 2), None),
    (1, 2, 2, 4, 4, 3, 3, 1, 1, 3),  # padding larger than half the input
    (3, 1, 4, 8, 8, 8, 1, 2, 1, 0),
]


@pytest.mark.parametrize("case", CASES, ids=[str(i) for i in range(len(CASES))])
def test_matches_naive_reference(case):
    n, c, k, h, w, regions, kernel, stride, dilation, padding = case
    x, f, g, s, p, d = random_case(n, c, k, h, w, regions, kernel, stride, dilation, padding, seed=len(str(case)))
    y = drconv.region_conv(x, f, g, stride=stride, padding=padding, dilation=dilation)
    want = naive_region_conv(x, f, g, s, p, d)
    assert y.shape == want.shape
    torch.testing.assert_close(y, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("case", CASES[:8], ids=[str(i) for i in range(8)])
def test_native_and_torch_paths_agree_float32(case):
    n, c, k, h, w, regions, kernel, stride, dilation, padding = case
    x, f, g, s, p, d = random_case(n, c, k, h, w, regions, kernel, stride, dilation, padding, dtype=torch.float32)
    geo = check_inputs(x, f, g, s, p, d)
    torch.testing.assert_close(
        drconv.region_conv(x, f, g, s, p, d), _torch_kernels.forward(x, f, g, geo), rtol=1e-5, atol=1e-5
    )


def test_native_kernel_is_built():
    # `make setup` compiles drconv._C; without it the CPU forward silently runs ~2x slower.
    assert ops.native_cpu_kernel_available()


def test_first_maximum_wins_ties():
    x, f, *_ = random_case(1, 2, 3, 6, 6, 4, 3, 1, 1)
    guide = torch.zeros(1, 4, 6, 6, dtype=torch.float64)  # all tied: region 0 everywhere
    guide[:, 2, :3] = 1.0
    guide[:, 3, :3] = 1.0  # tie between 2 and 3 in the top half: region 2
    y = drconv.region_conv(x, f, guide)
    top = F.conv2d(x, f[0, 2], padding=1)[..., :3, :]
    bottom = F.conv2d(x, f[0, 0], padding=1)[..., 3:, :]
    torch.testing.assert_close(y, torch.cat([top, bottom], dim=2))


def test_nan_guide_selects_a_valid_region():
    x, f, g, s, p, d = random_case(2, 3, 4, 9, 9, 5, 3, 1, 1)
    g[0, 1, :4] = float("nan")
    g[1, :, 2:5] = float("nan")
    region = _torch_kernels.region_index(g)
    assert int(region.min()) >= 0 and int(region.max()) < 5
    y = drconv.region_conv(x, f, g)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y, naive_region_conv(x, f, g, s, p, d))


def test_float16_cpu_close_to_float32():
    x, f, g, *_ = random_case(1, 4, 4, 10, 10, 3, 3, 1, 1, dtype=torch.float32)
    want = drconv.region_conv(x, f, g)
    got = drconv.region_conv(x.half(), f.half(), g.half())
    assert got.dtype == torch.float16
    torch.testing.assert_close(got.float(), want, rtol=2e-2, atol=5e-2)


def test_empty_batch_and_zero_out_channels():
    x, f, g, *_ = random_case(2, 3, 4, 8, 8, 2, 3, 1, 1)
    assert drconv.region_conv(x[:0], f[:0], g[:0]).shape == (0, 4, 8, 8)
    assert drconv.region_conv(x, f[:, :, :0], g).shape == (2, 0, 8, 8)


def test_torch_export_sees_one_node():
    class Layer(torch.nn.Module):
        def forward(self, x, f, g):
            return drconv.region_conv(x, f, g, stride=2)

    x, f, g, *_ = random_case(2, 3, 4, 9, 9, 4, 3, 2, 1, dtype=torch.float32)
    program = torch.export.export(Layer(), (x, f, g))
    targets = [node.target for node in program.graph.nodes if node.op == "call_function"]
    assert targets == [torch.ops.drconv.region_conv.default]
    torch.testing.assert_close(program.module()(x, f, g), Layer()(x, f, g))


def test_opcheck_registration():
    x, f, g, s, p, d = random_case(2, 3, 4, 7, 7, 3, 3, 1, 1)
    x.requires_grad_()
    f.requires_grad_()
    g.requires_grad_()
    torch.library.opcheck(torch.ops.drconv.region_conv.default, (x, f, g, list(s), list(p), list(d)))


def test_torch_compile_runs_the_op():
    x, f, g, *_ = random_case(1, 3, 4, 8, 8, 4, 3, 1, 1, dtype=torch.float32)
    compiled = torch.compile(lambda a, b, c: drconv.region_conv(a, b, c) * 2, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(x, f, g), drconv.region_conv(x, f, g) * 2)


@pytest.mark.gpu
def test_cuda_matches_cpu():
    x, f, g, *_ = random_case(2, 4, 5, 12, 12, 8, 3, 1, 1, dtype=torch.float32)
    got = drconv.region_conv(x.cuda(), f.cuda(), g.cuda()).cpu()
    torch.testing.assert_close(got, drconv.region_conv(x, f, g), rtol=1e-4, atol=1e-4)


def _case(**changes):
    x, f, g, *_ = random_case(2, 3, 4, 8, 8, 5, 3, 1, 1, dtype=torch.float32)
    args = {"x": x, "filters": f, "guide": g}
    kwargs = {}
    for key, value in changes.items():
        (args if key in args else kwargs)[key] = value(args[key]) if callable(value) else value
    return args, kwargs


BAD = {
    "x rank": ({"x": lambda t: t[0]}, "x must be 4-D"),
    "filters rank": ({"filters": lambda t: t[0]}, "filters must be 6-D"),
    "guide rank": ({"guide": lambda t: t[0]}, "guide must be 4-D"),
    "C_in mismatch": ({"x": lambda t: torch.cat([t, t], 1)}, "C_in"),
    "N mismatch x": ({"x": lambda t: t[:1]}, "batch size mismatch"),
    "N mismatch guide": ({"guide": lambda t: t[:1]}, "batch size mismatch"),
    "R mismatch": ({"guide": lambda t: t[:, :3]}, "guide R=3"),
    "guide size": ({"guide": lambda t: t[..., :7, :]}, "guide spatial size 7x8"),
    "guide size for stride": ({"stride": 2}, "guide spatial size 8x8"),
    "mixed dtypes": ({"guide": lambda t: t.double()}, "one dtype"),
    "integer dtype": (
        {"x": lambda t: t.long(), "filters": lambda t: t.long(), "guide": lambda t: t.long()},
        "floating point",
    ),
    "stride 0": ({"stride": 0}, "stride must be >= 1"),
    "stride pair": ({"stride": (1, 0)}, "stride must be >= 1"),
    "dilation 0": ({"dilation": 0}, "dilation must be >= 1"),
    "negative padding": ({"padding": -1}, "padding must be >= 0"),
    "padding triple": ({"padding": (1, 1, 1)}, "padding must be an int or an"),
    "stride float": ({"stride": 1.5}, "stride must be an int"),
    "too small": ({"x": lambda t: t[..., :1, :1], "padding": 0}, "too small"),
    "zero regions": ({"filters": lambda t: t[:, :0], "guide": lambda t: t[:, :0]}, "at least one region"),
    "not a tensor": ({"guide": lambda t: t.numpy()}, "guide must be a torch.Tensor"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_raises_value_error(name):
    changes, message = BAD[name]
    args, kwargs = _case(**changes)
    with pytest.raises(ValueError, match=message):
        drconv.region_conv(args["x"], args["filters"], args["guide"], **kwargs)


def test_direct_op_call_is_validated_too():
    x, f, g, *_ = random_case(1, 3, 4, 8, 8, 2, 3, 1, 1, dtype=torch.float32)
    with pytest.raises(ValueError, match="guide spatial size"):
        torch.ops.drconv.region_conv(x, f, g[..., :5], [1, 1], [1, 1], [1, 1])
    from drconv import _C

    with pytest.raises(ValueError, match="guide"):
        _C.region_conv_forward(x, f, g[..., :5], [1, 1], [1, 1], [1, 1])
    with pytest.raises(ValueError, match="strides must be >= 1"):
        _C.region_conv_forward(x, f, g, [0, 1], [1, 1], [1, 1])


def _fast_path_case():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 6, 11, 9, generator=g)
    filters = torch.randn(2, 3, 5, 6, 3, 3, generator=g)
    guide = torch.randn(2, 3, 11, 9, generator=g)
    return x, filters, guide


def test_eager_inference_skips_the_dispatcher(monkeypatch):
    x, filters, guide = _fast_path_case()
    expected = torch.ops.drconv.region_conv(x, filters, guide, [1, 1], [1, 1], [1, 1])

    def dispatcher_called(*args, **kwargs):
        raise AssertionError("the dispatcher was used in plain eager inference")

    monkeypatch.setattr(torch.ops.drconv, "region_conv", dispatcher_called)
    with torch.no_grad():
        got = drconv.region_conv(x, filters, guide)
    torch.testing.assert_close(got, expected, atol=0, rtol=0)


def test_the_profiler_sees_the_kernel_on_the_fast_path():
    x, filters, guide = _fast_path_case()
    with torch.no_grad(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        drconv.region_conv(x, filters, guide)
    names = [event.name for event in prof.events()]
    assert "drconv::region_conv_cpu_kernel" in names
    assert "drconv::region_conv" not in names  # the fast path: no dispatcher event


def test_whatever_must_see_the_op_still_does():
    from torch.utils._python_dispatch import TorchDispatchMode

    class Record(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.append(str(func))
            return func(*args, **(kwargs or {}))

    x, filters, guide = _fast_path_case()
    with torch.no_grad(), Record() as mode:
        drconv.region_conv(x, filters, guide)
    assert "drconv.region_conv.default" in mode.ops
    # Autograd: the op (and its backward) runs when an input needs a gradient.
    x.requires_grad_(True)
    y = drconv.region_conv(x, filters, guide)
    assert y.grad_fn is not None
    y.sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape
