"""The backends `drconv benchmark` times, ready to run: one region conv alone (--layer) or whole models.

Every backend is built with its inputs in place, so a timed call is one inference and
nothing else; and every backend that computes a region conv is checked against the
reference op before it is timed, since a fast wrong answer is not a result.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper

from drconv import defaults
from drconv.benchmark.files import Picture, as_numpy, check, ort_session, ov_compiled
from drconv.benchmark.timing import Backend, Prepared
from drconv.errors import DrconvError

__all__ = [
    "LAYER_BACKENDS",
    "MODEL_BACKENDS",
    "LayerSpec",
    "Prepared",
    "dense_conv_graph",
    "layer_inputs",
    "prepare_layer",
    "prepare_model",
]

# In the order they run and are reported; the dense ones are the bounds.
LAYER_BACKENDS = {
    "cpu": (
        "torch", "torch-naive", "torch-dense", "ort-custom", "ort-portable", "ort-dense",
        "ov-custom", "ov-portable", "ov-dense",
    ),
    "cuda": ("torch", "torch-naive", "torch-cuda", "trt", "cudnn-dense"),
}  # fmt: skip
MODEL_BACKENDS = {"cpu": ("torch", "ort-custom", "ort-portable", "ov-custom", "ov-portable"), "cuda": ("torch", "trt")}
KNOWN = sorted({b for group in (*LAYER_BACKENDS.values(), *MODEL_BACKENDS.values()) for b in group})
_BOUND = {
    "cpu": {
        "torch": "torch-dense",
        "torch-naive": "torch-dense",
        "ort-custom": "ort-dense",
        "ort-portable": "ort-dense",
        "ov-custom": "ov-dense",
        "ov-portable": "ov-dense",
    },
    "cuda": {"torch": "cudnn-dense", "torch-naive": "cudnn-dense", "torch-cuda": "cudnn-dense", "trt": "cudnn-dense"},
}


@dataclass(frozen=True)
class LayerSpec:
    """One region conv: N, C_in, H, W, R regions, k x k filters, K outputs, stride 1, 'same' padding."""

    batch: int
    channels: int
    height: int
    width: int
    regions: int
    kernel: int
    out_channels: int

    @classmethod
    def parse(cls, text: str, regions: int, kernel: int, out_channels: int | None, batch: int) -> LayerSpec:
        """From --layer CxHxW and the other flags."""
        try:
            c, h, w = (int(v) for v in text.lower().split("x"))
        except ValueError:
            raise DrconvError(f"--layer {text!r} must look like 64x56x56 (channels x height x width)") from None
        if min(c, h, w) < 1 or regions < 1 or kernel < 1 or batch < 1 or (out_channels or c) < 1:
            raise DrconvError("--layer sizes, --regions, --kernel, --out-channels and --batch must be >= 1")
        if kernel % 2 == 0:
            raise DrconvError(f"--kernel {kernel}: use an odd size, so that 'same' padding keeps {h}x{w}")
        return cls(batch, c, h, w, regions, kernel, out_channels or c)

    def floats(self) -> int:
        """The values of its input, output, guide and filters: the memory one call holds, in float32s."""
        pixels = self.batch * self.height * self.width
        filters = self.regions * self.channels * self.kernel**2 * self.out_channels
        return pixels * (self.channels + self.out_channels + self.regions) + self.batch * filters

    def describe(self) -> str:
        k = self.kernel
        return (
            f"N={self.batch} C={self.channels} K={self.out_channels} {self.height}x{self.width} "
            f"k={k}x{k} R={self.regions}"
        )


def _unknown(name: str) -> DrconvError:
    return DrconvError(f"unknown backend {name!r}; choose from {', '.join(KNOWN)}")


def select(requested: list[str] | None, offered: tuple[str, ...], what: str) -> tuple[list[str], bool]:
    """The backends to build, in `offered` order, and whether the user chose them (then none may be skipped)."""
    if not requested:
        return list(offered), False
    for name in requested:
        if name not in KNOWN:
            raise _unknown(name)
        if name not in offered:
            raise DrconvError(f"backend {name} does not apply to {what} ({_where(name)}); there: {', '.join(offered)}")
    return [name for name in offered if name in requested], True


def _where(name: str) -> str:
    """Where a backend applies, e.g. 'it times --layer on cuda, models on cuda'."""
    places = [f"--layer on {d}" for d, names in LAYER_BACKENDS.items() if name in names]
    places += [f"models on {d}" for d, names in MODEL_BACKENDS.items() if name in names]
    return "it times " + ", ".join(places)


def layer_inputs(spec: LayerSpec, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x, filters and a spatially coherent guide (smoothed noise, as a trained guide gives)."""
    g = torch.Generator().manual_seed(seed)
    n, c, k, r = spec.batch, spec.channels, spec.kernel, spec.regions
    x = torch.randn(n, c, spec.height, spec.width, generator=g)
    filters = torch.randn(n, r, spec.out_channels, c, k, k, generator=g) / math.sqrt(c * k * k)
    guide = F.avg_pool2d(torch.randn(n, r, spec.height + 8, spec.width + 8, generator=g), 9, 1)
    return x, filters, guide


