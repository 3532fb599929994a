"""TensorRT engines for exported DRConv models: build one from ONNX with our plugin, load one back.

Written against the TensorRT 10 Python API (and 11, which builds strongly typed networks
only). TensorRT cannot be installed on the machines this project is developed on, so the
paths that need it run only where a user has it; without it every entry point raises
TensorRTMissing with the install command.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from drconv import __version__, contract, defaults, onnx_file
from drconv._atomic import atomic_path, check_writable, write_bytes
from drconv.errors import DrconvError
from drconv.info import gpu
from drconv.libraries import require_plugin

__all__ = [
    "BuildOptions",
    "EngineRunner",
    "TensorRTMissing",
    "build_engine",
    "engine_input_name",
    "for_tensorrt",
    "load_engine",
    "parse_shape_spec",
    "plugin_library",
]

INSTALL_HINT = "pip install tensorrt (TensorRT >= 10, with an NVIDIA GPU and driver)"


class TensorRTMissing(DrconvError):
    """TensorRT's Python package is not importable here (exit code 2: the environment, not the input)."""

    exit_code = 2


def _tensorrt():
    try:
        import tensorrt  # type: ignore[import-not-found]
    except ImportError:
        raise TensorRTMissing(f"TensorRT is not installed: {INSTALL_HINT}") from None
    return tensorrt


def _major(trt) -> int:
    return int(str(trt.__version__).split(".")[0])


def plugin_library() -> Path:
    """The built libdrconv_tensorrt.so, or a DrconvError saying how to build it."""
    return require_plugin("tensorrt")


def _registered(registry) -> bool:
    """Whether our creator is in TensorRT's registry already (loaded earlier in this process)."""
    find = getattr(registry, "get_creator", None)  # TensorRT >= 10: V1 and V3 creators alike
    if find is None:
        return False
    try:
        return find(contract.REGION_CONV.name, contract.PLUGIN_VERSION, "") is not None
    except Exception:  # a registry that raises for an unknown name rather than returning None
        return False


def _load_plugin(trt) -> Path:
    """Load libdrconv_tensorrt.so into TensorRT's registry once per process.

    IPluginRegistry::loadLibrary fails when any of a library's creators is registered
    already, so a second build or load in one process would fail if it loaded again.
    """
    library = plugin_library()
    registry = trt.get_plugin_registry()
    if _registered(registry):
        return library
    if not registry.load_library(str(library)):
        raise DrconvError(f"TensorRT could not load the plugin library {library}")
    return library


def parse_shape_spec(text: str) -> tuple[str, tuple[int, ...]]:
    """'input:1x3x224x224' -> ('input', (1, 3, 224, 224))."""
    name, sep, dims = text.rpartition(":")
    try:
        shape = tuple(int(d) for d in dims.lower().split("x"))
    except ValueError:
        shape = ()
    if not sep or not name or not shape or min(shape) < 1:
        raise DrconvError(f"shape {text!r} must look like input:1x3x224x224 (input name, then positive sizes)")
    return name, shape


@dataclass
class BuildOptions:
    fp16: bool = False
    min_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    opt_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    max_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    workspace_mb: int = defaults.WORKSPACE_MB
    timing_cache: Path | None = None


def _onnx_inputs(proto: onnx.ModelProto) -> dict[str, tuple[int | None, ...]]:
    initializers = {t.name for t in proto.graph.initializer}
    return {
        value.name: tuple(d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim)
        for value in proto.graph.input
        if value.name not in initializers
    }


def _profile_shapes(inputs: dict[str, tuple[int | None, ...]], options: BuildOptions) -> dict[str, tuple]:
    """(min, opt, max) per input: from the options, or the ONNX input's own shape when it is static."""
    for given in (options.min_shapes, options.opt_shapes, options.max_shapes):
        unknown = set(given) - set(inputs)
        if unknown:
            raise DrconvError(f"no input named {sorted(unknown)[0]!r}; the model's inputs: {', '.join(inputs)}")
    shapes = {}
    for name, dims in inputs.items():
        chosen = [options.min_shapes.get(name), options.opt_shapes.get(name), options.max_shapes.get(name)]
        if any(c is None for c in chosen):
            if None in dims and any(c is None for c in chosen):
                raise DrconvError(
                    f"input {name} has dynamic axes {list(dims)}: give --min-shape, --opt-shape and --max-shape "
                    f"{name}:NxCxHxW"
                )
            chosen = [c if c is not None else dims for c in chosen]
        low, opt, high = chosen
        if not (len(low) == len(opt) == len(high) == len(dims)):
            raise DrconvError(f"input {name} has rank {len(dims)}; the given shapes must have {len(dims)} sizes")
        for axis, static in enumerate(dims):
            if static is not None and not low[axis] == opt[axis] == high[axis] == static:
                raise DrconvError(f"input {name} axis {axis} is fixed to {static} in the ONNX file")
            if not low[axis] <= opt[axis] <= high[axis]:
                raise DrconvError(f"input {name} axis {axis}: need min <= opt <= max, got {low}, {opt}, {high}")
        shapes[name] = (tuple(low), tuple(opt), tuple(high))
    return shapes


