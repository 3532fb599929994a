"""Check an exported ONNX model against PyTorch on one random input."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch

from drconv import contract, defaults, onnx_file
from drconv.errors import DrconvError
from drconv.runtime.ort import image_input, session

__all__ = ["DEFAULT_MIN_AGREEMENT", "RUNTIMES", "OutputError", "RegionAgreement", "VerifyReport", "verify_onnx"]

# Below this share of pixels routed alike, the runtime does not run the same model.
DEFAULT_MIN_AGREEMENT = defaults.MIN_AGREEMENT


@dataclass(frozen=True)
class OutputError:
    name: str
    shape: tuple[int, ...]
    max_abs: float
    max_rel: float
    ok: bool


@dataclass(frozen=True)
class RegionAgreement:
    """One region conv: how often the runtime routed a pixel to the region PyTorch did."""

    layer: str  # the PyTorch module
    node: str  # the ONNX node (or the portable graph's ArgMax) it was paired with
    pixels: int
    agreement: float  # share of output pixels in the same region
    min_margin: float | None  # smallest top-1 minus top-2 of PyTorch's guide; None with one region
    # Pixels where the official code's rule, the argmax of a float32 softmax of the guide, picks
    # another region than drconv's argmax of the guide itself: near ties that the softmax rounds
    # into exact ties, which then go to the lowest index (docs/region_conv_op.md). Not a failure.
    softmax_differs: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class VerifyReport:
    input_shape: tuple[int, ...]
    atol: float
    rtol: float
    outputs: list[OutputError]
    regions: list[RegionAgreement] = field(default_factory=list)
    min_agreement: float = DEFAULT_MIN_AGREEMENT
    regions_note: str | None = None  # why region agreement could not be measured
    runtime: str = "ONNX Runtime"  # the runtime's name (RUNTIMES)
    # per guide, for drawing (not in to_dict): the layers that read it, PyTorch's and the
    # runtime's region of every output pixel of the first image
    region_maps: list[tuple[tuple[str, ...], np.ndarray, np.ndarray]] = field(default_factory=list, repr=False)

    @property
    def outputs_ok(self) -> bool:
        return all(o.ok for o in self.outputs)

    @property
    def regions_ok(self) -> bool:
        return all(r.agreement >= self.min_agreement for r in self.regions)

    @property
    def ok(self) -> bool:
        return self.outputs_ok and self.regions_ok

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "input_shape": list(self.input_shape),
            "atol": self.atol,
            "rtol": self.rtol,
            "outputs": [asdict(o) | {"shape": list(o.shape)} for o in self.outputs],
            "min_agreement": self.min_agreement,
            "regions": [r.to_dict() for r in self.regions],
            "regions_note": self.regions_note,
            "runtime": self.runtime,
        }


def _input_shape(proto: onnx.ModelProto, batch: int, size: int) -> tuple[int, ...]:
    """The graph's input shape with its symbolic axes set to `batch` and `size`."""
    _, dims = image_input(proto)
    fill = (batch, None, size, size)
    shape = []
    for axis, dim in enumerate(dims):
        if dim is not None:
            shape.append(dim)
        elif fill[axis] is None:
            raise DrconvError("the ONNX input's channel axis is symbolic; export with a fixed channel count")
        else:
            shape.append(fill[axis])
    return tuple(shape)


def guide_tensors(proto: onnx.ModelProto) -> list[tuple[str, str]]:
    """(node, guide tensor) of every region conv in graph order: the custom nodes' guide inputs,
    or in a portable graph the guides its ArgMax nodes read (not the Cast of IsNaN beside them)."""
    producers = {out: node for node in proto.graph.node for out in node.output}
    found = []
    for i, node in enumerate(proto.graph.node):
        name = node.name or f"{node.op_type}#{i}"
        kind = next((t for t in contract.NODE_TYPES if t.name == node.op_type), None)
        if node.domain == contract.DOMAIN and kind is not None:
            found.append((name, node.input[kind.guide]))
        elif node.op_type == "ArgMax" and node.domain in ("", "ai.onnx"):
            axis = next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), 0)
            source = producers.get(node.input[0])
            if axis == 1 and (source is None or source.op_type != "Cast"):
                found.append((name, node.input[0]))
    return found


