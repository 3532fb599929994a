"""Swap DRConv-PyTorch's `DRConv2d` layers for `drconv.DRConv2d`, weights and semantics unchanged.

DRConv-PyTorch (github shallowtoil/DRConv-PyTorch) is not a package, so its layer is
recognised by structure, not by type: a module with `conv_kernel` (adaptive pool to
k x k, 1x1 conv to R*R, sigmoid, 1x1 conv grouped by R to R*C_out*C_in), `conv_guide`
(a k x k conv to R channels), `region_num` and `kwargs` (what its forward passes to
F.conv2d). That layer runs all R filters over the whole map and keeps, per pixel, the
output of the first-argmax region of the guide; drconv's layer convolves each pixel with
that region's filter only, the same function at 1/R of the cost.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from drconv.errors import DrconvError
from drconv.nn import DRConv2d

__all__ = ["convert", "is_drconv_pytorch_layer"]

# The only kwargs DRConv-PyTorch's forward hands to both its guide conv and its F.conv2d
# call with one meaning; anything else breaks that call or changes the guide alone.
_SUPPORTED_KWARGS = ("stride", "padding", "dilation")
_DEFAULTS = {"stride": 1, "padding": 0, "dilation": 1}  # F.conv2d's, which DRConv-PyTorch relies on
# Source parameter -> drconv.DRConv2d parameter; the two layers hold exactly these.
_PARAMETERS = {
    "conv_guide.weight": "guide.weight",
    "conv_guide.bias": "guide.bias",
    "conv_kernel.1.weight": "filter_generator.1.weight",
    "conv_kernel.1.bias": "filter_generator.1.bias",
    "conv_kernel.3.weight": "filter_generator.3.weight",
    "conv_kernel.3.bias": "filter_generator.3.bias",
}


class _Unsupported(Exception):
    """Why one layer cannot be converted exactly; `convert` adds the layer's name."""


def is_drconv_pytorch_layer(module: nn.Module) -> bool:
    """Whether `module` has the attributes of DRConv-PyTorch's DRConv2d (its details are checked on conversion)."""
    return (
        isinstance(getattr(module, "conv_kernel", None), nn.Sequential)
        and isinstance(getattr(module, "conv_guide", None), nn.Conv2d)
        and hasattr(module, "region_num")
        and isinstance(getattr(module, "kwargs", None), dict)
    )


