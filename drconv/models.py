"""The built-in models and the loader for models users bring (`module:factory` + checkpoint)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from drconv.errors import DrconvError
from drconv.nn import DRConv2d
from drconv.shufflenetv2 import ShuffleNetV2

DEFAULT_MODEL = "drconv-tiny"
MIN_INPUT_SIZE = 32


def _conv_bn_relu(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


def _drconv_bn_relu(channels: int, regions: int) -> nn.Sequential:
    return nn.Sequential(
        DRConv2d(channels, channels, 3, region_num=regions), nn.BatchNorm2d(channels), nn.ReLU(inplace=True)
    )


class DRConvTiny(nn.Module):
    """A ~1M-parameter ImageNet-style classifier: plain strided convs, each stage refined by a DRConv.

    Input [N, 3, H, W] with H, W >= 32 (total stride 16); output logits [N, num_classes].
    """

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _conv_bn_relu(3, 24, 2),
            _conv_bn_relu(24, 48, 2),
            _drconv_bn_relu(48, 8),
            _conv_bn_relu(48, 96, 2),
            _drconv_bn_relu(96, 4),
            _conv_bn_relu(96, 192, 2),
            _drconv_bn_relu(192, 2),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(192, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"drconv-tiny expects input [N, 3, H, W], got shape {tuple(x.shape)}")
        if x.shape[2] < MIN_INPUT_SIZE or x.shape[3] < MIN_INPUT_SIZE:
            raise ValueError(f"drconv-tiny needs H and W >= {MIN_INPUT_SIZE}, got {x.shape[2]}x{x.shape[3]}")
        return self.classifier(self.pool(self.features(x)).flatten(1))


def _shufflenet(width: float, regions: int | None) -> Callable[[], nn.Module]:
    return lambda: ShuffleNetV2(width, regions)


_REGISTRY: dict[str, tuple[Callable[[], nn.Module], str]] = {
    "drconv-tiny": (DRConvTiny, "ImageNet-style classifier, 3 DRConv2d layers (R=8/4/2), ~1M params"),
    "drconv-shufflenetv2-0.5x": (
        _shufflenet(0.5, 8),
        "the paper's DRConv-ShuffleNetV2 0.5x: 1x1 region convs, one guide per block, R=8, M=8",
    ),
    "drconv-shufflenetv2-1.0x": (
        _shufflenet(1.0, 8),
        "the paper's DRConv-ShuffleNetV2 1.0x: 1x1 region convs, one guide per block, R=8, M=8",
    ),
    "shufflenetv2-0.5x": (_shufflenet(0.5, None), "plain ShuffleNetV2 0.5x, the twin of drconv-shufflenetv2-0.5x"),
    "shufflenetv2-1.0x": (_shufflenet(1.0, None), "plain ShuffleNetV2 1.0x, the twin of drconv-shufflenetv2-1.0x"),
}
# The plain network each DRConv model is measured against (drconv benchmark --baseline twin).
TWINS = {"drconv-shufflenetv2-0.5x": "shufflenetv2-0.5x", "drconv-shufflenetv2-1.0x": "shufflenetv2-1.0x"}


def names() -> list[str]:
    """Names of the built-in models."""
    return sorted(_REGISTRY)


def describe(name: str) -> str:
    """One line about a built-in model."""
    return _REGISTRY[name][1]


def create(name: str = DEFAULT_MODEL) -> nn.Module:
    """A fresh (randomly initialised, seeded) instance of a built-in model."""
    if name not in _REGISTRY:
        raise DrconvError(
            f"unknown model {name!r}; built-in models: {', '.join(names())}, or use package.module:factory"
        )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return _REGISTRY[name][0]()


def _from_factory(spec: str) -> nn.Module:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise DrconvError(f"model {spec!r} must be a built-in name ({', '.join(names())}) or package.module:factory")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any import failure is the user's module, report it in one line
        raise DrconvError(f"cannot import module {module_name!r} for model {spec!r}: {exc}") from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise DrconvError(f"module {module_name!r} has no callable {attr!r} (from model {spec!r})")
    try:
        model = factory()
    except Exception as exc:
        raise DrconvError(f"model factory {spec!r} failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise DrconvError(f"model factory {spec!r} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def load_checkpoint(model: nn.Module, path: str | Path) -> None:
    """Load a state_dict (or a dict holding one under 'state_dict') into model, strictly."""
    path = Path(path)
    if not path.is_file():
        raise DrconvError(f"checkpoint {path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DrconvError(
            f"checkpoint {path}: cannot be read as a PyTorch state_dict ({type(exc).__name__}: {exc})"
        ) from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise DrconvError(f"checkpoint {path}: holds a {type(state).__name__}, expected a state_dict")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:3])
        raise DrconvError(f"checkpoint {path}: does not fit the model: {detail}") from exc


def load_model(spec: str | None = None, checkpoint: str | Path | None = None) -> nn.Module:
    """A model in eval mode from a built-in name or `package.module:factory`, with optional weights."""
    spec = spec or DEFAULT_MODEL
    model = _from_factory(spec) if ":" in spec else create(spec)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    return model.eval()
