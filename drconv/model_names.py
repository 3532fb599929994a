"""The built-in models' names, without torch: the CLI's defaults (drconv.models builds the models)."""

DEFAULT_MODEL = "drconv-tiny"
# Every built-in model, with one line about it (drconv.models has a builder for each name).
DESCRIPTIONS = {
    "drconv-tiny": "ImageNet-style classifier, 3 DRConv2d layers (R=8/4/2), ~1M params",
    "drconv-shufflenetv2-0.5x": "the paper's DRConv-ShuffleNetV2 0.5x: 1x1 region convs, one guide per block, R=8, M=8",
    "drconv-shufflenetv2-1.0x": "the paper's DRConv-ShuffleNetV2 1.0x: 1x1 region convs, one guide per block, R=8, M=8",
    "shufflenetv2-0.5x": "plain ShuffleNetV2 0.5x, the twin of drconv-shufflenetv2-0.5x",
    "shufflenetv2-1.0x": "plain ShuffleNetV2 1.0x, the twin of drconv-shufflenetv2-1.0x",
}
# Each DRConv model's plain twin (ordinary convs, no guide): the baseline of `--baseline twin`.
TWINS = {"drconv-shufflenetv2-0.5x": "shufflenetv2-0.5x", "drconv-shufflenetv2-1.0x": "shufflenetv2-1.0x"}


def names() -> list[str]:
    """Names of the built-in models."""
    return sorted(DESCRIPTIONS)


def describe(name: str) -> str:
    """One line about a built-in model."""
    return DESCRIPTIONS[name]
