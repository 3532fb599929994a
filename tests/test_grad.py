"""Autograd of region_conv: gradcheck for x and filters, the straight-through rule for guide."""

import pytest
import torch
from conftest import random_case
from reference import naive_guide_grad

import drconv

GRAD_CASES = [
    (2, 3, 2, 6, 5, 3, 3, 1, 1),
    (1, 2, 3, 7, 7, 8, 3, 2, 1),
    (2, 2, 2, 9, 8, 1, 5, 1, 2),
    (1, 3, 2, 6, 6, 4, (1, 3), (2, 1), 1),
]


@pytest.mark.parametrize("case", GRAD_CASES)
def test_gradcheck_x_and_filters(case):
    x, f, g, s, p, d = random_case(*case)
    x.requires_grad_()
    f.requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: drconv.region_conv(a, b, g, s, p, d), (x, f))


@pytest.mark.parametrize("case", GRAD_CASES)
def test_guide_gradient_is_straight_through_softmax(case):
    x, f, g, s, p, d = random_case(*case)
    g.requires_grad_()
    y = drconv.region_conv(x, f, g, s, p, d)
    grad_y = torch.randn_like(y)
    (grad_guide,) = torch.autograd.grad(y, g, grad_y)
    torch.testing.assert_close(grad_guide, naive_guide_grad(x, f, g.detach(), grad_y, s, p, d))


def test_only_requested_gradients_are_computed():
    x, f, g, *_ = random_case(1, 2, 2, 5, 5, 2, 3, 1, 1)
    f.requires_grad_()
    y = drconv.region_conv(x, f, g)
    y.sum().backward()
    assert x.grad is None and g.grad is None
    assert f.grad is not None and f.grad.abs().sum() > 0


def test_no_input_channels_give_zero_gradients():
    x = torch.randn(2, 0, 5, 5, requires_grad=True)
    filters = torch.randn(2, 3, 4, 0, 3, 3, requires_grad=True)
    guide = torch.randn(2, 3, 5, 5, requires_grad=True)
    drconv.region_conv(x, filters, guide).sum().backward()
    assert x.grad.shape == x.shape and filters.grad.shape == filters.shape
    assert torch.equal(guide.grad, torch.zeros_like(guide))
