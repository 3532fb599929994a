"""Backends for exported files: .onnx in ONNX Runtime with no torch, .engine in TensorRT.

A machine that only runs exported models (numpy, onnx, onnxruntime) times them through
this module; torch is imported only for TensorRT engines, whose inputs live on the GPU.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from drconv.benchmark.timing import Backend, Prepared
from drconv.errors import DrconvError

__all__ = ["ENGINE_SUFFIXES", "ort_session", "prepare_files"]

ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


def ort_session(path: Path, threads: int):
    """An ONNX Runtime session on the CPU with drconv's library, as the benchmark times it."""
    from drconv.runtime.ort import session

    # ONNX Runtime's defaults (idle workers spin a while): timing.alternate pauses
    # between backends so that the spinning never overlaps another backend's calls.
    return session(path, threads=threads)


def _fill(dims: list[int | None], shape: tuple[int, ...], where: str) -> tuple[int, ...]:
    """The requested shape where the file's axes are symbolic; its fixed axes must agree."""
    for axis, (fixed, want) in enumerate(zip(dims, shape, strict=True)):
        if fixed is not None and fixed != want:
            raise DrconvError(
                f"input shape {'x'.join(map(str, shape))} does not fit {where}: axis {axis} is fixed to {fixed} "
                f"(its input is {['?' if d is None else d for d in dims]}); pass a fitting --input-shape / --batch"
            )
    return shape


def _onnx_backend(path: Path, shape: tuple[int, ...], threads: int) -> Backend:
    from drconv.runtime.ort import image_input

    name, dims = image_input(path)
    x = np.random.default_rng(0).standard_normal(_fill(dims, shape, str(path)), dtype=np.float32)
    sess = ort_session(path, threads)
    feed = {name: x}
    run: Callable[[], object] = lambda: sess.run(None, feed)  # noqa: E731
    _first_run(run, path)
    return Backend(f"ort:{path.name}", run, items=shape[0])


def _engine_backend(path: Path, shape: tuple[int, ...], device: str) -> Backend:
    import torch

    from drconv.runtime import trt

    if device != "cuda":
        raise DrconvError(f"{path} is a TensorRT engine: it runs only with --device cuda")
    engine = trt.load_engine(path)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).cuda()
    runner = trt.EngineRunner(engine, {trt.engine_input_name(engine): x})
    _first_run(runner, path)
    return Backend(f"trt:{path.name}", runner, items=shape[0], cuda=True)


def prepare_files(paths: list[Path], shape: tuple[int, ...], device: str, threads: int) -> Prepared:
    """Backends for exported files: .onnx in ONNX Runtime (CPU), .engine in TensorRT (plugin loaded first)."""
    prepared = Prepared(
        config={"mode": "files", "device": device, "files": [str(p) for p in paths], "input_shape": list(shape)}
    )
    for path in paths:
        if not path.is_file():
            raise DrconvError(f"{path}: no such file")
        if path.suffix == ".onnx":
            prepared.backends.append(_onnx_backend(path, shape, threads))
        elif path.suffix in ENGINE_SUFFIXES:
            prepared.backends.append(_engine_backend(path, shape, device))
        else:
            raise DrconvError(f"{path}: not an .onnx or .engine file (or give a model name instead)")
    return prepared


def _first_run(run: Callable[[], object], path: Path) -> None:
    try:
        run()
    except DrconvError:
        raise
    except Exception as exc:  # the runtime's own message, first line: the user's file or shape
        raise DrconvError(f"{path} failed on its first run: {str(exc).strip().splitlines()[0]}") from None
