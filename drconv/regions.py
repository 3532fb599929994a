"""Region maps: for every guide of a model, the region each output pixel is routed to, from
PyTorch or from an exported file in its runtime; drawn over the input picture, and where a
runtime routes differently from PyTorch (`drconv regions`, `drconv verify --plot`).

A guide that several layers read (a ShuffleNetV2 block's two region convs) is one map
that names them all.
"""

from __future__ import annotations

import math
import os
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from drconv import onnx_file
from drconv.benchmark.report import pyplot, save_png

# Distinct colours for up to 20 regions (matplotlib's tab10, then tab20's light ones).
_TAB10 = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
]  # fmt: skip
_LIGHT = [
    "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
]  # fmt: skip
ALPHA = 0.5


@dataclass(frozen=True)
class RegionMap:
    """One guide's routing of the first image: the layers that read it and each pixel's region."""

    layers: tuple[str, ...]
    regions: int
    index: np.ndarray  # [H, W] region of every output pixel

    @property
    def resolution(self) -> tuple[int, int]:
        return int(self.index.shape[0]), int(self.index.shape[1])

    @property
    def shares(self) -> list[float]:
        counts = np.bincount(self.index.ravel(), minlength=self.regions)
        return [float(c) / self.index.size for c in counts]

    def to_json(self) -> dict:
        return {
            "layers": list(self.layers),
            "resolution": list(self.resolution),
            "regions": self.regions,
            "shares": self.shares,
        }


def colors(regions: int) -> np.ndarray:
    """[regions, 3] RGB in [0, 1], distinct up to 20; beyond, from a continuous colour map."""
    from matplotlib import colors as mcolors

    if regions <= 20:
        return np.array([mcolors.to_rgb(c) for c in (_TAB10 + _LIGHT)[:regions]])
    import matplotlib

    return np.asarray(matplotlib.colormaps["turbo"](np.linspace(0, 1, regions)))[:, :3]


def from_torch(model, x) -> list[RegionMap]:
    """The region maps of `model` (PyTorch) on input `x`, one per guide, in the order they ran."""
    from drconv.verify import consecutive_groups, same_guide, torch_guides

    _, layers = torch_guides(model.eval(), x)
    return [
        RegionMap(tuple(name for name, _ in group), int(group[0][1].shape[1]), group[0][1][0].float().argmax(0).numpy())
        for group in consecutive_groups(layers, same_guide)
    ]


def runtime_guides(
    path: str | os.PathLike, x: np.ndarray, runtime: str = "ort"
) -> list[tuple[tuple[str, ...], np.ndarray]]:
    """Every guide of the exported file at `path`, run in `runtime` on `x`: (the nodes that read it, the guide).

    The file is run from a copy that also returns its guides; the file itself is never changed."""
    import onnx

    from drconv.verify import consecutive_groups, guide_tensors, runner, with_guide_outputs

    path = Path(path)
    proto = onnx_file.load(path, external_data=True)
    nodes = guide_tensors(proto)
    tensors = list(dict.fromkeys(t for _, t in nodes))
    if proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16:
        x = x.astype(np.float16)
    with tempfile.TemporaryDirectory(prefix="drconv-regions-") as tmp:
        copy = Path(tmp) / path.name
        onnx.save(with_guide_outputs(proto, tensors), str(copy))
        run = runner(copy, runtime, None, tensors)
    values = dict(zip(tensors, run(x, tuple(x.shape)), strict=True))
    return [
        (tuple(n for n, _ in group), values[group[0][1]])
        for group in consecutive_groups(nodes, lambda a, b: a[1] == b[1])
    ]


def from_runtime(path: str | os.PathLike, x: np.ndarray, runtime: str = "ort") -> list[RegionMap]:
    """The region maps of the exported file at `path` in `runtime` (ONNX Runtime or OpenVINO)."""
    return [
        RegionMap(nodes, int(guide.shape[1]), np.argmax(guide[0], axis=0))
        for nodes, guide in runtime_guides(path, x, runtime)
    ]


