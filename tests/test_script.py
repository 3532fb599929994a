"""torch.jit.script: libtorch deployments script their models, so the layers and every built-in
model compile, run the registered op, match eager mode, and survive torch.jit.save/load."""

import warnings

import pytest
import torch

from drconv import DRConv2d
from drconv.models import create, names
from drconv.nn import MixtureDRConv2d

MODELS = names()


def _script(module: torch.nn.Module) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's own deprecation notice
        return torch.jit.script(module)


def test_layers_script_and_match_eager(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(2, 4, 9, 11)
    cases = [
        (DRConv2d(4, 6, 3, 4).eval(), (x,)),
        (DRConv2d(4, 6, 1, 2, stride=2).eval(), (x,)),
        (MixtureDRConv2d(4, 6, 1, 4).eval(), (x, torch.randn(2, 4, 5, 6))),  # the guide resized
    ]
    for layer, args in cases:
        scripted = _script(layer)
        assert "drconv::region_conv" in str(scripted.inlined_graph)
        with torch.no_grad():
            torch.testing.assert_close(scripted(*args), layer(*args), rtol=0, atol=0)
        path = tmp_path / "layer.pt"
        torch.jit.save(scripted, str(path))
        with torch.no_grad():
            torch.testing.assert_close(torch.jit.load(str(path))(*args), layer(*args), rtol=0, atol=0)


@pytest.mark.parametrize("name", MODELS)
def test_models_script_and_match_eager(name):
    torch.manual_seed(0)
    model = create(name).eval()
    scripted = _script(model)
    for shape in ((1, 3, 64, 64), (2, 3, 96, 64)):
        x = torch.randn(shape)
        with torch.no_grad():
            torch.testing.assert_close(scripted(x), model(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(torch.jit.Error, match=r"expects input \[N, 3, H, W\], got shape \(1, 4, 64, 64\)"):
        scripted(torch.randn(1, 4, 64, 64))  # the checks compile too
