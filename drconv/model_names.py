"""The built-in models' names, without torch: the CLI's defaults (drconv.models builds the models)."""

DEFAULT_MODEL = "drconv-tiny"
# Each DRConv model's plain twin (ordinary convs, no guide): the baseline of `--baseline twin`.
TWINS = {"drconv-shufflenetv2-0.5x": "shufflenetv2-0.5x", "drconv-shufflenetv2-1.0x": "shufflenetv2-1.0x"}
