"""`drconv benchmark`: backends timed side by side in one process, against the dense-conv bound.

timing, report and files need no torch (exported .onnx files time without it); the layer
and model backends (drconv.benchmark.backends) load torch on first use.
"""

from __future__ import annotations

from typing import Any

from drconv.benchmark.report import SCHEMA, Result
from drconv.benchmark.timing import Backend, Prepared, Stats, alternate

__all__ = [
    "LAYER_BACKENDS",
    "MODEL_BACKENDS",
    "SCHEMA",
    "Backend",
    "LayerSpec",
    "Prepared",
    "Result",
    "Stats",
    "alternate",
]

_FROM_BACKENDS = ("LAYER_BACKENDS", "MODEL_BACKENDS", "LayerSpec")


def __getattr__(name: str) -> Any:
    if name in _FROM_BACKENDS:
        from drconv.benchmark import backends

        return getattr(backends, name)
    raise AttributeError(f"module 'drconv.benchmark' has no attribute {name!r}")