def naive_region_conv(x, filters, guide, padding, stride=1, dilation=1) -> torch.Tensor:
    """The public implementation's formulation: all R filters at every pixel, then select by region.

    padding, stride, dilation: an int or an (h, w) pair, as F.conv2d takes them.
    """
    n, regions, c_out, c_in, kh, kw = filters.shape
    y = F.conv2d(
        x.reshape(1, n * c_in, *x.shape[2:]),
        filters.reshape(n * regions * c_out, c_in, kh, kw),
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=n,
    ).view(n, regions, c_out, *guide.shape[2:])
    index = guide.argmax(dim=1, keepdim=True).unsqueeze(2).expand(-1, -1, c_out, -1, -1)
    return y.gather(1, index).squeeze(1)


def dense_conv_graph(weight: np.ndarray, input_shape: tuple[int, ...], padding: int, opset: int = defaults.ONNX_OPSET):
    """One ONNX Conv node, weight as an initializer: the bound a RegionConv2d node is measured against."""
    n, _, h, w = input_shape
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, list(input_shape))
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [n, weight.shape[0], h, w])
    node = helper.make_node("Conv", ["X", "W"], ["Y"], pads=[padding] * 4)
    graph = helper.make_graph([node], "dense_conv", [x], [y], [numpy_helper.from_array(weight, "W")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _saved(proto, tmp: Path, name: str) -> Path:
    import onnx

    path = tmp / f"{name}.onnx"
    onnx.save(proto, str(path))
    return path


def _availability(name: str, device: str) -> None:
    """Raise the DrconvError that says why `name` cannot run here (nothing if it can)."""
    if name == "ort-custom":
        from drconv.runtime.ort import custom_op_library

        custom_op_library()
    elif name.startswith("ov-"):
        from drconv.runtime import openvino

        openvino.core(extension=name == "ov-custom")  # OpenVINO installed (and the extension built)
    elif name == "trt":
        from drconv.runtime import trt

        trt._tensorrt()
        trt.plugin_library()
    elif name == "torch-cuda":
        from drconv.cuda_kernel import extension

        extension()  # compiles on first use; a missing nvcc is a DrconvError


def _available(names: list[str], chosen: bool, device: str, prepared: Prepared) -> list[str]:
    """Names that can run here; with chosen backends the first that cannot is an error."""
    out = []
    for name in names:
        try:
            _availability(name, device)
        except DrconvError as exc:
            if chosen:
                raise
            prepared.skipped[name] = str(exc)
            continue
        out.append(name)
    return out


def prepare_layer(spec: LayerSpec, requested: list[str] | None, device: str, threads: int, tmp: Path) -> Prepared:
    """Backends for one region conv of `spec` on `device`, each checked against drconv.region_conv."""
    import drconv
    from drconv.export import rewrite
    from drconv.export.onnx import region_conv_graph

    prepared = Prepared(config={"mode": "layer", "device": device, "layer": asdict(spec), "describe": spec.describe()})
    names, chosen = select(requested, LAYER_BACKENDS[device], f"--layer on {device}")
    names = _available(names, chosen, device, prepared)
    x, filters, guide = layer_inputs(spec)
    pad = spec.kernel // 2
    reference = drconv.region_conv(x, filters, guide).numpy().astype(np.float64)
    weight = filters[0, 0].contiguous()  # any K x C x k x k weight: the bound only needs the shape
    if device == "cuda":
        x, filters, guide, weight = (t.cuda() for t in (x, filters, guide, weight))
    feeds = {"X": x.numpy(), "filters": filters.numpy(), "guide": guide.numpy()} if device == "cpu" else {}

    def graph(portable: bool) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
        """The layer's ONNX graph and feeds: standard ops, or the custom node as drconv export writes it (IHWO)."""
        if portable:
            return region_conv_graph(x, filters, guide, padding=(pad, pad), mode="portable"), feeds
        proto = region_conv_graph(x, filters, guide, padding=(pad, pad), layout=rewrite.IHWO)
        return proto, {**feeds, "filters": np.ascontiguousarray(feeds["filters"].transpose(rewrite.TO_IHWO))}

    def build(name: str) -> Callable[[], object]:
        if name == "torch":
            if device != "cpu":
                return lambda: drconv.region_conv(x, filters, guide)
            # The filters as drconv's modules hand them over in CPU inference: IHWO memory.
            ihwo = filters.permute(rewrite.TO_IHWO).contiguous().permute(rewrite.TO_OIHW)
            return lambda: drconv.region_conv(x, ihwo, guide)
        if name == "torch-naive":
            return lambda: naive_region_conv(x, filters, guide, pad)
        if name in ("torch-dense", "cudnn-dense"):
            return lambda: F.conv2d(x, weight, padding=pad)
        if name == "torch-cuda":
            from drconv.cuda_kernel import region_conv_cuda

            return lambda: region_conv_cuda(x, filters, guide, padding=(pad, pad))
        if name in ("ort", "ort-custom", "ort-portable"):
            proto, given = graph(name == "ort-portable")
            sess = ort_session(_saved(proto, tmp, name), threads)
            return lambda: sess.run(None, given)
        if name == "ort-dense":
            sess = ort_session(_saved(dense_conv_graph(weight.numpy(), tuple(x.shape), pad), tmp, name), threads)
            dense_feed = {"X": feeds["X"]}
            return lambda: sess.run(None, dense_feed)
        if name in ("ov-custom", "ov-portable"):
            proto, inputs = graph(name == "ov-portable")
            compiled = ov_compiled(_saved(proto, tmp, name), threads, extension=name == "ov-custom")
            request, ordered = compiled.create_infer_request(), [inputs[i.get_any_name()] for i in compiled.inputs]
            return lambda: request.infer(ordered, share_inputs=True)  # as ONNX Runtime: inputs read in place
        if name == "ov-dense":
            compiled = ov_compiled(_saved(dense_conv_graph(weight.numpy(), tuple(x.shape), pad), tmp, name), threads)
            request, dense_input = compiled.create_infer_request(), [feeds["X"]]
            return lambda: request.infer(dense_input, share_inputs=True)
        if name == "trt":
            return _trt_layer(x, filters, guide, pad, tmp)
        raise _unknown(name)

    for name in names:
        run = build(name)
        # The dense bounds compute another function. torch is checked too: the reference got
        # OIHW filters, the timed call gets them IHWO.
        if not name.endswith("-dense"):
            check(prepared, name, run, reference, device)
        bound = _BOUND[device].get(name)
        prepared.backends.append(
            Backend(name, run, items=spec.batch, bound=bound if bound in names else None, cuda=device == "cuda")
        )
    return prepared


def _trt_layer(x, filters, guide, pad: int, tmp: Path) -> Callable[[], object]:
    from drconv.export.onnx import region_conv_graph
    from drconv.runtime import trt

    cpu = [t.cpu() for t in (x, filters, guide)]
    onnx_path = _saved(region_conv_graph(*cpu, padding=(pad, pad), mode="custom"), tmp, "layer-trt")
    engine_path = tmp / "layer.engine"
    trt.build_engine(onnx_path, engine_path, trt.BuildOptions())
    return trt.EngineRunner(trt.load_engine(engine_path), {"X": x, "filters": filters, "guide": guide})


def model_input(shape: tuple[int, ...], device: str = "cpu", picture: Picture | None = None) -> torch.Tensor:
    """A model's input: the --image's picture at `shape`, or seeded random noise."""
    if picture is not None:
        x = torch.from_numpy(picture(shape))
    else:
        x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    return x.cuda() if device == "cuda" else x


# The runtime a model backend's baseline (--baseline) runs on: a plain network has no
# region convs, so its custom and portable exports are one graph, timed once.
_BASELINE_RUNTIME = {
    "torch": "torch", "ort-custom": "ort", "ort-portable": "ort", "ov-custom": "ov", "ov-portable": "ov", "trt": "trt",
}  # fmt: skip
BASELINE_PREFIX = "baseline:"


def prepare_model(
    spec: str,
    net: torch.nn.Module,
    shape: tuple[int, ...],
    requested: list[str] | None,
    device: str,
    threads: int,
    tmp: Path,
    status: Callable[[str], None] = lambda _: None,
    baseline: tuple[str, torch.nn.Module] | None = None,
    picture: Picture | None = None,
) -> Prepared:
    """Backends for a whole model: PyTorch eager, and the model exported or built for each runtime.

    With a `baseline` (name, model), e.g. the plain twin, the same runtimes also run it, as
    `baseline:torch`, `baseline:ort`, `baseline:ov`, `baseline:trt`, and each backend's bound is the
    baseline on its runtime: the ratio says what the DRConv layers cost end to end.
    """
    prepared = Prepared(config={"mode": "model", "device": device, "model": spec, "input_shape": list(shape)})
    names, chosen = select(requested, MODEL_BACKENDS[device], f"models on {device}")
    names = _available(names, chosen, device, prepared)
    runs = _model_runs(spec, net, shape, names, device, threads, tmp, status, prepared, picture=picture)
    bounds: dict[str, str] = {}
    if baseline is not None:
        base_spec, base_net = baseline
        prepared.config["baseline"] = base_spec
        runtimes = list(dict.fromkeys(_BASELINE_RUNTIME[n] for n in names))
        base_runs = _model_runs(
            base_spec,
            base_net,
            shape,
            runtimes,
            device,
            threads,
            tmp / "baseline",
            status,
            prepared,
            BASELINE_PREFIX,
            picture,
        )
        bounds = {n: BASELINE_PREFIX + _BASELINE_RUNTIME[n] for n in names}
        runs += base_runs
    for name, run in runs:
        prepared.backends.append(Backend(name, run, items=shape[0], bound=bounds.get(name), cuda=device == "cuda"))
    return prepared


def _model_runs(
    spec: str,
    net: torch.nn.Module,
    shape: tuple[int, ...],
    names: list[str],
    device: str,
    threads: int,
    tmp: Path,
    status: Callable[[str], None],
    prepared: Prepared,
    prefix: str = "",
    picture: Picture | None = None,
) -> list[tuple[str, Callable[[], object]]]:
    """(name, one inference) for each runtime of `names`, every one checked against PyTorch eager first."""
    from drconv.export import to_onnx

    tmp.mkdir(parents=True, exist_ok=True)
    x = model_input(shape, device, picture)
    net = net.eval().to(x.device)
    try:
        with torch.no_grad():
            reference = as_numpy(net(x)).astype(np.float64)
    except (RuntimeError, ValueError) as exc:
        raise DrconvError(f"model {spec} cannot run on input {shape}: {str(exc).strip().splitlines()[0]}") from None

    exports: dict[str, Path] = {}

    def exported(mode: str) -> Path:
        """The model exported in `mode`, once for every runtime that reads it (an export takes seconds)."""
        if mode not in exports:
            status(f"exporting {spec} ({mode}) ...")
            exports[mode] = to_onnx(net, x, tmp / f"model-{mode}.onnx", mode=mode)
        return exports[mode]

    def build(name: str) -> Callable[[], object]:
        if name == "torch":
            return lambda: net(x)
        if name in ("ort", "ort-custom", "ort-portable"):
            path = exported("portable" if name == "ort-portable" else "custom")
            sess = ort_session(path, threads)
            feed = {"input": x.numpy()}
            return lambda: sess.run(None, feed)
        if name in ("ov", "ov-custom", "ov-portable"):
            mode = "portable" if name == "ov-portable" else "custom"
            request = ov_compiled(exported(mode), threads, extension=mode == "custom").create_infer_request()
            ov_input = [x.numpy()]
            return lambda: request.infer(ov_input, share_inputs=True)
        if name == "trt":
            from drconv.runtime import trt

            status(f"exporting {spec} and building a TensorRT engine ...")
            path = to_onnx(net.cpu(), x.cpu(), tmp / "model-trt.onnx", dynamic=False)
            net.to(x.device)
            trt.build_engine(path, tmp / "model.engine", trt.BuildOptions())
            return trt.EngineRunner(trt.load_engine(tmp / "model.engine"), {"input": x})
        raise _unknown(name)

    runs = []
    with torch.no_grad():
        for name in names:
            run = build(name)
            if name != "torch":  # PyTorch eager gave the reference
                check(prepared, prefix + name, run, reference, device)
            runs.append((prefix + name, run))
    return runs