def _panel_title(names: tuple[str, ...], what: str) -> str:
    """The first layer's name, the others' where they differ from it (a block's two convs), then `what`."""
    shown = names[0]
    if len(names) > 1:
        first = names[0].split(".")
        rest = []
        for name in names[1:]:
            parts = name.split(".")
            common = next((i for i, (a, b) in enumerate(zip(first, parts, strict=False)) if a != b), len(parts) - 1)
            rest.append(".".join(parts[common:]))
        shown += f" (+ {', '.join(rest)})"
    return f"{shown}\n{what}"


def _grid(count: int, title: str, picture: np.ndarray):
    plt = pyplot()
    cols = min(4, count)
    rows = math.ceil(count / cols)
    aspect = picture.shape[0] / picture.shape[1]
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 3.4 * aspect * rows + 1.0), squeeze=False)
    for ax in axes.flat[count:]:
        ax.axis("off")
    fig.suptitle(textwrap.fill(title, width=int(34 * cols)), fontsize=11)  # ~10 characters an inch
    return plt, fig, axes.flat[:count]


def plot(maps: list[RegionMap], picture: np.ndarray, path: str | os.PathLike, title: str, what: str = "-o") -> None:
    """One panel per guide: the picture, each pixel's region over it in its colour, half transparent."""
    from matplotlib.patches import Patch

    if not maps:
        from drconv.errors import DrconvError

        raise DrconvError("the model has no DRConv layer, so no region map to draw")
    height, width = picture.shape[:2]
    plt, fig, axes = _grid(len(maps), title, picture)
    most = max(m.regions for m in maps)
    palette = colors(most)
    for ax, region_map in zip(axes, maps, strict=True):
        h, w = region_map.resolution
        ax.imshow(picture)
        # each map pixel covers its share of the picture (nearest: the map's own blocks)
        ax.imshow(palette[region_map.index], alpha=ALPHA, extent=(0, width, height, 0), interpolation="nearest")
        shares = "  ".join(f"{r}:{100 * s:.0f}%" for r, s in enumerate(region_map.shares) if s > 0)
        ax.set_title(_panel_title(region_map.layers, f"{h}x{w}  {shares}"), fontsize=7)
        ax.axis("off")
    handles = [Patch(color=palette[r], alpha=ALPHA, label=f"region {r}") for r in range(most)]
    fig.legend(handles=handles, loc="lower center", ncol=min(most, 10), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.05, 1, 0.97))
    try:
        save_png(fig, path, what)
    finally:
        plt.close(fig)


@dataclass(frozen=True)
class Disagreement:
    """One guide's pixels that the runtime routes to another region than PyTorch."""

    layers: tuple[str, ...]
    differs: np.ndarray  # [H, W] bool

    @property
    def share(self) -> float:
        return float(self.differs.mean())


def plot_disagreements(
    found: list[Disagreement], picture: np.ndarray | None, path: str | os.PathLike, title: str
) -> None:
    """One panel per guide: the pixels routed differently, in red, over the picture in light grey
    (so that no red of the picture's own is taken for one)."""
    if not found:
        from drconv.errors import DrconvError

        raise DrconvError("the model has no DRConv layer, so no region to compare")
    if picture is None:
        h, w = found[0].differs.shape
        picture = np.full((max(h, 64), max(w, 64), 3), 200, np.uint8)
    grey = picture.astype(np.float32).mean(axis=-1, keepdims=True)
    picture = np.repeat(0.55 * grey + 0.45 * 255, 3, axis=-1).astype(np.uint8)
    height, width = picture.shape[:2]
    plt, fig, axes = _grid(len(found), title, picture)
    for ax, item in zip(axes, found, strict=True):
        h, w = item.differs.shape
        overlay = np.zeros((h, w, 4))
        overlay[item.differs] = (1.0, 0.0, 0.0, 0.85)
        ax.imshow(picture)
        ax.imshow(overlay, extent=(0, width, height, 0), interpolation="nearest")
        count = int(item.differs.sum())
        ax.set_title(
            _panel_title(item.layers, f"{h}x{w}, first image: {count} px differ ({100 * item.share:.2f}%)"), fontsize=7
        )
        ax.axis("off")
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    try:
        save_png(fig, path, "--plot")
    finally:
        plt.close(fig)
