"""OpenVINO compiled models for exported DRConv models, with our extension library added.

`drconv.get_library_path("openvino")` is the library for your own `Core.add_extension`; here
`compile(path)` does that, reads the ONNX file (RegionConv2d nodes become the extension's
operation, MixtureRegionConv2d nodes OpenVINO's MatMul feeding it) and compiles it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from drconv import contract, onnx_file
from drconv.errors import DrconvError
from drconv.export import functions
from drconv.libraries import OPENVINO_VERSION, PLUGIN_FILES, require_plugin

__all__ = ["PRECISIONS", "compile", "core", "extension_library", "one_line"]

# The CPU plugin's inference precisions; OpenVINO's default is bf16 on CPUs that have it (AMX,
# AVX512-BF16), which moves outputs by ~1e-2: drconv compiles in f32 unless told.
PRECISIONS = ("f32", "bf16", "f16")


def _openvino() -> Any:
    try:
        import openvino
    except ImportError:
        raise DrconvError(f"OpenVINO is not installed; pip install openvino=={OPENVINO_VERSION}") from None
    return openvino


def extension_library() -> Path:
    """The built libdrconv_openvino.so, or a DrconvError saying how to build it."""
    return require_plugin("openvino")


def one_line(exc: BaseException) -> str:
    """OpenVINO's multi-line exception text cut to the line that says what is wrong."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    ours = [line for line in lines if "RegionConv2d:" in line]  # the extension's own messages
    if ours:
        return ours[0]
    frames = ("Exception from", "Check ", "While validating", "FrontEnd API", "Model wasn't", "Summary", "-- ")
    said = [line for line in lines if not line.startswith(frames)]
    return (said or lines or [type(exc).__name__])[0]


def core(extension: bool = True) -> Any:
    """An openvino.Core with the drconv extension added (without, when `extension` is False).

    Keep it as long as any model it reads: the extension's code lives in the Core's library.
    """
    ov = _openvino()
    new = ov.Core()
    if extension:
        library = extension_library()
        try:
            new.add_extension(str(library))
        except Exception as exc:
            raise DrconvError(f"OpenVINO cannot load {library}: {one_line(exc)}") from None
    return new


def compile(
    path: str | os.PathLike,
    device: str = "CPU",
    threads: int | None = None,
    precision: str | None = "f32",
    extension: bool = True,
    profile: bool = False,
) -> Any:
    """An openvino.CompiledModel for the ONNX file `path`, with the drconv extension added.

    Args:
        path: an .onnx file (custom or portable export).
        device: the OpenVINO device ("CPU"; the extension's operation runs on the CPU).
        threads: inference threads (INFERENCE_NUM_THREADS; default: OpenVINO's).
        precision: the CPU plugin's inference precision, one of PRECISIONS, or None for
            OpenVINO's default (bf16 where the CPU has it). The extension runs float32.
        extension: add the extension. False reads the graph without it: a portable graph, or a
            custom one whose model-local functions (which OpenVINO's ONNX frontend ignores)
            are inlined first, so its drconv nodes run as standard operations.
        profile: count every operation's time (PERF_COUNT), for InferRequest.profiling_info.
    """
    path = Path(path)
    proto = onnx_file.load(path)
    # OpenVINO's ONNX frontend shows a conversion extension no version of its domain: checked here.
    contract.check_versions(proto, str(path))
    functions.check(proto, str(path))
    if threads is not None and threads < 1:
        raise DrconvError(f"threads must be >= 1, got {threads}")
    if precision is not None and precision not in PRECISIONS:
        raise DrconvError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    ov_core = core(extension)
    try:
        if not extension and functions.present(proto):
            model = ov_core.read_model(functions.inline(proto).SerializeToString(), b"")
        else:
            model = ov_core.read_model(str(path))
    except Exception as exc:
        # "No conversion rule found for operations: drconv.RegionConv2d"
        if f"{contract.DOMAIN}." in str(exc) and "No conversion rule" in str(exc):
            raise DrconvError(
                f"OpenVINO cannot read {path}: its drconv nodes need the extension {PLUGIN_FILES['openvino']} "
                "(core.add_extension(drconv.get_library_path('openvino')), or drconv.runtime.openvino.compile)"
            ) from None
        raise DrconvError(f"OpenVINO cannot read {path}: {one_line(exc)}") from None
    config: dict[str, Any] = {}
    if threads is not None:
        config["INFERENCE_NUM_THREADS"] = threads
    if precision is not None and device.upper().startswith("CPU"):
        config["INFERENCE_PRECISION_HINT"] = precision
    if profile:
        config["PERF_COUNT"] = True
    try:
        compiled = ov_core.compile_model(model, device, config)
    except Exception as exc:
        raise DrconvError(f"OpenVINO cannot compile {path} for {device}: {one_line(exc)}") from None
    # The Core holds the extension library, whose code the compiled model's operations run:
    # it must live as long as they do (a model read by a Core that is gone crashes when used).
    compiled._drconv_core = ov_core
    return compiled
