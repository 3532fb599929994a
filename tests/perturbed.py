"""Models with every folded constant away from its initial value, so that a test sees each of them."""

import torch

import drconv


def perturbed(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """`model` in eval mode with random BatchNorm statistics and affines, routing and biases.

    A fresh BatchNorm folds into a zero bias B and a fresh routing into near-uniform
    coefficients: a graph that dropped them would still pass.
    """
    g = torch.Generator().manual_seed(seed)

    def draw(t: torch.Tensor, low: float, high: float) -> None:
        t.copy_(torch.rand(t.shape, generator=g) * (high - low) + low)

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                draw(module.running_mean, -1, 1)
                draw(module.running_var, 0.5, 2)
                draw(module.weight, 0.5, 2)
                draw(module.bias, -1, 1)
            if isinstance(module, drconv.nn.MixtureDRConv2d):
                module.routing_fc.weight.copy_(torch.randn(module.routing_fc.weight.shape, generator=g))
                draw(module.routing_fc.bias, -1, 1)
    return model.eval()
