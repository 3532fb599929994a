"""drconv.convert: DRConv-PyTorch's DRConv2d becomes drconv.DRConv2d, same outputs; checkpoints of user models."""

import copy
import sys
from pathlib import Path

import onnx
import pytest
import torch
from drconv_pytorch_double import DRConv2d as TheirDRConv2d
from drconv_pytorch_double import tiny_net
from torch import nn
from typer.testing import CliRunner

from drconv import DRConv2d, convert, models
from drconv.cli import app
from drconv.errors import DrconvError
from drconv.runtime.ort import session

TESTS = Path(__file__).parent
FACTORY = "drconv_pytorch_double:tiny_net"
runner = CliRunner()

# (in, out, kernel, R, kwargs, input H x W)
CASES = {
    "default-no-padding": (3, 5, 3, 4, {}, (11, 9)),
    "padding-1": (3, 5, 3, 4, {"padding": 1}, (10, 10)),
    "stride-2": (4, 3, 3, 4, {"stride": 2}, (13, 12)),
    "stride-2-padding-1": (4, 3, 3, 2, {"stride": 2, "padding": 1}, (12, 12)),
    "kernel-1": (6, 4, 1, 4, {}, (7, 8)),
    "kernel-5-padding-2": (2, 3, 5, 2, {"padding": 2}, (9, 9)),
    "R-1": (3, 4, 3, 1, {"padding": 1}, (8, 8)),
    "R-2": (3, 4, 3, 2, {"padding": 1}, (8, 8)),
    "R-8": (3, 4, 3, 8, {"padding": 1}, (8, 8)),
    "dilation-2": (3, 4, 3, 4, {"dilation": 2}, (12, 11)),
    "dilation-2-padding-2": (3, 4, 3, 4, {"dilation": 2, "padding": 2}, (10, 10)),
    "pairs": (3, 4, 3, 4, {"stride": (2, 1), "padding": (1, 0), "dilation": [1, 2]}, (10, 10)),
    "padding-same": (3, 4, 3, 4, {"padding": "same"}, (9, 9)),
    "padding-same-dilation-2": (3, 4, 3, 4, {"padding": "same", "dilation": 2}, (9, 9)),
    "padding-valid": (3, 4, 3, 4, {"padding": "valid"}, (9, 9)),
}


