"""A Triton model repository for an exported DRConv model, one folder per model:

    REPO/NAME/config.pbtxt      inputs and outputs from the file, dynamic batching, instances,
                                and the backend's way of loading drconv's library
    REPO/NAME/1/model.onnx      (model.plan for tensorrt; model.py and model.onnx for python)
    REPO/NAME/libdrconv_*.so    the library, which the config names at --library-dir

Each backend loads a custom op its own way: onnxruntime through `model_operations`
(RegisterCustomOpsLibrary, an absolute path), openvino through its CPU_EXTENSION_PATH
parameter, tensorrt only by the server's `--backend-config=tensorrt,plugins=...` (the config
cannot say it), python through drconv installed beside Triton (`drconv.runtime.ort`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import onnx
from onnx import TensorProto

from drconv import contract, onnx_file
from drconv.errors import DrconvError
from drconv.libraries import PLUGIN_FILES, require_plugin

BACKENDS = ("onnxruntime", "openvino", "tensorrt", "python")
DEFAULT_MAX_BATCH_SIZE = 8
# The file each backend loads from the version folder (Triton's default_model_filename).
MODEL_FILES = {"onnxruntime": "model.onnx", "openvino": "model.onnx", "tensorrt": "model.plan", "python": "model.py"}
# drconv's library for each backend (libraries.PLUGIN_FILES' key); python uses the installed drconv's.
_LIBRARIES = {"onnxruntime": "onnxruntime", "openvino": "openvino", "tensorrt": "tensorrt"}
# The python backend's model.py, shipped in this package.
PYTHON_MODEL = Path(__file__).resolve().parent / "triton_model.py"
# Triton's DataType (model_config.proto) by ONNX element type.
_TRITON_TYPES = {
    TensorProto.FLOAT: "TYPE_FP32",
    TensorProto.FLOAT16: "TYPE_FP16",
    TensorProto.BFLOAT16: "TYPE_BF16",
    TensorProto.DOUBLE: "TYPE_FP64",
    TensorProto.INT8: "TYPE_INT8",
    TensorProto.INT16: "TYPE_INT16",
    TensorProto.INT32: "TYPE_INT32",
    TensorProto.INT64: "TYPE_INT64",
    TensorProto.UINT8: "TYPE_UINT8",
    TensorProto.BOOL: "TYPE_BOOL",
}


@dataclass(frozen=True)
class Tensor:
    """One input or output as Triton sees it: dims without the batch axis when the model batches."""

    name: str
    data_type: str  # model_config's TYPE_FP32 ...
    dims: tuple[int, ...]  # -1 where dynamic

    @property
    def datatype(self) -> str:
        """The KServe v2 protocol's name of the type (FP32 ...), as clients send it."""
        return self.data_type.removeprefix("TYPE_")


@dataclass(frozen=True)
class Signature:
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    batched: bool  # every input's and output's first axis is dynamic: Triton's batch dimension


def load_drconv_model(path: str | os.PathLike) -> onnx.ModelProto:
    """The exported model in `path`, or one line saying it is no ONNX file or has no drconv node."""
    proto = onnx_file.load(path)
    if not contract.has_nodes(proto):
        raise DrconvError(
            f"{path} has no drconv node, so it is not a custom-mode drconv export; "
            "export one with `drconv export -o FILE` (a portable file needs no drconv to serve)"
        )
    return proto


def _dims(value: onnx.ValueInfoProto) -> list[int]:
    tensor = value.type.tensor_type
    if not tensor.HasField("shape"):
        raise DrconvError(f"{value.name} has no shape in the file; re-export it with `drconv export`")
    return [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]