def _gpu() -> tuple[str | None, str | None]:
    try:
        found = gpu()
    except Exception:  # the sidecar is informative; a broken torch CUDA must not fail the build
        found = None
    return (found["name"], found["compute_capability"]) if found else (None, None)


def _sidecar(engine: Path) -> Path:
    return engine.with_name(engine.name + ".json")


def for_tensorrt(proto: onnx.ModelProto) -> bool:
    """What TensorRT's ONNX parser must see, in place; whether anything changed.

    Version-2+ region-conv nodes lowered to version 1 (what the plugin runs), and no drconv
    functions: the parser imports a model-local function of a node's name before it tries a
    plugin (onnx-tensorrt's ModelImporter: built-in importer, local function, plugin; only
    TensorRT 10.15+ with plugin override tries the plugin first), so with them left in the
    engine would run the standard-op body at R times the work.
    """
    from drconv.export import functions, rewrite

    stripped = functions.strip(proto)  # first, so that to_v1 has no functions to write again
    return bool(stripped + rewrite.to_v1(proto, contract.DOMAIN, contract.REGION_CONV.name))


def _parse(parser, onnx_path: Path) -> bool:
    """Parse the file as `for_tensorrt` leaves it."""
    proto = onnx_file.load(onnx_path)
    if for_tensorrt(proto):
        return parser.parse(proto.SerializeToString(), str(onnx_path))  # the path finds external data
    return parser.parse_from_file(str(onnx_path))


