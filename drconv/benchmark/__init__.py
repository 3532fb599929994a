"""`drconv benchmark`: backends timed side by side in one process, against the dense-conv bound."""

from drconv.benchmark.backends import LAYER_BACKENDS, MODEL_BACKENDS, LayerSpec, Prepared
from drconv.benchmark.report import SCHEMA, Result
from drconv.benchmark.timing import Backend, Stats, alternate

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