def with_guide_outputs(proto: onnx.ModelProto, tensors: list[str]) -> onnx.ModelProto:
    """The model with `tensors` as extra outputs after its own (a copy: the user's file is never touched)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    elem = copy.graph.input[0].type.tensor_type.elem_type
    declared = {v.name: v for v in copy.graph.value_info}
    have = {o.name for o in copy.graph.output}
    for name in dict.fromkeys(tensors):
        if name in have:
            continue
        if name in declared:  # the exporter's own type and shape, so ONNX Runtime infers alike
            copy.graph.output.append(declared[name])
        else:
            copy.graph.output.append(onnx.helper.make_tensor_value_info(name, elem, None))
    return copy


def torch_guides(model: torch.nn.Module, x: torch.Tensor) -> tuple[object, list[tuple[str, torch.Tensor]]]:
    """The model's output, and each DRConv layer's routing guide in the order the layers ran."""
    from drconv.nn import _RegionConvLayer

    names = {m: name for name, m in model.named_modules() if isinstance(m, _RegionConvLayer)}
    seen: list[tuple[str, torch.Tensor]] = []

    def capture(module, args, kwargs, output):
        seen.append((names[module] or type(module).__name__, module.fitted_guide(*args, **kwargs)))

    handles = [m.register_forward_hook(capture, with_kwargs=True) for m in names]
    try:
        with torch.no_grad():
            return model(x), seen
    finally:
        for handle in handles:
            handle.remove()


def consecutive_groups(items: list, same) -> list[list]:
    """Consecutive runs of items that `same` says are one."""
    runs: list[list] = []
    for item in items:
        if runs and same(runs[-1][-1], item):
            runs[-1].append(item)
        else:
            runs.append([item])
    return runs


def same_guide(a: tuple[str, torch.Tensor], b: tuple[str, torch.Tensor]) -> bool:
    """Whether two (layer, guide) pairs route by one guide: a ShuffleNetV2 block's two region convs do."""
    return a[1].shape == b[1].shape and torch.equal(a[1], b[1])


def _agreement(
    layers: list[tuple[str, torch.Tensor]], nodes: list[tuple[str, str]], runtime: dict[str, np.ndarray]
) -> tuple[list[RegionAgreement], str | None, list]:
    """Pair layers with guide tensors, one guide at a time: layers that share a guide (a ShuffleNetV2
    block's two region convs) share one tensor in a custom graph and one ArgMax in a portable one."""
    if not nodes:
        return [], None, []
    by_guide = consecutive_groups(layers, same_guide)
    by_tensor = consecutive_groups(nodes, lambda a, b: a[1] == b[1])
    if len(by_guide) != len(by_tensor):
        return (
            [],
            (
                f"PyTorch's DRConv layers routed by {len(by_guide)} guides and the graph's region convs by "
                f"{len(by_tensor)}; they cannot be paired"
            ),
            [],
        )
    out, maps = [], []
    for group, tensors in zip(by_guide, by_tensor, strict=True):
        guide, (node, tensor) = group[0][1], tensors[0]
        theirs = runtime[tensor]
        if tuple(theirs.shape) != tuple(guide.shape):
            return (
                [],
                f"layer {group[0][0]}'s guide {tuple(guide.shape)} does not match node {node}'s {theirs.shape}",
                [],
            )
        ours = guide.float().argmax(1).numpy()  # torch.argmax's rule: the first NaN wins
        routed = np.argmax(theirs, axis=1)  # numpy's is the same
        agreement = float(np.mean(ours == routed))
        maps.append((tuple(layer for layer, _ in group), ours[0], routed[0]))
        margin = None
        if guide.shape[1] > 1:
            top = guide.double().topk(2, dim=1).values
            gap = top[:, 0] - top[:, 1]
            gap = gap[torch.isfinite(gap)]
            margin = float(gap.min()) if gap.numel() else None
        softmax = torch.softmax(guide.float(), dim=1).argmax(1).numpy()
        differs = int(np.count_nonzero(softmax != ours))
        for i, (layer, _) in enumerate(group):
            paired = tensors[min(i, len(tensors) - 1)][0]
            out.append(RegionAgreement(layer, paired, int(ours.size), agreement, margin, differs))
    return out, None, maps


# The runtimes verify runs an export in, by the name `--runtime` takes.
RUNTIMES = {"ort": "ONNX Runtime", "openvino": "OpenVINO"}


def runner(
    path: Path, runtime: str, providers: list[str] | None, outputs: list[str]
) -> Callable[[np.ndarray, tuple[int, ...]], list[np.ndarray]]:
    """run(x, shape): the graph's `outputs`, in order, on its one input x, in `runtime`."""
    name = RUNTIMES[runtime]
    if runtime == "openvino":
        from drconv.runtime import openvino

        compiled = openvino.compile(path)
        ports = {o.get_any_name(): o for o in compiled.outputs}
        ports |= {n: o for o in compiled.outputs for n in o.get_names()}

        def run_openvino(x: np.ndarray, shape: tuple[int, ...]) -> list[np.ndarray]:
            try:
                result = compiled(x)
            except Exception as exc:
                raise DrconvError(f"{name} failed on input {shape}: {openvino.one_line(exc)}") from None
            return [np.asarray(result[ports[o]]) for o in outputs]

        return run_openvino
    sess = session(path, providers=providers)

    def run_ort(x: np.ndarray, shape: tuple[int, ...]) -> list[np.ndarray]:
        try:
            return sess.run(outputs, {sess.get_inputs()[0].name: x})
        except Exception as exc:
            raise DrconvError(f"{name} failed on input {shape}: {str(exc).strip().splitlines()[0]}") from None

    return run_ort