def their_layer(c_in, c_out, k, regions, kwargs, dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    return TheirDRConv2d(c_in, c_out, k, region_num=regions, **kwargs).to(dtype)


def assert_same_function(theirs: nn.Module, ours: nn.Module, x: torch.Tensor) -> None:
    tol = {"atol": 1e-10, "rtol": 1e-10} if x.dtype == torch.float64 else {"atol": 1e-5, "rtol": 1e-5}
    expected = theirs(x)
    torch.testing.assert_close(ours(x), expected, **tol)
    # The region choice matters: a wrong one would move outputs by far more than the tolerance.
    assert expected.abs().max() > 100 * tol["atol"]


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_same_outputs(case, dtype, training):
    c_in, c_out, k, regions, kwargs, (h, w) = case
    theirs = their_layer(c_in, c_out, k, regions, kwargs, dtype).train(training)
    model = nn.Sequential(copy.deepcopy(theirs))
    converted, names = convert(model)
    assert converted is model and names == ["0"]
    ours = model[0]
    assert isinstance(ours, DRConv2d) and ours.training is training
    assert (ours.in_channels, ours.out_channels, ours.region_num, ours.kernel_size) == (c_in, c_out, regions, (k, k))
    assert all(p.dtype == dtype for p in ours.parameters())
    assert_same_function(theirs, ours, torch.randn(3, c_in, h, w, dtype=dtype))


@pytest.mark.parametrize("case", ["default-no-padding", "stride-2-padding-1", "R-8", "pairs"])
def test_same_gradients_in_training(case):
    c_in, c_out, k, regions, kwargs, (h, w) = CASES[case]
    theirs = their_layer(c_in, c_out, k, regions, kwargs, torch.float64).train()
    ours, _ = convert(copy.deepcopy(theirs))
    x = torch.randn(2, c_in, h, w, dtype=torch.float64)
    grad_y = torch.randn_like(theirs(x))
    x_theirs, x_ours = x.clone().requires_grad_(), x.clone().requires_grad_()
    theirs(x_theirs).backward(grad_y)
    ours(x_ours).backward(grad_y)
    torch.testing.assert_close(x_ours.grad, x_theirs.grad)
    pairs = {"conv_guide": "guide", "conv_kernel.1": "filter_generator.1", "conv_kernel.3": "filter_generator.3"}
    ours_params = dict(ours.named_parameters())
    for name, param in theirs.named_parameters():
        prefix, _, leaf = name.rpartition(".")
        torch.testing.assert_close(ours_params[f"{pairs[prefix]}.{leaf}"].grad, param.grad, msg=name)
    assert theirs.conv_guide.weight.grad.abs().max() > 0  # the guide's straight-through gradient is compared too


def test_names_idempotent_and_model_intact():
    model = tiny_net().eval()
    x = torch.randn(2, 3, 20, 20)
    expected = model(x)
    plain = model[2]
    model, names = convert(model)
    assert names == ["0", "3"]
    assert [type(m) for m in model] == [DRConv2d, nn.ReLU, nn.Conv2d, DRConv2d]
    assert model[2] is plain  # everything else is left as it was
    torch.testing.assert_close(model(x), expected, atol=1e-5, rtol=1e-5)
    again, none = convert(model)
    assert again is model and none == []
    assert [type(m) for m in model] == [DRConv2d, nn.ReLU, nn.Conv2d, DRConv2d]


def test_nested_and_shared_layers():
    shared = their_layer(4, 4, 3, 2, {"padding": 1})
    model = nn.Module()
    model.body = nn.ModuleList([nn.Sequential(shared, nn.ReLU()), shared])
    model.head = nn.ModuleDict({"out": their_layer(4, 2, 1, 2, {}, seed=1)})
    _, names = convert(model)
    assert names == ["body.0.0", "body.1", "head.out"]
    assert model.body[0][0] is model.body[1]  # still one layer, now drconv's
    assert isinstance(model.body[1], DRConv2d) and isinstance(model.head["out"], DRConv2d)


def test_model_is_the_layer():
    theirs = their_layer(3, 4, 3, 4, {"padding": 1}).eval()
    ours, names = convert(copy.deepcopy(theirs))
    assert isinstance(ours, DRConv2d) and names == [""]
    assert_same_function(theirs, ours, torch.randn(2, 3, 9, 9))


def test_keeps_flags_and_rng():
    theirs = their_layer(3, 4, 3, 2, {}, torch.float64)
    theirs.conv_guide.requires_grad_(False)
    state = torch.random.get_rng_state()
    ours, _ = convert(theirs)
    assert torch.equal(torch.random.get_rng_state(), state)  # conversion draws no random numbers
    assert not ours.guide.weight.requires_grad and not ours.guide.bias.requires_grad
    assert all(p.requires_grad for p in ours.filter_generator.parameters())
    assert all(p.device.type == "cpu" and p.dtype == torch.float64 for p in ours.parameters())
    # Copies, not views: training the converted model leaves the original's weights alone.
    assert ours.filter_generator[3].weight.data_ptr() != theirs.conv_kernel[3].weight.data_ptr()
    torch.testing.assert_close(ours.filter_generator[3].weight, theirs.conv_kernel[3].weight, atol=0, rtol=0)


@pytest.mark.parametrize(
    ("kernel", "kwargs", "reason"),
    [
        (3, {"padding_mode": "reflect"}, "padding_mode='reflect' not supported"),
        (3, {"bias": False}, "bias=False not supported"),
        (3, {"groups": 1}, "groups=1 not supported"),
        (2, {"padding": "same"}, "pads one side more than the other"),
        (2, {"padding": "same", "dilation": 3}, "pads one side more than the other"),
        (3, {"padding": "full"}, "padding='full' is not 'valid', 'same' or a number"),
        (3, {"padding": -1}, "padding (-1, -1) must be >= 0"),
        (3, {"stride": 1.5}, "stride=1.5 is not an int or a pair of ints"),
    ],
)
def test_unsupported_kwargs_are_errors(kernel, kwargs, reason):
    try:
        layer = their_layer(2, 2, kernel, 2, kwargs)
    except (ValueError, TypeError, RuntimeError):
        # nn.Conv2d itself refuses these; a layer could still carry them in `kwargs`
        layer = their_layer(2, 2, kernel, 2, {})
        layer.kwargs = kwargs
    model = nn.Sequential(nn.Sequential(nn.Identity(), layer))
    with pytest.raises(DrconvError, match=r"cannot convert DRConv-PyTorch DRConv2d '0\.1' exactly") as info:
        convert(model)
    assert reason in str(info.value)
    assert model[0][1] is layer  # nothing was swapped


def test_an_error_swaps_nothing():
    bad = their_layer(2, 2, 3, 2, {"padding_mode": "reflect"})
    model = nn.Sequential(their_layer(2, 2, 3, 2, {}), bad)
    with pytest.raises(DrconvError, match="'1'"):
        convert(model)
    assert isinstance(model[0], TheirDRConv2d)


def test_the_model_itself_is_named():
    with pytest.raises(DrconvError, match=r"\(the model itself\).*padding_mode"):
        convert(their_layer(2, 2, 3, 2, {"padding_mode": "circular"}))


def _grow_guide(layer):
    layer.conv_guide = nn.Conv2d(2, 3, 3)


def _bad_last(layer):
    layer.conv_kernel[3] = nn.Conv2d(4, 7, 1, groups=1)


def _bad_pool(layer):
    layer.conv_kernel[0] = nn.AdaptiveAvgPool2d(2)


def _no_sigmoid(layer):
    layer.conv_kernel[2] = nn.ReLU()


def _guide_without_bias(layer):
    layer.conv_guide = nn.Conv2d(2, 2, 3, bias=False)


def _extra_parameter(layer):
    layer.scale = nn.Parameter(torch.ones(1))


def _region_num_float(layer):
    layer.region_num = 2.0


def _guide_stride(layer):
    layer.conv_guide = nn.Conv2d(2, 2, 3, stride=2)


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (_grow_guide, "conv_guide has 3 output channels, region_num is 2"),
        (_bad_last, "conv_kernel.3 takes 4 channels in 1 groups, expected 4 in 2"),
        (_bad_pool, "conv_kernel pools to (2, 2), conv_guide's kernel is (3, 3)"),
        (_no_sigmoid, "conv_kernel is (AdaptiveAvgPool2d, Conv2d, ReLU, Conv2d)"),
        (_guide_without_bias, "conv_guide has no bias"),
        (_extra_parameter, "holds tensors a DRConv-PyTorch layer does not: scale"),
        (_region_num_float, "region_num=2.0 is not a positive int"),
        (_guide_stride, "but kwargs say"),
    ],
)
def test_mismatched_layers_are_errors(edit, reason):
    layer = their_layer(2, 2, 3, 2, {})
    edit(layer)
    with pytest.raises(DrconvError, match=r"'features\.0'") as info:
        convert(_holder(layer))
    assert reason in str(info.value)


