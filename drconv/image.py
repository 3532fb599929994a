"""A real picture as a model's input (`--image`): read with Pillow, resized to the input size,
scaled to [0, 1] and normalised per channel (ImageNet's mean and std unless given), as
torchvision's `Resize` + `ToTensor` + `Normalize` would; a batch repeats the picture.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from drconv.errors import DrconvError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _open(path: str | os.PathLike):
    """The picture in `path` as a Pillow image, or one line saying why not."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise DrconvError("--image needs Pillow, which is not installed: pip install 'drconv[plot]'") from None
    path = Path(path)
    if not path.is_file():
        raise DrconvError(f"--image {path}: no such file")
    try:
        image = Image.open(path)
        image.load()
    except UnidentifiedImageError:
        raise DrconvError(f"--image {path} is not a picture Pillow can read (JPEG, PNG, ...)") from None
    except OSError as exc:
        raise DrconvError(f"--image {path} cannot be read: {exc}") from None
    return image


def _channels(values: tuple[float, ...] | None, default: tuple[float, ...], channels: int, flag: str) -> np.ndarray:
    values = tuple(default if values is None else values)
    if len(values) == 1:
        values = values * channels
    if channels == 1 and len(values) == 3 and values == default:
        values = (float(np.mean(values)),)
    if len(values) != channels:
        raise DrconvError(f"{flag} has {len(values)} values; the input has {channels} channels")
    return np.asarray(values, np.float32).reshape(channels, 1, 1)


def load(
    path: str | os.PathLike,
    shape: tuple[int, ...],
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
) -> np.ndarray:
    """The picture as a float32 input of `shape` (N, C, H, W): resized to H x W (bilinear),
    in [0, 1], then (x - mean) / std per channel; C is 3 (RGB) or 1 (grey)."""
    n, c, h, w = shape
    if c not in (1, 3):
        raise DrconvError(f"--image makes 1 (grey) or 3 (RGB) channels; the input has {c}")
    m = _channels(mean, IMAGENET_MEAN, c, "--mean")
    s = _channels(std, IMAGENET_STD, c, "--std")
    if np.any(s == 0):
        raise DrconvError("--std must not be 0")
    from PIL import Image

    picture = _open(path).convert("RGB" if c == 3 else "L").resize((w, h), Image.Resampling.BILINEAR)
    pixels = np.asarray(picture, np.float32).reshape(h, w, c).transpose(2, 0, 1) / 255.0
    x = (pixels - m) / s
    return np.ascontiguousarray(np.broadcast_to(x, (n, c, h, w)), dtype=np.float32)


def rgb(path: str | os.PathLike, size: tuple[int, int] | None = None) -> np.ndarray:
    """The picture as uint8 RGB [H, W, 3] to draw on, at (height, width) `size` if given."""
    from PIL import Image

    picture = _open(path).convert("RGB")
    if size is not None:
        picture = picture.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    return np.asarray(picture, np.uint8)


def parse_floats(text: str | None, flag: str) -> tuple[float, ...] | None:
    """'0.5,0.5,0.5' -> (0.5, 0.5, 0.5); None stays None."""
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise DrconvError(f"{flag} {text!r}: give numbers separated by commas, e.g. 0.485,0.456,0.406") from None
