"""The node contract of drconv's ONNX nodes: domain, names, versions, inputs, attributes.

One home for what the exporter writes and every backend reads. No torch here: the runtimes
import it without. plugins/common/region_conv_contract.h holds the same table for the
native libraries, and tests/test_contract.py checks that the two agree entry by entry.
docs/region_conv_op.md describes the nodes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any

__all__ = [
    "ATTRIBUTES",
    "ATTRIBUTES_SINCE",
    "CHANNEL_BLOCKS",
    "DOMAIN",
    "FIRST_VERSION",
    "LATEST_VERSION",
    "MIXTURE",
    "NODE_TYPES",
    "PLUGIN_VERSION",
    "REGION_CONV",
    "VERSIONS",
    "MixtureInput",
    "NodeType",
    "RegionConvInput",
    "check_versions",
    "domain_version",
    "has_nodes",
    "mixture_inputs_error",
    "table",
    "version_error",
]

DOMAIN = "drconv"
FIRST_VERSION, LATEST_VERSION = 1, 5
# What each version of the domain added; a library implements every node of every version
# from FIRST_VERSION to LATEST_VERSION.
VERSIONS = {
    1: "RegionConv2d: X, filters [N, R, C_out, C_in, kh, kw], guide; strides, pads, dilations",
    2: "RegionConv2d: filter_layout (IHWO), bias input B, activation (Relu)",
    3: "MixtureRegionConv2d: filters mixed in the node from coefficients and a basis",
    4: "MixtureRegionConv2d: inputs routing and routing_bias (the node routes itself)",
    5: "both: x_channel_block, y_channel_block (X, Y in ONNX Runtime's blocked NCHWc layout; "
    "drconv's ONNX Runtime session writes them into its optimised graph, exports never do)",
}
# The TensorRT plugin's version, which its ONNX parser matches with the node's plugin_version:
# the plugin implements version 1 of RegionConv2d (drconv.runtime.trt lowers the rest).
PLUGIN_VERSION = "1"


class RegionConvInput(IntEnum):
    X = 0
    FILTERS = 1
    GUIDE = 2
    B = 3


class MixtureInput(IntEnum):
    X = 0
    COEFFICIENTS = 1  # left out where the routing computes them (version 4)
    BASIS = 2
    GUIDE = 3
    B = 4
    ROUTING = 5
    ROUTING_BIAS = 6


@dataclass(frozen=True)
class NodeType:
    name: str
    since: int  # the first domain version with this node
    inputs: tuple[str, ...]  # the latest version's inputs, in order
    required: tuple[bool, ...]
    input_since: tuple[int, ...]  # the version that added each input

    @property
    def guide(self) -> int:
        return self.inputs.index("guide")


REGION_CONV = NodeType("RegionConv2d", 1, ("X", "filters", "guide", "B"), (True, True, True, False), (1, 1, 1, 2))
MIXTURE = NodeType(
    "MixtureRegionConv2d",
    3,
    ("X", "coefficients", "basis", "guide", "B", "routing", "routing_bias"),
    (True, False, True, True, False, False, False),
    (3, 3, 3, 3, 3, 4, 4),
)
NODE_TYPES = (REGION_CONV, MIXTURE)
# Attribute names and defaults, both node types (absent attributes take these), and the
# version that added each.
ATTRIBUTES: dict[str, Any] = {
    "strides": [1, 1],
    "pads": [0, 0, 0, 0],  # top, left, bottom, right
    "dilations": [1, 1],
    "filter_layout": "OIHW",
    "activation": "",
    "x_channel_block": 0,  # 0: NCHW; B in CHANNEL_BLOCKS: NCHWc (CPU, float32, IHWO, pads 0)
    "y_channel_block": 0,
}
ATTRIBUTES_SINCE = {
    "strides": 1,
    "pads": 1,
    "dilations": 1,
    "filter_layout": 2,
    "activation": 2,
    "x_channel_block": 5,
    "y_channel_block": 5,
}


# The NCHWc blocks the CPU kernel reads and writes (ONNX Runtime's MLAS uses 16 with AVX-512,
# 8 with AVX2).
CHANNEL_BLOCKS = (4, 8, 16)


def version_error(version: int) -> str | None:
    """None where `version` of the domain is implemented here, else the one line every backend gives."""
    if FIRST_VERSION <= version <= LATEST_VERSION:
        return None
    return (
        f"the model imports the {DOMAIN} domain at version {version}, and this drconv implements versions "
        f"{FIRST_VERSION} to {LATEST_VERSION}: export it again with this drconv, or upgrade drconv"
    )


def mixture_inputs_error(coefficients: bool, routing: bool, routing_bias: bool) -> str | None:
    """None where a MixtureRegionConv2d's inputs are a valid combination, else the backends' message."""
    if routing and coefficients:
        return "MixtureRegionConv2d: give the coefficients or the routing, not both"
    if not routing and not coefficients:
        return "MixtureRegionConv2d: input coefficients is missing (and the node has no routing)"
    if routing_bias and not routing:
        return "MixtureRegionConv2d: input routing_bias needs the routing input"
    return None


def has_nodes(model: Any) -> bool:
    """Whether an onnx.ModelProto's graph has nodes in the drconv domain."""
    return any(node.domain == DOMAIN for node in model.graph.node)


def domain_version(model: Any) -> int | None:
    """The version at which an onnx.ModelProto imports the drconv domain; None where it does not."""
    for opset in model.opset_import:
        if opset.domain == DOMAIN:
            return int(opset.version)
    return None


def check_versions(model: Any, where: str) -> None:
    """Refuse (DrconvError) a model whose drconv domain version no backend here implements.

    For the runtimes that give a custom-op library no way to see the version (ONNX Runtime's
    C API, OpenVINO's ONNX frontend, TensorRT's ONNX parser), drconv's loaders check it
    here. `where`: the file or runtime, named first in the message.
    """
    from drconv.errors import DrconvError

    if not has_nodes(model):
        return
    version = domain_version(model)
    if version is None:
        raise DrconvError(f"{where}: the model has {DOMAIN} nodes but no opset import for the {DOMAIN} domain")
    message = version_error(version)
    if message:
        raise DrconvError(f"{where}: {message}")


def table() -> dict[str, Any]:
    """The contract as plain data, in the shape tests/test_contract.py reads from the C++ header."""
    return {
        "domain": DOMAIN,
        "first_version": FIRST_VERSION,
        "latest_version": LATEST_VERSION,
        "plugin_version": PLUGIN_VERSION,
        "nodes": [
            {
                "name": n.name,
                "since": n.since,
                "inputs": list(n.inputs),
                "required": list(n.required),
                "input_since": list(n.input_since),
            }
            for n in NODE_TYPES
        ],
        "attributes": ATTRIBUTES,
        "attributes_since": ATTRIBUTES_SINCE,
        "channel_blocks": list(CHANNEL_BLOCKS),
    }
