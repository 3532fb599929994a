"""One forward pass of a model, with what a deployer wants to know: parameters, multiply-adds, DRConv region use.

Counting convention (`count_multiply_adds`, and the totals of `run_summary`): one
multiply-add per use of a weight, per image (the count over the batch divided by its size
N, so it does not depend on N). Counted, by forward hooks on the modules that ran:

- every `nn.Conv2d`: C_out * (C_in / groups) * kh * kw * H_out * W_out, bias not counted.
  This includes DRConv2d's own guide conv and the two 1x1 convs of its filter generator
  (on the k x k pooled map), and the guide convs (`masknet`) of the ShuffleNetV2 zoo;
- every `nn.Linear`: in_features * out_features per output row (MixtureDRConv2d's
  `routing_fc`, classifiers);
- every region conv (the output of a DRConv2d or MixtureDRConv2d) at ONE filter per
  output pixel, C_out * C_in * kh * kw * H_out * W_out: what a dense convolution of the
  same shape costs, and what drconv's kernels do;
- MixtureDRConv2d's filter mixture: R * M * C_out * C_in * kh * kw per sample (R region
  filters, each a sum of M basis filters).

Not counted: BatchNorm, activations, pooling, means, softmax, the guide's resize, bias
adds. A module that runs twice is counted (and listed) twice: its weights are used twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from drconv.nn import DRConv2d, MixtureDRConv2d

__all__ = [
    "LayerCost",
    "LayerReport",
    "ModelReport",
    "count_multiply_adds",
    "format_count",
    "layer_costs",
    "run_summary",
]

# The kinds of module that are counted, most specific first: the DRConv layers are not
# nn.Conv2d subclasses, but a user's subclass of either should count as its base.
_KINDS: tuple[tuple[type[nn.Module], str], ...] = (
    (MixtureDRConv2d, "MixtureDRConv2d"),
    (DRConv2d, "DRConv2d"),
    (nn.Conv2d, "Conv2d"),
    (nn.Linear, "Linear"),
)


@dataclass
class LayerReport:
    """One DRConv layer's call: shapes, parameters (its children's included) and region use."""

    name: str
    layer: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    params: int
    regions: int
    # Share of output pixels in each region, over the whole batch.
    region_share: list[float] = field(default_factory=list)


@dataclass
class LayerCost:
    """One counted module's call: its own parameters (not its children's) and multiply-adds per image."""

    name: str
    kind: str
    output_shape: tuple[int, ...]
    parameters: int
    multiply_adds: int


@dataclass
class ModelReport:
    parameters: int
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    latency_ms: float
    drconv_layers: list[LayerReport]
    # Per image, the sum of `layers`' multiply_adds.
    multiply_adds: int = 0
    layers: list[LayerCost] = field(default_factory=list)


def _kind(module: nn.Module) -> str | None:
    for cls, kind in _KINDS:
        if isinstance(module, cls):
            return kind
    return None


def _batch_multiply_adds(kind: str, module: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> int:
    """Multiply-adds of one call over its whole batch, by the convention of the module docstring."""
    if kind == "Conv2d":
        kh, kw = module.kernel_size
        # output.numel() = N * C_out * H_out * W_out: each output element uses C_in/groups * kh * kw weights.
        return output.numel() * (module.in_channels // module.groups) * kh * kw
    if kind == "Linear":
        return output.numel() * module.in_features
    kh, kw = module.kernel_size
    region = output.numel() * module.in_channels * kh * kw
    if kind == "MixtureDRConv2d":
        # weight is [C_out*C_in*kh*kw, M]: each of the R filters of a sample mixes all of it once.
        region += inputs[0].shape[0] * module.region_num * module.weight.numel()
    return region


class _Counter:
    """Forward hooks on every counted module of a model, recording a LayerCost per call."""

    def __init__(self, batch: int) -> None:
        self.batch = batch
        self.layers: list[LayerCost] = []
        self.paused = False
        self.handles: list[RemovableHandle] = []

    def attach(self, model: nn.Module) -> None:
        """Hook every counted module; call inside the try whose finally calls `remove`."""
        for name, module in model.named_modules():
            kind = _kind(module)
            if kind is not None:
                self.handles.append(module.register_forward_hook(self._hook(name, kind)))

    def _hook(self, name: str, kind: str) -> Callable[..., None]:
        def record(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            if self.paused or not isinstance(output, torch.Tensor):
                return
            self.layers.append(
                LayerCost(
                    name=name,
                    kind=kind,
                    output_shape=tuple(output.shape),
                    parameters=sum(p.numel() for p in module.parameters(recurse=False)),
                    multiply_adds=_batch_multiply_adds(kind, module, inputs, output) // self.batch,
                )
            )

        return record

    @contextmanager
    def pause(self) -> Iterator[None]:
        """Calls made for the report's own sake (a DRConv2d's guide, again) are not the model's work."""
        self.paused = True
        try:
            yield
        finally:
            self.paused = False

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()

    @property
    def total(self) -> int:
        return sum(layer.multiply_adds for layer in self.layers)