def _holder(layer):
    model = nn.Module()
    model.features = nn.Sequential(layer)
    return model


def test_conv_kernel_out_channels_must_fit():
    layer = their_layer(2, 3, 3, 2, {})
    layer.conv_kernel[3] = nn.Conv2d(4, 10, 1, groups=2)  # not a multiple of R*C_in = 4
    with pytest.raises(DrconvError, match="not a multiple of R\\*C_in = 4"):
        convert(_holder(layer))


def test_unrelated_modules_are_left_alone():
    model = nn.Sequential(nn.Conv2d(3, 3, 3), DRConv2d(3, 3, region_num=2))
    model[0].conv_kernel = nn.Sequential()  # some attributes of the layer, not all of them
    _, names = convert(model)
    assert names == []


def test_load_model_converts_factories_only():
    lines = []
    model = models.load_model(FACTORY, on_convert=lines.append)
    assert not model.training
    assert lines == ["converted 2 DRConv-PyTorch DRConv2d layers to drconv.DRConv2d: 0, 3"]
    torch.testing.assert_close(
        model(torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))),
        tiny_net().eval()(torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))),
        atol=1e-5,
        rtol=1e-5,
    )
    models.load_model("drconv-tiny", on_convert=lines.append)
    assert len(lines) == 1  # built-in models hold drconv's layers already