def signature(proto: onnx.ModelProto) -> Signature:
    """The graph's inputs and outputs, named, typed and shaped for a Triton config."""
    initializers = {t.name for t in proto.graph.initializer}
    values = [v for v in proto.graph.input if v.name not in initializers], list(proto.graph.output)
    shaped = [[(v, _dims(v)) for v in group] for group in values]
    batched = all(dims and dims[0] == -1 for group in shaped for _, dims in group)

    def tensor(value: onnx.ValueInfoProto, dims: list[int]) -> Tensor:
        elem = value.type.tensor_type.elem_type
        if elem not in _TRITON_TYPES:
            raise DrconvError(f"{value.name} is of ONNX type {TensorProto.DataType.Name(elem)}, which Triton lacks")
        return Tensor(value.name, _TRITON_TYPES[elem], tuple(dims[1:] if batched else dims))

    inputs, outputs = ([tensor(v, d) for v, d in group] for group in shaped)
    return Signature(tuple(inputs), tuple(outputs), batched)


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _tensor_block(key: str, tensors: tuple[Tensor, ...]) -> list[str]:
    lines = [f"{key} ["]
    for i, t in enumerate(tensors):
        dims = ", ".join(map(str, t.dims))
        end = "," if i < len(tensors) - 1 else ""
        lines.append(f"  {{ name: {_quoted(t.name)} data_type: {t.data_type} dims: [ {dims} ] }}{end}")
    return [*lines, "]"]


def config_text(
    name: str, backend: str, sig: Signature, max_batch_size: int, instances: int, library: str | None
) -> str:
    """config.pbtxt (protobuf text format of Triton's ModelConfig) for one model."""
    kind = "KIND_GPU" if backend == "tensorrt" else "KIND_CPU"
    lines = [
        f"name: {_quoted(name)}",
        f"backend: {_quoted(backend)}",
        f"max_batch_size: {max_batch_size}",
        *_tensor_block("input", sig.inputs),
        *_tensor_block("output", sig.outputs),
        f"instance_group [ {{ count: {instances} kind: {kind} }} ]",
    ]
    if max_batch_size > 0:
        lines.append("dynamic_batching { }")
    if backend != "python":
        lines.append(f"default_model_filename: {_quoted(MODEL_FILES[backend])}")
    if backend == "onnxruntime" and library:
        lines.append(f"model_operations {{ op_library_filename: [ {_quoted(library)} ] }}")
    if backend == "openvino" and library:
        lines.append(f'parameters {{ key: "CPU_EXTENSION_PATH" value: {{ string_value: {_quoted(library)} }} }}')
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Written:
    folder: Path  # REPO/NAME
    config: str  # config.pbtxt's text
    library: str | None  # the library's path as the config (or the server's flag) names it
    todo: str | None  # what is left to do by hand (the TensorRT engine where TensorRT is absent)


def _check_name(name: str) -> str:
    if not name or name.startswith(".") or "/" in name or os.sep in name or name != name.strip():
        raise DrconvError(f"model name {name!r}: give a plain folder name (letters, digits, -, _)")
    return name


def _batch_size(sig: Signature, asked: int | None, path: Path) -> int:
    if asked is None:
        return DEFAULT_MAX_BATCH_SIZE if sig.batched else 0
    if asked < 0:
        raise DrconvError(f"--max-batch-size {asked}: give 0 (no batching) or more")
    if asked > 0 and not sig.batched:
        raise DrconvError(
            f"{path} has a fixed batch axis, so Triton cannot batch it; export it without --static, "
            "or pass --max-batch-size 0"
        )
    return asked