def build_engine(onnx_path: str | os.PathLike, engine_path: str | os.PathLike, options: BuildOptions) -> dict:
    """Build a TensorRT engine from an exported ONNX file; write it and its JSON sidecar atomically.

    Returns the sidecar's content (TensorRT version, GPU, precision, shapes, plugin sha256).
    """
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    # The arguments first: a missing file or a bad shape is the user's to fix wherever TensorRT is.
    proto = onnx_file.load(onnx_path)
    # TensorRT's ONNX parser hands a plugin no version of the node's domain: checked here.
    contract.check_versions(proto, str(onnx_path))
    inputs = _onnx_inputs(proto)
    shapes = _profile_shapes(inputs, options)
    check_writable(engine_path, "-o")
    check_writable(_sidecar(engine_path), "-o")
    if options.timing_cache is not None:
        check_writable(options.timing_cache, "--timing-cache")
    trt = _tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    library = _load_plugin(trt)

    builder = trt.Builder(logger)
    strongly_typed = _major(trt) >= 11  # TensorRT 11 builds strongly typed networks only
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not _parse(parser, onnx_path):
        errors = "; ".join(str(parser.get_error(i).desc()) for i in range(parser.num_errors))
        raise DrconvError(f"TensorRT cannot parse {onnx_path}: {errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mb << 20)
    if options.fp16:
        if strongly_typed:
            float16 = onnx.TensorProto.FLOAT16
            if proto.graph.input[0].type.tensor_type.elem_type != float16:
                raise DrconvError(
                    "TensorRT >= 11 takes precision from the ONNX types: export a float16 model for --fp16"
                )
        else:
            config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for name, (low, opt, high) in shapes.items():
        profile.set_shape(name, low, opt, high)
    config.add_optimization_profile(profile)
    cache = None
    if options.timing_cache is not None:
        data = options.timing_cache.read_bytes() if options.timing_cache.is_file() else b""
        cache = config.create_timing_cache(data)
        config.set_timing_cache(cache, False)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise DrconvError(f"TensorRT could not build an engine from {onnx_path} (see its messages above)")
    gpu, capability = _gpu()
    meta = {
        "tensorrt": str(trt.__version__),
        "gpu": gpu,
        "compute_capability": capability,
        "precision": "fp16" if options.fp16 else "fp32",
        "shapes": {name: {"min": s[0], "opt": s[1], "max": s[2]} for name, s in shapes.items()},
        "onnx": str(onnx_path),
        "plugin_library": str(library),
        "plugin_sha256": hashlib.sha256(library.read_bytes()).hexdigest(),
        "drconv": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    _write_engine(engine_path, bytes(serialized), meta)
    if cache is not None and options.timing_cache is not None:
        write_bytes(options.timing_cache, bytes(config.get_timing_cache().serialize()), "--timing-cache")
    return meta


def _write_engine(engine_path: Path, data: bytes, meta: dict) -> None:
    """The engine and its sidecar, each written whole; the sidecar holds the engine's sha256.

    Both temporary files are written before either is renamed, and load_engine refuses a
    sidecar whose sha256 is not its engine's: a build interrupted between the two renames
    leaves a pair that is refused, never one that is trusted.
    """
    meta["engine_sha256"] = hashlib.sha256(data).hexdigest()
    with atomic_path(_sidecar(engine_path), "-o") as sidecar, atomic_path(engine_path, "-o") as engine:
        sidecar.write_text(json.dumps(meta, indent=2) + "\n")
        engine.write_bytes(data)


def _check_sidecar(engine_path: Path, data: bytes, trt_version: str) -> None:
    """Refuse an engine its sidecar does not describe, or one built for another TensorRT or GPU."""
    sidecar = _sidecar(engine_path)
    if not sidecar.is_file():
        return  # an engine built elsewhere: TensorRT itself checks what it can
    meta = json.loads(sidecar.read_text())
    rebuild = "rebuild it with `drconv build`"
    recorded = meta.get("engine_sha256")
    if recorded is not None and recorded != hashlib.sha256(data).hexdigest():
        raise DrconvError(f"{sidecar} does not belong to {engine_path} (another build's); {rebuild}")
    if meta.get("tensorrt") != trt_version:
        raise DrconvError(
            f"{engine_path} was built with TensorRT {meta.get('tensorrt')}, this is {trt_version}: "
            f"{rebuild} (engines do not move between TensorRT versions)"
        )
    built_for, here = meta.get("compute_capability"), _gpu()[1]
    if built_for and here and built_for != here:
        raise DrconvError(
            f"{engine_path} was built for compute capability {built_for} ({meta.get('gpu')}), this GPU is {here}: "
            f"{rebuild} on this machine"
        )


def load_engine(engine_path: str | os.PathLike):
    """Deserialize an engine built by build_engine: plugin loaded first; its sidecar's sha256,
    TensorRT version and compute capability checked."""
    trt = _tensorrt()
    engine_path = Path(engine_path)
    if not engine_path.is_file():
        raise DrconvError(f"{engine_path}: no such file")
    data = engine_path.read_bytes()
    _check_sidecar(engine_path, data, str(trt.__version__))
    _load_plugin(trt)
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(data)
    if engine is None:
        raise DrconvError(f"TensorRT could not load {engine_path} (built for another GPU or TensorRT?)")
    return engine


def engine_input_name(engine) -> str:
    """The name of an engine's one input (benchmarks feed image models)."""
    trt = _tensorrt()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    if len(inputs) != 1:
        raise DrconvError(f"expected an engine with one input, this one has {len(inputs)}: {', '.join(inputs)}")
    return inputs[0]


class EngineRunner:
    """Runs an engine on torch CUDA tensors: shapes set and outputs allocated once, then one
    execute_async_v3 on the current torch stream per call (what a serving loop does)."""

    def __init__(self, engine, inputs: dict) -> None:
        import torch

        trt = _tensorrt()
        self.context = engine.create_execution_context()
        self.tensors: dict[str, torch.Tensor] = {}
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        wanted = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        if sorted(wanted) != sorted(inputs):
            raise DrconvError(f"the engine's inputs are {', '.join(wanted)}; given {', '.join(inputs)}")
        for name in wanted:
            dtype = _torch_dtype(trt, engine.get_tensor_dtype(name))
            tensor = inputs[name].to(device="cuda", dtype=dtype).contiguous()
            if not self.context.set_input_shape(name, tuple(tensor.shape)):
                raise DrconvError(
                    f"input {name} of shape {tuple(tensor.shape)} is outside the engine's optimization profile "
                    f"{tuple(engine.get_tensor_profile_shape(name, 0)[0])} .. "
                    f"{tuple(engine.get_tensor_profile_shape(name, 0)[2])}"
                )
            self.tensors[name] = tensor
        self.outputs = [n for n in names if n not in wanted]
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            self.tensors[name] = torch.empty(
                shape, dtype=_torch_dtype(trt, engine.get_tensor_dtype(name)), device="cuda"
            )
        for name, tensor in self.tensors.items():
            self.context.set_tensor_address(name, tensor.data_ptr())

    def __call__(self):
        import torch

        if not self.context.execute_async_v3(torch.cuda.current_stream().cuda_stream):
            raise DrconvError("TensorRT could not run the engine (see its messages above)")
        return [self.tensors[name] for name in self.outputs]


def _torch_dtype(trt, dtype):
    import torch

    table = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16, trt.DataType.INT32: torch.int32}
    if dtype not in table:
        raise DrconvError(f"engine tensors of type {dtype} are not supported by the benchmark")
    return table[dtype]
