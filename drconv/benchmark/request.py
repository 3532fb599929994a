"""What `drconv benchmark` is asked to time: one request, checked in one place before anything
loads or runs, then prepared into the backends to time (no torch here: exported .onnx files
time without it; the layer and model backends load it when prepared)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drconv import defaults
from drconv.benchmark.timing import Prepared
from drconv.errors import DrconvError
from drconv.model_names import DEFAULT_MODEL, TWINS

__all__ = ["DEFAULT_ITERS", "FILE_SUFFIXES", "BenchmarkRequest", "LoadModel"]

DEFAULT_ITERS = 50
# Targets that are exported files rather than model specs (an existing path is one too).
FILE_SUFFIXES = (".onnx", ".engine", ".plan", ".trt")
# (model spec, checkpoint or None) -> the nn.Module; the CLI's prints what converting it changed.
LoadModel = Callable[[str, "Path | None"], Any]


@dataclass(frozen=True)
class BenchmarkRequest:
    """The command's options, as given (None: not given)."""

    targets: list[str] = field(default_factory=list)  # a model spec and/or exported files
    model: str | None = None
    checkpoint: Path | None = None
    baseline: str | None = None  # a model spec, or "twin"
    backends: list[str] | None = None
    device: str = "cpu"
    batch: int | None = None
    input_shape: tuple[int, ...] | None = None
    layer: str | None = None
    regions: int | None = None
    kernel: int | None = None
    out_channels: int | None = None
    warmup: int = 5
    iters: int | None = None
    seconds: float | None = None
    json_file: Path | None = None
    plot_file: Path | None = None
    check_files: bool = True  # refuse .onnx files whose outputs are not the given model's
    # --image: the input of a given shape (drconv.image.load); None: random noise
    picture: Callable[[tuple[int, ...]], Any] | None = None

    @property
    def specs(self) -> list[str]:
        return [t for t in self.targets if not _is_file(t)]

    @property
    def files(self) -> list[Path]:
        return [Path(t) for t in self.targets if _is_file(t)]

    def checked(self) -> BenchmarkRequest:
        """The request with its defaults filled in, or a DrconvError naming the option to fix.

        Everything that can be told from the options alone is checked here, before torch or a
        model loads: options the chosen mode would silently ignore, conflicting ones, and
        output files that cannot be written.
        """
        from drconv._atomic import check_writable

        if self.iters is not None and self.seconds is not None:
            raise DrconvError("give --iters or --seconds, not both")
        self._check_mode()
        if len(self.specs) > 1:
            raise DrconvError(f"benchmark one model at a time, got {', '.join(self.specs)}")
        for path, flag in ((self.json_file, "--json"), (self.plot_file, "--plot")):
            if path is not None:
                check_writable(path, flag)
        if self.plot_file is not None:  # matplotlib missing or a format it lacks: one line now, not after timing
            from drconv.benchmark.report import image_format

            image_format(self.plot_file)
        iters = DEFAULT_ITERS if self.iters is None and self.seconds is None else self.iters
        return dataclasses.replace(self, iters=iters)

    def _check_mode(self) -> None:
        """Options that the chosen mode (--layer, or models and files) would silently ignore are mistakes."""
        if self.layer is not None:
            given = (
                (self.targets, "TARGETs"),
                (self.model, "--model"),
                (self.input_shape, "--input-shape"),
                (self.checkpoint, "--checkpoint"),
                (self.baseline, "--baseline"),
                (self.picture, "--image"),
            )
            for value, what in given:
                if value:
                    raise DrconvError(f"{what} is for models and files, not --layer (which takes CxHxW, with --batch)")
        elif any(v is not None for v in (self.regions, self.kernel, self.out_channels)):
            raise DrconvError("--regions, --kernel and --out-channels describe a --layer: add --layer CxHxW")

    @property
    def needs_torch(self) -> bool:
        """Whether timing this needs torch: a layer, a model, an engine or CUDA (exported .onnx files alone do not)."""
        onnx_only = bool(self.files) and all(f.suffix == ".onnx" for f in self.files)
        return not (self.layer is None and not self.specs and self.model is None and onnx_only and self.device == "cpu")

    @property
    def shape(self) -> tuple[int, ...]:
        """A model's input: --input-shape (or the default) with --batch as its N."""
        shape = self.input_shape or defaults.INPUT_SHAPE
        return (self.batch or shape[0], *shape[1:])

    def layer_spec(self):
        """The --layer's region conv (drconv.benchmark.backends.LayerSpec; needs torch)."""
        from drconv.benchmark.backends import LayerSpec

        return LayerSpec.parse(
            self.layer or "",
            self.regions or defaults.LAYER_REGIONS,
            self.kernel or defaults.LAYER_KERNEL,
            self.out_channels,
            self.batch or defaults.LAYER_BATCH,
        )

    def prepare(
        self, threads: int, tmp: Path, status: Callable[[str], None], load_model: LoadModel
    ) -> tuple[Prepared, str]:
        """The backends to time, each checked against the reference, and the run's title."""
        if self.layer is not None:
            from drconv.benchmark import backends as bk

            spec = self.layer_spec()
            prepared = bk.prepare_layer(spec, self.backends, self.device, threads, tmp)
            return prepared, f"region conv {spec.describe()}"
        prepared, what = self._prepare_targets(threads, tmp, status, load_model)
        return prepared, f"{what} on input {'x'.join(map(str, self.shape))}"

    def _prepare_targets(
        self, threads: int, tmp: Path, status: Callable[[str], None], load_model: LoadModel
    ) -> tuple[Prepared, str]:
        """Backends for a model (a TARGET, --model, or the default when no file is given) and for files."""
        from drconv.benchmark.files import FILE_BACKENDS

        specs, files = self.specs, self.files
        if specs and self.model is not None:
            raise DrconvError(f"give the model once: as a TARGET ({specs[0]}) or with --model ({self.model})")
        name = specs[0] if specs else self.model
        if name is None and not files:
            name = DEFAULT_MODEL
        # --backend ort,ov: the runtimes of the .onnx files; the other names are the model's backends.
        runtimes = tuple(b for b in FILE_BACKENDS if b in (self.backends or []))
        requested = [b for b in self.backends if b not in FILE_BACKENDS] if self.backends else None
        if runtimes and not files:
            raise DrconvError(f"--backend {', '.join(runtimes)}: those time .onnx files; give one")
        if name is None and requested:
            raise DrconvError(
                "--backend chooses the backends of a model or --layer; .onnx files run in ort (default) or ov, "
                ".engine files as given"
            )
        if name is None and self.baseline is not None:
            raise DrconvError("--baseline compares a model (a TARGET or --model) with another; give the model")
        if name is None and self.checkpoint is not None:
            raise DrconvError(
                "--checkpoint loads weights into a model (a TARGET or --model); exported files carry theirs"
            )
        prepared = None
        if name is not None:
            from drconv.benchmark import backends as bk

            net = load_model(name, self.checkpoint)
            baseline = self._baseline(name, load_model)
            prepared = bk.prepare_model(
                name, net, self.shape, requested, self.device, threads, tmp, status, baseline, self.picture
            )
        if files:
            from drconv.benchmark.files import prepare_files

            reference = None
            if name is not None and self.check_files:  # the files must be this model's exports

                def reference_run(x):
                    import torch

                    with torch.no_grad():
                        return net(torch.from_numpy(x))

                reference = (name, reference_run)
            from_files = prepare_files(
                files, self.shape, self.device, threads, reference, runtimes or ("ort",), self.picture
            )
            if prepared is None:
                return from_files, ", ".join(f.name for f in files)
            prepared.backends += from_files.backends
            prepared.errors |= from_files.errors
            prepared.config["files"] = from_files.config["files"]
        return prepared, ", ".join([name, *(f.name for f in files)])

    def _baseline(self, name: str, load_model: LoadModel) -> tuple[str, Any] | None:
        """(name, model) of --baseline for the model `name`; 'twin' is the plain twin of a zoo model."""
        if self.baseline is None:
            return None
        spec = self.baseline
        if spec == "twin":
            if name not in TWINS:
                raise DrconvError(f"--baseline twin: {name} has no plain twin (models with one: {', '.join(TWINS)})")
            spec = TWINS[name]
        return spec, load_model(spec, None)


def _is_file(target: str) -> bool:
    path = Path(target)
    return path.suffix in FILE_SUFFIXES or path.exists()