def verify_onnx(
    path: str | os.PathLike,
    model: torch.nn.Module,
    batch: int = 2,
    size: int = 64,
    atol: float = 1e-4,
    rtol: float = 1e-3,
    seed: int = 0,
    providers: list[str] | None = None,
    min_agreement: float = DEFAULT_MIN_AGREEMENT,
    runtime: str = "ort",
    inputs: np.ndarray | None = None,
) -> VerifyReport:
    """Run `model` (PyTorch) and `path` (ONNX Runtime, or OpenVINO with `runtime` "openvino")
    on one random input (or on `inputs`, e.g. a picture from `drconv.image.load`) and compare.

    Symbolic axes take `batch` and `size`, which should differ from the exported ones so
    the dynamic axes are exercised. An output passes when |ort - torch| <= atol + rtol*|torch|
    everywhere (numpy.allclose's rule).

    Region agreement: a copy of the graph (never the file at `path`) also returns the guide
    of every region conv, and each is paired, in order, with the DRConv layer PyTorch ran;
    the report gives the share of pixels routed to the same region and PyTorch's smallest
    top-1/top-2 guide margin. Below `min_agreement` the report is not ok, whatever the
    outputs' errors: those pixels were convolved with another region's filter.
    """
    path = Path(path)
    if batch < 1 or size < 1:
        raise DrconvError(f"batch and size must be >= 1, got {batch} and {size}")
    if not 0.0 <= min_agreement <= 1.0:
        raise DrconvError(f"min_agreement must be in [0, 1], got {min_agreement}")
    if runtime not in RUNTIMES:
        raise DrconvError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    proto = onnx_file.load(path, external_data=True)
    shape = _input_shape(proto, batch, size)
    nodes = guide_tensors(proto)
    with tempfile.TemporaryDirectory(prefix="drconv-verify-") as tmp:
        copy = Path(tmp) / path.name
        checked = with_guide_outputs(proto, [t for _, t in nodes])
        onnx.save(checked, str(copy))
        try:
            run = runner(copy, runtime, providers, [o.name for o in checked.graph.output])
        except DrconvError as exc:
            raise DrconvError(str(exc).replace(str(copy), str(path))) from None
    if inputs is not None:
        if tuple(inputs.shape) != shape:
            raise DrconvError(f"the input is {tuple(inputs.shape)}, the file takes {shape}")
        x = torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32))
    else:
        x = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    model = model.eval()
    try:
        expected, layers = torch_guides(model, x)
    except (RuntimeError, ValueError) as exc:
        raise DrconvError(f"the PyTorch model cannot run on input {shape}: {str(exc).splitlines()[0]}") from exc
    expected = [expected] if isinstance(expected, torch.Tensor) else list(expected)
    half = proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    actual = run(x.numpy().astype(np.float16 if half else np.float32), shape)
    metas = checked.graph.output
    user = len(proto.graph.output)
    runtime_guides = {meta.name: value for meta, value in zip(metas[user:], actual[user:], strict=True)}
    runtime_guides |= {meta.name: value for meta, value in zip(metas[:user], actual[:user], strict=True)}
    actual = actual[:user]
    if len(actual) != len(expected):
        raise DrconvError(f"{path} has {len(actual)} outputs but the model returns {len(expected)}")
    results = []
    for out, ref_t, meta in zip(actual, expected, metas, strict=False):
        ref = ref_t.detach().cpu().numpy()
        if out.shape != ref.shape:
            raise DrconvError(f"output {meta.name}: {RUNTIMES[runtime]} gives shape {out.shape}, PyTorch {ref.shape}")
        diff = np.abs(out.astype(np.float64) - ref.astype(np.float64))
        scale = np.abs(ref.astype(np.float64))
        both_nan = np.isnan(out) & np.isnan(ref)
        ok = bool(np.all((diff <= atol + rtol * scale) | both_nan))
        diff = np.where(both_nan, 0.0, diff)
        # A NaN on one side only makes these NaN, which is what the user should see.
        max_abs = float(diff.max(initial=0.0))
        max_rel = float((diff / np.maximum(scale, np.finfo(np.float32).tiny)).max(initial=0.0))
        results.append(OutputError(meta.name, tuple(out.shape), max_abs, max_rel, ok))
    regions, note, maps = _agreement(layers, nodes, runtime_guides)
    return VerifyReport(shape, atol, rtol, results, regions, min_agreement, note, RUNTIMES[runtime], maps)
