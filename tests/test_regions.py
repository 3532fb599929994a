"""Region maps drawn over pictures (`drconv regions`), where a runtime routes differently
(`drconv verify --plot`), and pictures as inputs (`--image`): every drawing is read back."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper
from PIL import Image

from drconv import image, regions
from drconv.errors import DrconvError
from drconv.nn import DRConv2d, MixtureDRConv2d

DRCONV = shutil.which("drconv") or str(Path(sys.executable).parent / "drconv")
GREY = 128


def run(*args, timeout=300):
    return subprocess.run([DRCONV, *args], capture_output=True, text=True, timeout=timeout)


def _constructed_guide(h: int = 8, w: int = 8) -> torch.Tensor:
    """Left half region 0, right half region 1, the top two rows region 2 (3 regions)."""
    guide = torch.zeros(1, 3, h, w)
    guide[:, 0, :, : w // 2] = 1
    guide[:, 1, :, w // 2 :] = 1
    guide[:, 2, :2, :] = 2
    return guide


class _GuidedNet(torch.nn.Module):
    """One mixture layer routed by a fixed guide, as the paper's blocks route by a computed one."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = MixtureDRConv2d(3, 4, region_num=3, num_basis=2)
        self.register_buffer("guide", _constructed_guide())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x, self.guide.expand(x.shape[0], -1, -1, -1))