def test_converted_line_shortens_long_lists(tmp_path, monkeypatch):
    (tmp_path / "many_drconvs.py").write_text(
        "import torch\n"
        "from drconv_pytorch_double import DRConv2d\n"
        "def build():\n"
        "    return torch.nn.Sequential(*[DRConv2d(2, 2, 3, region_num=2, padding=1) for _ in range(6)])\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    lines = []
    models.load_model("many_drconvs:build", on_convert=lines.append)
    assert lines == ["converted 6 DRConv-PyTorch DRConv2d layers to drconv.DRConv2d: 0, 1, 2, 3 and 2 more"]


def test_factory_module_found_in_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "cwd_only_net.py").write_text("import torch\ndef build():\n    return torch.nn.Conv2d(3, 3, 1)\n")
    monkeypatch.chdir(tmp_path)
    # As a user's shell would have it: nothing on sys.path resolves to the working directory.
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p and Path(p).resolve() != tmp_path.resolve()])
    monkeypatch.delitem(sys.modules, "cwd_only_net", raising=False)
    assert isinstance(models.load_model("cwd_only_net:build"), nn.Conv2d)
    assert Path(sys.path[0]).resolve() == tmp_path.resolve()
    sys.modules.pop("cwd_only_net", None)  # its file goes with tmp_path


def _perturbed_double() -> nn.Module:
    model = tiny_net()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(-0.5).add_(0.01)
    return model.eval()