def _int_pair(value: object, what: str) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return value, value
    if (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        return value[0], value[1]
    raise _Unsupported(f"{what}={value!r} is not an int or a pair of ints")


def _same_padding(kernel: tuple[int, int], dilation: tuple[int, int], what: str) -> tuple[int, int]:
    """The symmetric padding of padding='same' (stride 1), or _Unsupported where PyTorch pads one side more."""
    totals = [d * (k - 1) for k, d in zip(kernel, dilation, strict=False)]
    if any(total % 2 for total in totals):
        raise _Unsupported(
            f"{what}='same' with kernel {kernel} and dilation {dilation} pads one side more than the other, "
            "which drconv's region conv does not do"
        )
    return totals[0] // 2, totals[1] // 2


def _conv_padding(conv: nn.Conv2d, what: str) -> tuple[int, int]:
    """An nn.Conv2d's padding as a pair, resolving 'valid' and 'same'."""
    if conv.padding == "valid":
        return 0, 0
    if conv.padding == "same":
        return _same_padding(conv.kernel_size, conv.dilation, what)
    return _int_pair(conv.padding, what)


def _geometry(kwargs: dict, kernel: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """Stride, padding and dilation as pairs, as DRConv-PyTorch's F.conv2d call reads its kwargs."""
    unknown = {key: value for key, value in kwargs.items() if key not in _SUPPORTED_KWARGS}
    if unknown:
        listed = ", ".join(f"{key}={value!r}" for key, value in unknown.items())
        raise _Unsupported(
            f"kwargs {listed} not supported (DRConv-PyTorch's forward treats only stride, padding and dilation "
            "alike in its guide and its filters)"
        )
    stride = _int_pair(kwargs.get("stride", _DEFAULTS["stride"]), "stride")
    dilation = _int_pair(kwargs.get("dilation", _DEFAULTS["dilation"]), "dilation")
    if min(stride) < 1 or min(dilation) < 1:
        raise _Unsupported(f"stride {stride} and dilation {dilation} must be >= 1")
    padding_arg = kwargs.get("padding", _DEFAULTS["padding"])
    if padding_arg == "valid":
        padding = (0, 0)
    elif padding_arg == "same":
        if stride != (1, 1):
            raise _Unsupported(f"padding='same' needs stride 1, got {stride}")
        padding = _same_padding(kernel, dilation, "padding")
    elif isinstance(padding_arg, str):
        raise _Unsupported(f"padding={padding_arg!r} is not 'valid', 'same' or a number")
    else:
        padding = _int_pair(padding_arg, "padding")
        if min(padding) < 0:
            raise _Unsupported(f"padding {padding} must be >= 0")
    return stride, padding, dilation


def _check_pointwise(conv: object, what: str, in_channels: int, groups: int) -> nn.Conv2d:
    """One of the filter generator's 1x1 convs: plain geometry, a bias, the expected inputs and groups."""
    if not isinstance(conv, nn.Conv2d):
        raise _Unsupported(f"{what} is a {type(conv).__name__}, expected a 1x1 nn.Conv2d")
    if conv.kernel_size != (1, 1) or conv.stride != (1, 1) or conv.dilation != (1, 1):
        raise _Unsupported(
            f"{what} has kernel {conv.kernel_size}, stride {conv.stride}, dilation {conv.dilation}; "
            "expected a 1x1 conv with stride 1 and dilation 1"
        )
    if _conv_padding(conv, f"{what} padding") != (0, 0):
        raise _Unsupported(f"{what} has padding {conv.padding}, expected none")
    if conv.in_channels != in_channels or conv.groups != groups:
        raise _Unsupported(
            f"{what} takes {conv.in_channels} channels in {conv.groups} groups, expected {in_channels} in {groups}"
        )
    if conv.bias is None:
        raise _Unsupported(f"{what} has no bias (DRConv-PyTorch's has one)")
    return conv


def _convert_layer(layer: nn.Module) -> DRConv2d:
    """drconv's DRConv2d computing what `layer` computes, with its weights, device, dtype and mode."""
    regions = layer.region_num
    if not isinstance(regions, int) or isinstance(regions, bool) or regions < 1:
        raise _Unsupported(f"region_num={regions!r} is not a positive int")
    guide: nn.Conv2d = layer.conv_guide
    kernel = guide.kernel_size
    stride, padding, dilation = _geometry(layer.kwargs, kernel)

    if guide.out_channels != regions:
        raise _Unsupported(f"conv_guide has {guide.out_channels} output channels, region_num is {regions}")
    if guide.groups != 1:
        raise _Unsupported(f"conv_guide has groups={guide.groups}, expected 1")
    if guide.bias is None:
        raise _Unsupported("conv_guide has no bias (drconv's guide conv always has one)")
    if guide.padding_mode != "zeros":
        raise _Unsupported(f"conv_guide has padding_mode={guide.padding_mode!r}; only zero padding is supported")
    # The kwargs drive the filters' F.conv2d, the guide's own attributes its conv; both must agree.
    guide_geometry = (guide.stride, _conv_padding(guide, "conv_guide padding"), guide.dilation)
    if guide_geometry != (stride, padding, dilation):
        raise _Unsupported(
            f"conv_guide has stride/padding/dilation {guide_geometry} but kwargs say {(stride, padding, dilation)}"
        )

    steps = list(layer.conv_kernel)
    kinds = (nn.AdaptiveAvgPool2d, nn.Conv2d, nn.Sigmoid, nn.Conv2d)
    if len(steps) != len(kinds) or not all(isinstance(step, kind) for step, kind in zip(steps, kinds, strict=False)):
        found = ", ".join(type(step).__name__ for step in steps)
        raise _Unsupported(f"conv_kernel is ({found}), expected (AdaptiveAvgPool2d, Conv2d, Sigmoid, Conv2d)")
    pooled = steps[0].output_size
    pooled = (pooled, pooled) if isinstance(pooled, int) else tuple(pooled)
    if pooled != kernel:
        raise _Unsupported(f"conv_kernel pools to {pooled}, conv_guide's kernel is {kernel}")
    in_channels = guide.in_channels
    _check_pointwise(steps[1], "conv_kernel.1", in_channels, 1)
    if steps[1].out_channels != regions * regions:
        raise _Unsupported(f"conv_kernel.1 has {steps[1].out_channels} output channels, expected R*R = {regions**2}")
    last = _check_pointwise(steps[3], "conv_kernel.3", regions * regions, regions)
    out_channels, rest = divmod(last.out_channels, regions * in_channels)
    if rest or out_channels < 1:
        raise _Unsupported(
            f"conv_kernel.3 has {last.out_channels} output channels, not a multiple of R*C_in = {regions * in_channels}"
        )

    # Anything the layer holds beyond these six tensors would be dropped by the swap.
    held = dict(layer.named_parameters())
    extra = sorted(set(held) - set(_PARAMETERS)) + [name for name, _ in layer.named_buffers()]
    if extra:
        raise _Unsupported(f"it holds tensors a DRConv-PyTorch layer does not: {', '.join(extra[:3])}")
    tensors = [held[name] for name in _PARAMETERS]
    dtype, device = tensors[0].dtype, tensors[0].device
    if any(t.dtype != dtype or t.device != device for t in tensors):
        raise _Unsupported("its parameters are spread over several dtypes or devices")
    if not dtype.is_floating_point:
        raise _Unsupported(f"its parameters are {dtype}, not floating point")

    # Built on the meta device: no initialisation to throw away, and the global RNG is left as it was.
    with torch.device("meta"):
        new = DRConv2d(
            in_channels,
            out_channels,
            kernel,
            regions,
            stride=stride,
            padding=padding,
            dilation=dilation,
            bias=False,
        )
    new = new.to_empty(device=device).to(dtype)
    new.load_state_dict({target: held[source].detach() for source, target in _PARAMETERS.items()}, strict=True)
    new_params = dict(new.named_parameters())
    for source, target in _PARAMETERS.items():
        new_params[target].requires_grad_(held[source].requires_grad)
    return new.train(layer.training)


def _where(name: str) -> str:
    return f"{name!r}" if name else "(the model itself)"


def _matches(module: nn.Module, prefix: str) -> Iterator[tuple[nn.Module, str, str, nn.Module]]:
    """(parent, attribute, dotted name, layer) for every DRConv-PyTorch layer below `module`, outermost only."""
    # _modules rather than named_children(): a layer registered under two names must be swapped under both.
    for attribute, child in module._modules.items():
        if child is None:
            continue
        name = f"{prefix}.{attribute}" if prefix else attribute
        if is_drconv_pytorch_layer(child):
            yield module, attribute, name, child
        else:
            yield from _matches(child, name)


def _convert_named(layer: nn.Module, name: str) -> DRConv2d:
    try:
        return _convert_layer(layer)
    except _Unsupported as exc:
        raise DrconvError(f"cannot convert DRConv-PyTorch DRConv2d {_where(name)} exactly: {exc}") from None


def convert(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """Replace every DRConv-PyTorch DRConv2d in `model` by an equivalent `drconv.DRConv2d`, in place.

    Each replacement carries the layer's weights (conv_kernel -> filter_generator,
    conv_guide -> guide), stride, padding and dilation, device, dtype, training mode and
    requires_grad flags, and computes the same outputs. A layer shared under several names
    is replaced by one shared layer. Converting twice changes nothing the second time.

    Returns:
        The model (a new module where `model` itself is such a layer) and the dotted names
        of the replaced layers, in module order ("" for the model itself).

    Raises:
        DrconvError: naming the first layer that cannot be converted exactly (an unsupported
            kwarg, padding mode or 'same' padding, missing biases, inconsistent shapes), and
            why; the model is then left unchanged.
    """
    if is_drconv_pytorch_layer(model):
        return _convert_named(model, ""), [""]
    found = list(_matches(model, ""))
    # Convert all before swapping any, so that an error leaves the model as it was.
    converted: dict[int, DRConv2d] = {}
    for _, _, name, layer in found:
        if id(layer) not in converted:
            converted[id(layer)] = _convert_named(layer, name)
    for parent, attribute, _, layer in found:
        setattr(parent, attribute, converted[id(layer)])
    return model, [name for _, _, name, _ in found]