def _engine_shapes(sig: Signature, max_batch_size: int, input_shape: tuple[int, ...]) -> dict[str, tuple]:
    """TensorRT's optimisation profile per input: batch 1 to max_batch_size, other dynamic axes from input_shape."""
    shapes = {}
    for t in sig.inputs:
        full = (-1, *t.dims) if sig.batched else t.dims
        if len(full) != len(input_shape):
            raise DrconvError(f"--input-shape has {len(input_shape)} sizes; input {t.name} has rank {len(full)}")
        fixed = tuple(d if d > 0 else s for d, s in zip(full, input_shape, strict=True))
        top = max(max_batch_size, 1)
        low, opt, high = ((b, *fixed[1:]) if sig.batched else fixed for b in (1, max(1, top // 2), top))
        shapes[t.name] = (low, opt, high)
    return shapes


def _tensorrt_plan(onnx_path: Path, version_dir: Path, folder: Path, sig: Signature, shapes: dict) -> str | None:
    """Build model.plan with drconv build where TensorRT is; else say the command that will."""
    from drconv.runtime import trt

    options = trt.BuildOptions(
        min_shapes={k: v[0] for k, v in shapes.items()},
        opt_shapes={k: v[1] for k, v in shapes.items()},
        max_shapes={k: v[2] for k, v in shapes.items()},
    )
    try:
        trt.build_engine(onnx_path, version_dir / MODEL_FILES["tensorrt"], options)
        return None
    except trt.TensorRTMissing:
        shutil.copyfile(onnx_path, version_dir.parent / "model.onnx")
    flags = " ".join(
        f"--{which}-shape {name}:{'x'.join(map(str, s[i]))}"
        for name, s in shapes.items()
        for i, which in enumerate(("min", "opt", "max"))
    )
    return (
        f"TensorRT is not installed here: on the serving GPU machine, build the engine with "
        f"`drconv build {folder / 'model.onnx'} -o {folder / '1' / MODEL_FILES['tensorrt']} {flags}`"
    )


def write(
    onnx_path: str | os.PathLike,
    repo: str | os.PathLike,
    *,
    name: str | None = None,
    backend: str = "onnxruntime",
    max_batch_size: int | None = None,
    instances: int = 1,
    library_dir: str | None = None,
    input_shape: tuple[int, ...] = (1, 3, 224, 224),
    force: bool = False,
    status: Callable[[str], None] | None = None,
) -> Written:
    """Write REPO/NAME for `backend`; the folder appears whole or not at all.

    `library_dir`: where the library will sit on the serving machine (Triton wants absolute
    paths); default REPO/NAME here. `input_shape`: the sizes of the dynamic axes other than
    batch, for a TensorRT engine's profile. `force`: replace an existing REPO/NAME.
    """
    onnx_path = Path(onnx_path)
    if backend not in BACKENDS:
        raise DrconvError(f"unknown Triton backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if instances < 1:
        raise DrconvError(f"--instances {instances}: give 1 or more")
    proto = load_drconv_model(onnx_path)
    sig = signature(proto)
    batch = _batch_size(sig, max_batch_size, onnx_path)
    name = _check_name(name or onnx_path.stem)
    repo = Path(repo)
    if repo.exists() and not repo.is_dir():
        raise DrconvError(f"-o {repo} is a file; give a folder for the model repository")
    folder = repo / name
    if folder.exists() and not force:
        raise DrconvError(f"{folder} exists; pass --force to replace it, or choose another --name")
    key = _LIBRARIES.get(backend)
    library_file = require_plugin(key) if key else None
    library = None
    if library_file is not None:
        where = library_dir or str(folder.resolve())
        if not where.startswith("/"):
            raise DrconvError(f"--library-dir {where}: Triton wants an absolute path on the serving machine")
        library = f"{where.rstrip('/')}/{PLUGIN_FILES[key]}"
    shapes = _engine_shapes(sig, batch, input_shape) if backend == "tensorrt" else {}
    if backend == "tensorrt":  # the engine's own dims: batch aside, fixed by the profile
        sig = Signature(
            tuple(Tensor(t.name, t.data_type, shapes[t.name][2][1 if sig.batched else 0 :]) for t in sig.inputs),
            sig.outputs,
            sig.batched,
        )
    text = config_text(name, backend, sig, batch, instances, library)
    repo.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=repo))
    try:
        version = staging / "1"
        version.mkdir()
        (staging / "config.pbtxt").write_text(text)
        if library_file is not None:
            shutil.copyfile(library_file, staging / library_file.name)
        todo = None
        if backend == "tensorrt":
            if status:
                status(f"building a TensorRT engine for {name} ...")
            todo = _tensorrt_plan(onnx_path, version, folder, sig, shapes)
        else:
            shutil.copyfile(onnx_path, version / "model.onnx")
        if backend == "python":
            shutil.copyfile(PYTHON_MODEL, version / MODEL_FILES["python"])
        _replace(staging, folder)
    except OSError as exc:
        raise DrconvError(f"cannot write {folder}: {exc.strerror}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Written(folder, text, library, todo)


def _replace(staging: Path, folder: Path) -> None:
    """Put `staging` at `folder`; an old folder is moved aside first and removed after."""
    os.chmod(staging, 0o755)
    old = None
    if folder.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old.", dir=folder.parent))
        os.replace(folder, old / folder.name)
    os.replace(staging, folder)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