def test_checkpoint_loads_before_conversion(tmp_path):
    trained = _perturbed_double()
    path = tmp_path / "theirs.pt"
    torch.save(trained.state_dict(), path)  # DRConv-PyTorch key names: 0.conv_kernel.1.weight, ...
    assert "0.conv_guide.weight" in torch.load(path)
    model = models.load_model(FACTORY, path)
    x = torch.randn(2, 3, 24, 24)
    torch.testing.assert_close(model(x), trained(x), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(models.load_model(FACTORY)(x), trained(x), atol=1e-3)  # the weights did change


@pytest.mark.parametrize("wrap", ["module-prefix", "state_dict", "model", "state_dict-and-module-prefix"])
def test_wrapped_checkpoints_load(tmp_path, wrap):
    trained = _perturbed_double()
    state = trained.state_dict()
    if "module-prefix" in wrap:
        state = nn.DataParallel(trained).state_dict()
        assert all(key.startswith("module.") for key in state)
    if wrap.startswith("state_dict"):
        state = {"state_dict": state, "epoch": 90}
    elif wrap == "model":
        state = {"model": state, "optimizer": {"lr": 0.1}}
    path = tmp_path / "w.pt"
    torch.save(state, path)
    model = models.load_model(FACTORY, path)
    x = torch.randn(1, 3, 20, 20)
    torch.testing.assert_close(model(x), trained(x), atol=1e-5, rtol=1e-5)


def test_module_prefix_kept_where_the_model_has_it(tmp_path):
    trained = nn.DataParallel(_perturbed_double())
    path = tmp_path / "dp.pt"
    torch.save(trained.state_dict(), path)
    model = nn.DataParallel(tiny_net())
    models.load_checkpoint(model, path)
    torch.testing.assert_close(model.module[0].conv_guide.weight, trained.module[0].conv_guide.weight)


def test_wrong_keys_error_is_one_short_line(tmp_path):
    state = tiny_net().state_dict()
    state.pop("0.conv_guide.bias")
    state.pop("3.conv_guide.bias")
    state["2.weight"] = torch.zeros(8, 8, 1, 1)
    for i in range(5):
        state[f"extra.{i}"] = torch.zeros(1)
    path = tmp_path / "wrong.pt"
    torch.save(state, path)
    with pytest.raises(DrconvError) as info:
        models.load_model(FACTORY, path)
    message = str(info.value)
    assert "\n" not in message and len(message) < 400, message
    assert message.startswith(f"checkpoint {path}: does not fit the model: ")
    assert "2 missing keys (0.conv_guide.bias, 3.conv_guide.bias)" in message
    assert "5 unexpected keys (extra.0, extra.1, extra.2, ...)" in message
    assert "1 shape mismatch (2.weight [8, 8, 1, 1] vs model [8, 8, 3, 3])" in message
    assert "module." not in message


def test_partial_module_prefix_is_hinted(tmp_path):
    state = {f"module.{key}": value for key, value in tiny_net().state_dict().items()}
    state["epoch"] = torch.tensor(3)  # one key without the prefix: not stripped
    path = tmp_path / "mixed.pt"
    torch.save(state, path)
    with pytest.raises(DrconvError, match=r"keys carry a 'module\.' prefix \(DataParallel\)$"):
        models.load_model(FACTORY, path)


def _onnx_ops(path: Path) -> list[tuple[str, str]]:
    return [(node.domain, node.op_type) for node in onnx.load(str(path)).graph.node]


def test_cli_export_converts_and_verifies(tmp_path, monkeypatch):
    monkeypatch.chdir(TESTS)
    out = tmp_path / "tmp.onnx"
    args = ["export", "-o", str(out), "--model", FACTORY, "--input-shape", "1,3,32,32", "--verify"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "converted 2 DRConv-PyTorch DRConv2d layers to drconv.DRConv2d: 0, 3" in result.stderr
    assert "converted" not in result.stdout  # the note goes to stderr only
    assert "ok" in result.stdout and "FAIL" not in result.stdout
    assert _onnx_ops(out).count(("drconv", "RegionConv2d")) == 2


def test_cli_checkpoint_reaches_the_export(tmp_path, monkeypatch):
    monkeypatch.chdir(TESTS)
    trained = _perturbed_double()
    ckpt = tmp_path / "theirs.pt"
    torch.save({"state_dict": trained.state_dict()}, ckpt)
    out = tmp_path / "trained.onnx"
    args = ["export", "-o", str(out), "-m", FACTORY, "-c", str(ckpt), "--input-shape", "1,3,32,32", "--static"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    x = torch.randn(1, 3, 32, 32)
    (y,) = _run_onnx(out, x)
    torch.testing.assert_close(torch.from_numpy(y), trained(x), atol=1e-4, rtol=1e-4)


def _run_onnx(path: Path, x: torch.Tensor) -> list:
    sess = session(path)
    return sess.run(None, {sess.get_inputs()[0].name: x.numpy()})


def test_cli_wrong_checkpoint_is_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(TESTS)
    ckpt = tmp_path / "wrong.pt"
    torch.save({"conv.weight": torch.zeros(1)}, ckpt)
    result = runner.invoke(app, ["export", "-o", str(tmp_path / "x.onnx"), "-m", FACTORY, "-c", str(ckpt)])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "does not fit the model" in lines[0] and "1 unexpected key (conv.weight)" in lines[0]
    assert "Traceback" not in result.output
