"""One forward pass of a model, with what a deployer wants to know about its DRConv layers."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import nn

from drconv.nn import DRConv2d


@dataclass
class LayerReport:
    name: str
    layer: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    params: int
    regions: int
    # Share of output pixels in each region, over the whole batch.
    region_share: list[float] = field(default_factory=list)


@dataclass
class ModelReport:
    parameters: int
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    latency_ms: float
    drconv_layers: list[LayerReport]


def run_summary(model: nn.Module, x: torch.Tensor, repeats: int = 3) -> ModelReport:
    """Run model(x) under no_grad; report shapes, parameters, region use and the median latency."""
    reports: list[LayerReport] = []
    hooks = []

    def hook(name: str):
        def record(module: DRConv2d, inputs, output):
            guide = module.guide(inputs[0])
            counts = torch.bincount(guide.argmax(dim=1).flatten(), minlength=module.region_num).double()
            reports.append(
                LayerReport(
                    name=name,
                    layer=f"DRConv2d({module.extra_repr()})",
                    input_shape=tuple(inputs[0].shape),
                    output_shape=tuple(output.shape),
                    params=sum(p.numel() for p in module.parameters()),
                    regions=module.region_num,
                    region_share=(counts / counts.sum()).tolist(),
                )
            )

        return record

    for name, module in model.named_modules():
        if isinstance(module, DRConv2d):
            hooks.append(module.register_forward_hook(hook(name)))
    try:
        with torch.no_grad():
            y = model(x)
    finally:
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
    )
