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


def test_cpu_kernel_isa_names_this_cpus_variant():
    assert ops.cpu_kernel_isa() in {"avx512", "avx2", "baseline"}


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
    # The C++ CPU kernel's own checks, reached without the Python wrapper.
    with pytest.raises(ValueError, match="guide"):
        torch.ops.drconv.region_conv(x, f, g[..., :5], [1, 1], [1, 1], [1, 1])
    with pytest.raises(ValueError, match="need stride >= 1"):
        torch.ops.drconv.region_conv(x, f, g, [0, 1], [1, 1], [1, 1])
    with pytest.raises(ValueError, match="floating point"):
        torch.ops.drconv.region_conv(x.long(), f.long(), g.long(), [1, 1], [1, 1], [1, 1])
    # The Python kernel (fake tensors, other devices) applies the same rules.
    mode = torch._subclasses.FakeTensorMode()
    fake = [mode.from_tensor(t) for t in (x, f, g[..., :5])]
    with pytest.raises(ValueError, match="guide spatial size"), mode:
        torch.ops.drconv.region_conv(*fake, [1, 1], [1, 1], [1, 1])


def test_the_cpu_kernel_and_autograd_are_cpp_registrations():
    # TORCH_LIBRARY_IMPL in drconv/csrc/region_conv_torch.cpp: no Python kernel on the CPU path.
    table = torch._C._dispatch_dump_table("drconv::region_conv")
    rows = {line.split(":")[0]: line for line in table.splitlines()}
    for key in ("CPU", "AutogradCPU"):
        assert "region_conv_torch.cpp" in rows[key], rows.get(key)


def test_the_profiler_sees_the_op():
    g = torch.Generator().manual_seed(5)
    x, filters = torch.randn(2, 6, 11, 9, generator=g), torch.randn(2, 3, 5, 6, 3, 3, generator=g)
    guide = torch.randn(2, 3, 11, 9, generator=g)
    with torch.no_grad(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        drconv.region_conv(x, filters, guide)
    assert "drconv::region_conv" in [event.name for event in prof.events()]


def test_float16_runs_in_float32_on_the_cpu():
    x, f, g, *_ = random_case(1, 4, 5, 9, 9, 3, 3, 1, 1, dtype=torch.float32)
    x, f, g = (t.half() for t in (x, f, g))
    want = drconv.region_conv(x.float(), f.float(), g.float()).half()
    torch.testing.assert_close(drconv.region_conv(x, f, g), want, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
@pytest.mark.parametrize("kernel", [1, 3])
def test_filters_with_ihwo_memory_are_read_in_place(dtype, kernel):
    # A permuted view of [N, R, C_in, kh, kw, C_out] memory, as MixtureDRConv2d hands over in
    # inference: the kernel reads it as IHWO instead of copying it to OIHW. Same sums, same order.
    x, f, g, *_ = random_case(2, 5, 7, 9, 8, 4, kernel, 1, 1, dtype=torch.float32)
    x, f, g = (t.to(dtype) for t in (x, f, g))
    ihwo = f.permute(0, 1, 3, 4, 5, 2).contiguous().permute(0, 1, 5, 2, 3, 4)
    assert not ihwo.is_contiguous()
    torch.testing.assert_close(drconv.region_conv(x, ihwo, g), drconv.region_conv(x, f, g), rtol=0, atol=0)


def test_filters_in_any_other_memory_order_are_copied():
    x, f, g, *_ = random_case(1, 4, 6, 8, 8, 3, 3, 1, 1, dtype=torch.float32)
    odd = f.transpose(4, 5).contiguous().transpose(4, 5)  # kw before kh: neither OIHW nor IHWO
    torch.testing.assert_close(drconv.region_conv(x, odd, g), drconv.region_conv(x, f, g), rtol=0, atol=0)


@pytest.mark.parametrize("name", ["stride", "padding", "dilation"])
def test_ints_beyond_int64_are_value_errors(name):
    x, filters, guide = torch.randn(1, 2, 5, 5), torch.randn(1, 2, 3, 2, 3, 3), torch.randn(1, 2, 5, 5)
    for value in (2**64, (1, 2**63), -(2**64)):
        with pytest.raises(ValueError, match=f"{name} -?\\d+ does not fit in int64"):
            ops.region_conv(x, filters, guide, **{name: value})
