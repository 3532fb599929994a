"""Backends for exported files: .onnx in ONNX Runtime or OpenVINO with no torch, .engine in TensorRT.

A machine that only runs exported models (numpy, onnx, onnxruntime) times them through
this module; torch is imported only for TensorRT engines, whose inputs live on the GPU.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from drconv.benchmark.timing import Backend, Prepared
from drconv.errors import DrconvError

__all__ = [
    "ENGINE_SUFFIXES",
    "FILE_BACKENDS",
    "TOLERANCE",
    "as_numpy",
    "check",
    "ort_session",
    "ov_compiled",
    "prepare_files",
]

ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
# |backend - reference| / max|reference|: float32 sums in another order; on CUDA, TF32 convs.
TOLERANCE = {"cpu": 1e-3, "cuda": 1e-2}


def as_numpy(out) -> np.ndarray:
    """A backend's (first) output as float32 numpy: a runtime's list, OpenVINO's OVDict, an array or a torch tensor."""
    if hasattr(out, "to_tuple"):  # openvino.OVDict, without importing openvino here
        out = out.to_tuple()
    if isinstance(out, (list, tuple)):
        out = out[0]
    if hasattr(out, "detach"):  # a torch tensor, without importing torch here
        return out.detach().float().cpu().numpy()
    return np.asarray(out, dtype=np.float32)


def relative_error(out, reference: np.ndarray) -> float:
    """max |out - reference| / max |reference|; inf where the shapes differ."""
    actual = as_numpy(out)
    if actual.shape != reference.shape:
        return math.inf
    scale = max(float(np.abs(reference).max(initial=0.0)), 1e-12)
    return float(np.abs(actual.astype(np.float64) - reference).max(initial=0.0)) / scale


def check(
    prepared: Prepared,
    name: str,
    run: Callable[[], object],
    reference: np.ndarray,
    device: str,
    mismatch: str = "",
    remedy: str = "its timing would mean nothing",
) -> None:
    """Record `name`'s error against the reference; beyond TOLERANCE it is a DrconvError (nothing is timed)
    saying `mismatch` (default: the backend disagrees with the reference), the error, and `remedy`."""
    error = relative_error(run(), reference)
    if not error <= TOLERANCE[device]:  # NaN fails too
        mismatch = mismatch or f"backend {name} disagrees with the reference"
        raise DrconvError(f"{mismatch} by {error:.3g} (max |difference| / max |reference|); {remedy}")
    prepared.errors[name] = error


def ort_session(path: Path, threads: int):
    """An ONNX Runtime session on the CPU with drconv's library, as the benchmark times it."""
    from drconv.runtime.ort import session

    # ONNX Runtime's defaults (idle workers spin a while): timing.alternate pauses
    # between backends so that the spinning never overlaps another backend's calls.
    return session(path, threads=threads)


def ov_compiled(path: Path, threads: int, extension: bool = True):
    """An OpenVINO compiled model on the CPU (float32, `threads` inference threads), as the benchmark times it."""
    from drconv.runtime import openvino

    return openvino.compile(path, threads=threads, extension=extension)


def _fill(dims: list[int | None], shape: tuple[int, ...], where: str) -> tuple[int, ...]:
    """The requested shape where the file's axes are symbolic; its fixed axes must agree."""
    for axis, (fixed, want) in enumerate(zip(dims, shape, strict=True)):
        if fixed is not None and fixed != want:
            raise DrconvError(
                f"input shape {'x'.join(map(str, shape))} does not fit {where}: axis {axis} is fixed to {fixed} "
                f"(its input is {['?' if d is None else d for d in dims]}); pass a fitting --input-shape / --batch"
            )
    return shape


def fitted_shape(path: Path, shape: tuple[int, ...]) -> tuple[int, ...]:
    """`shape` for the image input of the .onnx file `path`: its symbolic axes take it, its fixed ones must agree."""
    from drconv.runtime.ort import image_input

    return _fill(image_input(path)[1], shape, str(path))


def _onnx_backend(
    path: Path,
    shape: tuple[int, ...],
    threads: int,
    prepared: Prepared,
    reference: Reference | None,
    runtime: str = "ort",
    picture: Picture | None = None,
) -> Backend:
    from drconv.runtime.ort import image_input, needs_custom_ops

    name = image_input(path)[0]
    fitted = fitted_shape(path, shape)
    x = picture(fitted) if picture else np.random.default_rng(0).standard_normal(fitted, dtype=np.float32)
    run: Callable[[], object]
    if runtime == "ov":
        request = ov_compiled(path, threads, extension=needs_custom_ops(path)).create_infer_request()
        run = lambda: request.infer([x], share_inputs=True)  # noqa: E731
    else:
        sess = ort_session(path, threads)
        feed = {name: x}
        run = lambda: sess.run(None, feed)  # noqa: E731
    _first_run(run, path)
    backend = Backend(f"{runtime}:{path.name}", run, items=shape[0])
    if reference is not None:
        what, model = reference
        expected = as_numpy(model(x)).astype(np.float64)
        mismatch = f"{path} is not {what}: their outputs differ"
        check(prepared, backend.name, run, expected, "cpu", mismatch, "pass --no-check to time it anyway")
    return backend


def _engine_backend(path: Path, shape: tuple[int, ...], device: str, picture: Picture | None = None) -> Backend:
    import torch

    from drconv.runtime import trt

    if device != "cuda":
        raise DrconvError(f"{path} is a TensorRT engine: it runs only with --device cuda")
    engine = trt.load_engine(path)
    x = (
        torch.from_numpy(picture(shape)) if picture else torch.randn(shape, generator=torch.Generator().manual_seed(0))
    ).cuda()
    runner = trt.EngineRunner(engine, {trt.engine_input_name(engine): x})
    _first_run(runner, path)
    return Backend(f"trt:{path.name}", runner, items=shape[0], cuda=True)


# A model the .onnx files must agree with: its name, and a function from an input to its output.
Reference = tuple[str, Callable[[np.ndarray], object]]
# --image: the input of a given shape (drconv.image.load); without it, seeded random noise.
Picture = Callable[[tuple[int, ...]], np.ndarray]


# The runtimes an .onnx file can be timed in (--backend): ONNX Runtime (the default) and OpenVINO.
FILE_BACKENDS = ("ort", "ov")


def prepare_files(
    paths: list[Path],
    shape: tuple[int, ...],
    device: str,
    threads: int,
    reference: Reference | None = None,
    runtimes: tuple[str, ...] = ("ort",),
    picture: Picture | None = None,
) -> Prepared:
    """Backends for exported files: .onnx in each of `runtimes` (FILE_BACKENDS, CPU), .engine in
    TensorRT (plugin loaded first).

    With `reference`, each .onnx file's output on its input is checked against the model's
    first (the same tolerance as every backend), and a file that differs is refused.
    """
    prepared = Prepared(
        config={"mode": "files", "device": device, "files": [str(p) for p in paths], "input_shape": list(shape)}
    )
    for path in paths:
        if not path.is_file():
            raise DrconvError(f"{path}: no such file")
        if path.suffix == ".onnx":
            for runtime in runtimes:
                prepared.backends.append(_onnx_backend(path, shape, threads, prepared, reference, runtime, picture))
        elif path.suffix in ENGINE_SUFFIXES:
            prepared.backends.append(_engine_backend(path, shape, device, picture))
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
