"""DRConv2d and the built-in model: forward, backward, learning, R=1, loading."""

import pytest
import torch
import torch.nn.functional as F

from drconv import DRConv2d, models
from drconv.errors import DrconvError


def test_drconv2d_shapes_and_backward():
    layer = DRConv2d(4, 6, kernel_size=3, region_num=5, stride=2)
    x = torch.randn(3, 4, 15, 11, requires_grad=True)
    y = layer(x)
    assert y.shape == (3, 6, 8, 6)
    y.square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, p in layer.named_parameters():
        assert p.grad is not None, name
    # The guide conv learns through the straight-through softmax.
    assert layer.guide.weight.grad.abs().sum() > 0


def test_r1_equals_ordinary_dynamic_conv():
    layer = DRConv2d(3, 5, kernel_size=3, region_num=1, dilation=2)
    x = torch.randn(2, 3, 10, 12)
    filters = layer.region_filters(x)
    want = torch.stack([F.conv2d(x[i : i + 1], filters[i, 0], padding=2, dilation=2)[0] for i in range(2)])
    torch.testing.assert_close(layer(x), want, rtol=1e-5, atol=1e-5)


def test_bad_module_arguments():
    with pytest.raises(ValueError, match="region_num"):
        DRConv2d(3, 3, region_num=0)
    with pytest.raises(ValueError, match="expects input"):
        DRConv2d(3, 3)(torch.randn(1, 4, 8, 8))


def test_short_training_run_loss_falls():
    torch.manual_seed(0)
    net = torch.nn.Sequential(DRConv2d(3, 8, region_num=4), torch.nn.ReLU(), DRConv2d(8, 2, region_num=4))
    x = torch.randn(8, 3, 12, 12)
    target = torch.sin(x[:, :2] * 2) + x[:, 1:3].roll(1, dims=-1)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = F.mse_loss(net(x), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses[::10]


def test_drconv_tiny():
    model = models.create("drconv-tiny")
    params = sum(p.numel() for p in model.parameters())
    assert 0.8e6 < params < 1.2e6
    assert sum(isinstance(m, DRConv2d) for m in model.modules()) >= 2
    model.eval()
    for shape in [(1, 3, 32, 32), (2, 3, 45, 67)]:
        assert model(torch.randn(shape)).shape == (shape[0], 1000)
    with pytest.raises(ValueError, match=">= 32"):
        model(torch.randn(1, 3, 31, 64))
    # Seeded: two instances are identical, so checkpoints and exports are reproducible.
    other = models.create("drconv-tiny").eval()
    x = torch.randn(1, 3, 40, 40)
    torch.testing.assert_close(model(x), other(x))


def test_load_model_with_checkpoint(tmp_path):
    model = models.create()
    for p in model.parameters():
        p.data.mul_(0.5)
    path = tmp_path / "w.pt"
    torch.save(model.state_dict(), path)
    loaded = models.load_model("drconv-tiny", path)
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(loaded(x), model.eval()(x))


def test_user_factory(tmp_path, monkeypatch):
    (tmp_path / "mynet.py").write_text(
        "import drconv, torch\n"
        "def build():\n"
        "    return torch.nn.Sequential(drconv.DRConv2d(3, 4, region_num=2))\n"
        "def broken():\n"
        "    raise RuntimeError('boom')\n"
        "not_callable = 3\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert isinstance(models.load_model("mynet:build")[0], DRConv2d)
    with pytest.raises(DrconvError, match="failed: RuntimeError: boom"):
        models.load_model("mynet:broken")
    with pytest.raises(DrconvError, match="no callable 'not_callable'"):
        models.load_model("mynet:not_callable")
    with pytest.raises(DrconvError, match="cannot import module 'nope_missing'"):
        models.load_model("nope_missing:build")
    with pytest.raises(DrconvError, match="unknown model 'tiny'"):
        models.load_model("tiny")


def test_checkpoint_errors_name_the_file(tmp_path):
    missing = tmp_path / "missing.pt"
    with pytest.raises(DrconvError, match=f"{missing}: no such file"):
        models.load_model(None, missing)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(DrconvError, match=f"{garbage}: a text file, not a PyTorch checkpoint"):
        models.load_model(None, garbage)
    binary = tmp_path / "binary.pt"
    binary.write_bytes(bytes(range(256)))
    with pytest.raises(DrconvError, match=f"{binary}: not a PyTorch checkpoint"):
        models.load_model(None, binary)
    wrong = tmp_path / "wrong.pt"
    torch.save({"conv.weight": torch.zeros(1)}, wrong)
    with pytest.raises(DrconvError, match=f"{wrong}: does not fit the model"):
        models.load_model(None, wrong)
