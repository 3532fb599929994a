"""The names of drconv's custom ONNX nodes, shared by the exporter, the rewrites and the runtimes.

No torch here, so that the runtimes import these without it.
"""

CUSTOM_DOMAIN = "drconv"
CUSTOM_OP = "RegionConv2d"
PLUGIN_VERSION = "1"  # the TensorRT plugin's version, which its ONNX parser matches with plugin_version