def _panel_box(png: Path) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the one panel in a drawing: the rows and columns mostly not white."""
    pixels = np.asarray(Image.open(png).convert("RGB")).astype(int)
    ink = (np.abs(pixels - 255) > 12).any(axis=-1)
    rows, cols = ink.sum(axis=1), ink.sum(axis=0)
    top, bottom = np.flatnonzero(rows > 0.8 * rows.max())[[0, -1]]
    left, right = np.flatnonzero(cols > 0.8 * cols.max())[[0, -1]]
    return top, bottom, left, right


def _at(png: Path, box, fy: float, fx: float) -> np.ndarray:
    top, bottom, left, right = box
    pixels = np.asarray(Image.open(png).convert("RGB")).astype(float)
    return pixels[round(top + fy * (bottom - top)), round(left + fx * (right - left))]


def test_a_constructed_guide_is_drawn_where_its_regions_are(tmp_path):
    maps = regions.from_torch(_GuidedNet(), torch.randn(1, 3, 8, 8))
    assert len(maps) == 1 and maps[0].layers == ("layer",) and maps[0].resolution == (8, 8)
    assert maps[0].shares == pytest.approx([24 / 64, 24 / 64, 16 / 64])
    picture = np.full((160, 160, 3), GREY, np.uint8)
    out = tmp_path / "regions.png"
    regions.plot(maps, picture, out, "constructed")
    box = _panel_box(out)
    palette = regions.colors(3) * 255
    blended = regions.ALPHA * palette + (1 - regions.ALPHA) * GREY  # what a half-transparent region looks like
    for (fy, fx), region in (((0.7, 0.25), 0), ((0.7, 0.75), 1), ((0.1, 0.5), 2), ((0.9, 0.1), 0), ((0.3, 0.9), 1)):
        seen = _at(out, box, fy, fx)
        distances = np.abs(blended - seen).sum(axis=1)
        assert distances.argmin() == region and distances[region] < 12, (fy, fx, seen, blended)


def test_a_shared_guide_is_one_panel_naming_its_layers():
    class Shared(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = MixtureDRConv2d(3, 3, region_num=3, num_basis=2)
            self.b = MixtureDRConv2d(3, 3, region_num=3, num_basis=2)
            self.register_buffer("guide", _constructed_guide())

        def forward(self, x):
            return self.b(self.a(x, self.guide), self.guide)

    maps = regions.from_torch(Shared(), torch.randn(1, 3, 8, 8))
    assert [m.layers for m in maps] == [("a", "b")]
    assert "(+ b)" in regions._panel_title(maps[0].layers, "")


@pytest.fixture(scope="module")
def one_layer_export(tmp_path_factory):
    """A one-DRConv2d model and its custom export, traced at 1x3x16x16 (dynamic axes)."""
    from drconv.export import to_onnx

    torch.manual_seed(0)
    net = torch.nn.Sequential(DRConv2d(3, 4, 3, region_num=4, padding=1)).eval()
    path = tmp_path_factory.mktemp("regions") / "one.onnx"
    to_onnx(net, torch.randn(1, 3, 16, 16), path)
    return net, path


def _perturbed(path: Path, out: Path, pixels: list[tuple[int, int]], shape) -> None:
    """The export with a large value added to guide channel 0 at `pixels` before the region conv reads it."""
    proto = onnx.load(str(path))
    node = next(n for n in proto.graph.node if n.domain == "drconv")
    guide = node.input[2]
    bump = np.zeros((1, *shape), np.float32)
    for y, x in pixels:
        bump[0, 0, y, x] = 1e4
    proto.graph.initializer.append(numpy_helper.from_array(bump, "bump"))
    proto.graph.node.insert(0, helper.make_node("Identity", ["bump"], ["bump_"]))
    index = list(proto.graph.node).index(node)
    proto.graph.node.insert(index, helper.make_node("Add", [guide, "bump_"], ["perturbed_guide"]))
    node.input[2] = "perturbed_guide"
    onnx.save(proto, str(out))


def test_verify_plot_marks_exactly_the_pixels_routed_differently(one_layer_export, tmp_path):
    from drconv.verify import verify_onnx

    net, path = one_layer_export
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    ours = regions.from_torch(net, x)[0].index
    pixels = [(y, x_) for y, x_ in ((2, 3), (7, 7), (12, 1), (15, 15), (0, 10)) if ours[y, x_] != 0]
    assert len(pixels) >= 3
    bad = tmp_path / "perturbed.onnx"
    _perturbed(path, bad, pixels, (4, 16, 16))
    report = verify_onnx(bad, net, batch=1, size=16, inputs=x.numpy(), min_agreement=0.0)
    ((layers, mine, theirs),) = report.region_maps
    assert layers == ("0",)
    assert sorted(zip(*np.nonzero(mine != theirs), strict=True)) == sorted(pixels)
    out = tmp_path / "differs.png"
    found = [regions.Disagreement(layers, mine != theirs)]
    regions.plot_disagreements(found, np.full((160, 160, 3), GREY, np.uint8), out, "perturbed")
    box = _panel_box(out)
    for y in range(16):
        for x_ in range(16):
            r, g, b = _at(out, box, (y + 0.5) / 16, (x_ + 0.5) / 16)
            red = r > 200 and g < 80 and b < 80
            assert red == ((y, x_) in pixels), (y, x_, (r, g, b))


def test_verify_plot_on_the_command_line_over_a_picture(one_layer_export, tmp_path):
    net, path = one_layer_export
    weights = tmp_path / "w.pt"
    torch.save(net.state_dict(), weights)
    (tmp_path / "onelayer.py").write_text(
        "import torch\nfrom drconv.nn import DRConv2d\n"
        "def build():\n    return torch.nn.Sequential(DRConv2d(3, 4, 3, region_num=4, padding=1))\n"
    )
    picture = tmp_path / "p.png"
    Image.fromarray(np.full((40, 50, 3), 90, np.uint8)).save(picture)
    out = tmp_path / "verify.png"
    result = subprocess.run(
        [DRCONV, "verify", str(path), "-m", "onelayer:build", "-c", str(weights), "--image", str(picture),
         "--plot", str(out), "--size", "16", "--batch", "1"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"wrote {out}" in result.stdout and Image.open(out).format == "PNG"
    # no pixel differs here: nothing red
    pixels = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert not ((pixels[..., 0] > 200) & (pixels[..., 1] < 80) & (pixels[..., 2] < 80)).any()


def test_image_inputs_are_resized_and_normalised(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    png, jpeg, grey = tmp_path / "a.png", tmp_path / "a.jpg", tmp_path / "g.png"
    Image.fromarray(rgb).save(png)
    yy, xx = np.mgrid[0:20, 0:30]
    smooth = np.stack([yy * 10, xx * 8, 255 - yy * 5 - xx * 3], axis=-1).astype(np.uint8)
    Image.fromarray(smooth).save(jpeg, quality=95)
    Image.fromarray(smooth).save(tmp_path / "smooth.png")
    Image.fromarray(rgb[..., 0]).save(grey)
    # at its own size (no resampling), by hand: (v / 255 - mean) / std, channel-first, the batch repeated
    x = image.load(png, (2, 3, 20, 30))
    mean, std = np.array(image.IMAGENET_MEAN), np.array(image.IMAGENET_STD)
    by_hand = ((rgb / 255.0 - mean) / std).transpose(2, 0, 1)
    assert x.shape == (2, 3, 20, 30) and x.dtype == np.float32
    np.testing.assert_allclose(x[0], by_hand, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(x[0], x[1])
    custom = image.load(png, (1, 3, 20, 30), mean=(0.5,), std=(0.25,))
    np.testing.assert_allclose(custom[0], ((rgb / 255.0 - 0.5) / 0.25).transpose(2, 0, 1), rtol=1e-5, atol=1e-5)
    # a JPEG decodes to nearly the picture its PNG holds (a few levels of 255 apart)
    np.testing.assert_allclose(
        image.load(jpeg, (1, 3, 20, 30)), image.load(tmp_path / "smooth.png", (1, 3, 20, 30)), atol=0.3
    )
    assert image.load(jpeg, (1, 3, 7, 9)).shape == (1, 3, 7, 9)
    # a grey picture: replicated to RGB, or one channel with the mean of ImageNet's
    as_rgb = image.load(grey, (1, 3, 20, 30))
    np.testing.assert_allclose(as_rgb[0, 0] * std[0] + mean[0], rgb[..., 0] / 255.0, atol=1e-5)
    np.testing.assert_allclose(as_rgb[0, 1] * std[1] + mean[1], rgb[..., 0] / 255.0, atol=1e-5)
    one = image.load(grey, (1, 1, 20, 30))
    np.testing.assert_allclose(one[0, 0], (rgb[..., 0] / 255.0 - mean.mean()) / std.mean(), rtol=1e-5, atol=1e-5)


def test_bad_images_are_one_line(tmp_path):
    text = tmp_path / "notes.jpg"
    text.write_text("not a picture")
    with pytest.raises(DrconvError, match="not a picture Pillow can read"):
        image.load(text, (1, 3, 8, 8))
    with pytest.raises(DrconvError, match="no such file"):
        image.load(tmp_path / "missing.png", (1, 3, 8, 8))
    with pytest.raises(DrconvError, match="--mean has 2 values"):
        image.load(_tiny_png(tmp_path), (1, 3, 8, 8), mean=(0.1, 0.2))
    for args in (
        ["summary", "--image", str(text)],
        ["summary", "--image", str(tmp_path / "missing.png")],
        ["regions", str(text), "-o", str(tmp_path / "r.png")],
        ["summary", "--mean", "0.5"],
        ["summary", "--image", str(_tiny_png(tmp_path)), "--mean", "a,b,c"],
    ):
        result = run(*args, timeout=120)
        assert result.returncode in (1, 2), (args, result.stderr)
        assert result.stderr.startswith("error:") and result.stderr.strip().count("\n") == 0, (args, result.stderr)


def _tiny_png(folder: Path) -> Path:
    path = folder / "tiny.png"
    Image.fromarray(np.full((8, 8, 3), 100, np.uint8)).save(path)
    return path


def test_regions_command_draws_and_writes_json(tmp_path):
    picture = _tiny_png(tmp_path)
    out, doc = tmp_path / "regions.svg", tmp_path / "regions.json"
    result = run("regions", str(picture), "-o", str(out), "-m", "drconv-tiny", "--input-shape", "1,3,64,64",
                 "--json", str(doc))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert out.read_text().lstrip().startswith("<?xml") and "<svg" in out.read_text()  # the format from the name
    data = json.loads(doc.read_text())
    assert data["input_shape"] == [1, 3, 64, 64] and len(data["guides"]) == 3
    for guide in data["guides"]:
        assert sum(guide["shares"]) == pytest.approx(1.0) and len(guide["shares"]) == guide["regions"]
    assert [g["resolution"] for g in data["guides"]] == [[16, 16], [8, 8], [4, 4]]


def test_regions_of_an_export_match_pytorchs(one_layer_export, tmp_path):
    net, path = one_layer_export
    x = image.load(_tiny_png(tmp_path), (1, 3, 16, 16))
    ours = regions.from_torch(net, torch.from_numpy(x))
    theirs = regions.from_runtime(path, x)
    assert [m.resolution for m in theirs] == [(16, 16)]
    np.testing.assert_array_equal(ours[0].index, theirs[0].index)
    out = tmp_path / "export.png"
    result = run("regions", str(_tiny_png(tmp_path)), "-o", str(out), "-m", str(path), "--input-shape", "1,3,16,16")
    assert result.returncode == 0, result.stderr and Image.open(out).format == "PNG"


def test_drawings_follow_the_file_rules(tmp_path, monkeypatch):
    picture = _tiny_png(tmp_path)
    existing = tmp_path / "keep.png"
    existing.write_bytes(b"old")
    for target, message in (
        (str(tmp_path / "drawing.xyz"), "no image format"),
        (str(tmp_path / "nodir" / "r.png"), "does not exist"),
    ):
        result = run("regions", str(picture), "-o", target, "-m", "drconv-tiny", "--input-shape", "1,3,32,32")
        assert result.returncode == 1 and message in result.stderr, (target, result.stderr)
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    result = run("regions", str(picture), "-o", str(fifo), "-m", "drconv-tiny", "--input-shape", "1,3,32,32")
    assert result.returncode == 1 and "not a regular file" in result.stderr
    # a failure while drawing leaves the old file as it was, and no temporary file beside it
    import matplotlib.figure

    def broken(self, fname, **kwargs):
        Path(fname).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", broken)
    maps = [regions.RegionMap(("a",), 2, np.zeros((4, 4), np.int64))]
    with pytest.raises(DrconvError, match="No space left on device"):
        regions.plot(maps, np.zeros((8, 8, 3), np.uint8), existing, "none")
    assert existing.read_bytes() == b"old"
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_summary_and_benchmark_take_the_picture(tmp_path):
    from drconv.models import load_model

    yy, xx = np.mgrid[0:48, 0:64]
    picture = tmp_path / "gradient.png"
    Image.fromarray(np.stack([yy * 5, xx * 4, 255 - xx * 3], axis=-1).astype(np.uint8)).save(picture)
    result = run("summary", "-m", "drconv-tiny", "--input-shape", "1,3,64,64", "--image", str(picture), "--json")
    assert result.returncode == 0, result.stderr
    shares = [layer["region_share"] for layer in json.loads(result.stdout)["drconv_layers"]]
    x = torch.from_numpy(image.load(picture, (1, 3, 64, 64)))
    expected = [m.shares for m in regions.from_torch(load_model("drconv-tiny"), x)]
    np.testing.assert_allclose(np.concatenate(shares), np.concatenate(expected), atol=1e-9)
    noise = run("summary", "-m", "drconv-tiny", "--input-shape", "1,3,64,64", "--json")
    random_shares = np.concatenate([layer["region_share"] for layer in json.loads(noise.stdout)["drconv_layers"]])
    assert not np.allclose(random_shares, np.concatenate(expected))
    out = tmp_path / "bench.json"
    result = run("benchmark", "drconv-tiny", "--backend", "torch,ort-custom", "--input-shape", "1,3,64,64",
                 "--image", str(picture), "--iters", "3", "--warmup", "1", "--json", str(out))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert [r["backend"] for r in json.loads(out.read_text())["results"]] == ["torch", "ort-custom"]