def format_count(n: int) -> str:
    """A count for people: 40476448 -> '40.48M', 1.2e9 -> '1.20G', 5120 -> '5.12K'."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{suffix}"
    return str(n)


def _batch_size(x: torch.Tensor) -> int:
    if x.dim() == 0 or x.shape[0] < 1:
        raise ValueError(f"input must have a batch dimension of size >= 1, got shape {tuple(x.shape)}")
    return int(x.shape[0])


def layer_costs(model: nn.Module, x: torch.Tensor) -> list[LayerCost]:
    """Run model(x) under no_grad; every counted module's call, in the order they ran (per image)."""
    counter = _Counter(_batch_size(x))
    try:
        counter.attach(model)
        with torch.no_grad():
            model(x)
    finally:
        counter.remove()
    return counter.layers


def count_multiply_adds(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-adds of model(x) per image, by the convention in this module's docstring."""
    return sum(layer.multiply_adds for layer in layer_costs(model, x))


def run_summary(model: nn.Module, x: torch.Tensor, repeats: int = 3) -> ModelReport:
    """Run model(x) under no_grad; report shapes, parameters, multiply-adds, region use and the median latency."""
    reports: list[LayerReport] = []
    counter = _Counter(_batch_size(x))

    def region_hook(name: str) -> Callable[..., None]:
        def record(
            module: DRConv2d | MixtureDRConv2d, args: tuple[Any, ...], kwargs: dict[str, Any], output: torch.Tensor
        ) -> None:
            # The inputs the layer got: (x,) or (x, guide) for DRConv2d, (x, guide) for
            # MixtureDRConv2d, the guide perhaps by keyword. DRConv2d recomputes its own
            # guide here, which the counter must not see as a second call of that conv.
            with counter.pause():
                regions = module.region_map(*args, **kwargs)
            counts = torch.bincount(regions.flatten(), minlength=module.region_num).double()
            reports.append(
                LayerReport(
                    name=name,
                    layer=f"{type(module).__name__}({module.extra_repr()})",
                    input_shape=tuple(args[0].shape),
                    output_shape=tuple(output.shape),
                    params=sum(p.numel() for p in module.parameters()),
                    regions=module.region_num,
                    region_share=(counts / counts.sum()).tolist(),
                )
            )

        return record

    hooks: list[RemovableHandle] = []
    try:
        counter.attach(model)
        for name, module in model.named_modules():
            if isinstance(module, DRConv2d | MixtureDRConv2d):
                hooks.append(module.register_forward_hook(region_hook(name), with_kwargs=True))
        with torch.no_grad():
            y = model(x)
    finally:
        counter.remove()
        for h in hooks:
            h.remove()
    times = []
    with torch.no_grad():
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    times.sort()
    return ModelReport(
        parameters=sum(p.numel() for p in model.parameters()),
        input_shape=tuple(x.shape),
        output_shape=tuple(y.shape),
        latency_ms=times[len(times) // 2] * 1e3,
        drconv_layers=reports,
        multiply_adds=counter.total,
        layers=counter.layers,
    )
