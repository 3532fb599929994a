"""drconv: deploy Dynamic Region-Aware Convolution (DRConv) like an ordinary convolution."""

from drconv.convert import convert
from drconv.nn import DRConv2d
from drconv.ops import region_conv

__version__ = "0.1.0"
__all__ = ["DRConv2d", "__version__", "convert", "region_conv"]
