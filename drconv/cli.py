"""The `drconv` command line: one function per command, user mistakes as one line and a non-zero exit."""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import sys
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from typer.core import TyperArgument, TyperCommand, TyperGroup

from drconv import defaults, model_names
from drconv.errors import DrconvError, UsageError, missing_dependency
from drconv.model_names import DEFAULT_MODEL

app = typer.Typer(
    name="drconv",
    help="Deploy Dynamic Region-Aware Convolution (DRConv) models: inspect, export, verify, build, serve, benchmark.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# User text (model specs, paths, node names, error messages) prints literally: no rich
# markup, no emoji codes (":factory" must not become an emoji), no highlighting; our own
# styles come as Text with a style.
# Output that is not a terminal (a file, a pipe) is as wide as it needs, within reason, so that
# names are never cut; text columns fold rather than end in "…" where even that is too narrow.
_PIPED_WIDTH = 240


def _console(stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    piped = not stream.isatty()  # (COLUMNS too is ignored there: test runners and CI set it to 80)
    return Console(stderr=stderr, markup=False, emoji=False, highlight=False, width=_PIPED_WIDTH if piped else None)


console = _console()
err_console = _console(stderr=True)

F = TypeVar("F", bound=Callable)


def flag(*names: str, **kwargs: Any) -> Any:
    """typer.Option for a bool flag: no `<bool>` metavar in the help (a flag takes no value)."""
    return typer.Option(*names, metavar="", **kwargs)


def output_file(text: str) -> Path:
    """An output file's path as typed: one that ends in a separator names a folder, not a file."""
    if text.endswith(("/", os.sep)):
        raise typer.BadParameter(f"{text!r} ends in {text[-1]!r}, so it names a folder: give a file name")
    return Path(text)


def check_threads(threads: int | None) -> int | None:
    """Refuse more threads than this process may run on: the timings would measure the oversubscription."""
    from drconv.benchmark.timing import available_cores

    cores = available_cores()
    if threads is not None and threads > cores:
        raise DrconvError(
            f"--threads {threads}: this process may run on {cores} CPU core{'s' if cores != 1 else ''}; "
            f"give --threads {cores} or fewer"
        )
    return threads


def _models():
    """drconv.models, imported on first use: it loads torch, which `drconv info` does not need."""
    from drconv import models

    return models


ModelOption = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        help="A built-in model name (see `drconv models`), or package.module:factory or path/to/file.py:factory "
        "returning an nn.Module.",
    ),
]
CheckpointOption = Annotated[
    Path | None,
    typer.Option("--checkpoint", "-c", help="A state_dict (.pt) to load into the model.", dir_okay=False),
]


ImageOption = Annotated[
    Path | None,
    typer.Option(
        "--image",
        help="A picture (JPEG, PNG, ...) as the input instead of random noise: resized to the input size, "
        "scaled to [0, 1], normalised by --mean/--std; a batch repeats it.",
        dir_okay=False,
        metavar="FILE",
    ),
]
MeanOption = Annotated[
    str | None,
    typer.Option("--mean", help="Per-channel mean for --image (default ImageNet's 0.485,0.456,0.406).", metavar="M"),
]
StdOption = Annotated[
    str | None,
    typer.Option("--std", help="Per-channel std for --image (default ImageNet's 0.229,0.224,0.225).", metavar="S"),
]


def picture_input(image: Path | None, shape: tuple[int, ...], mean: str | None, std: str | None):
    """The --image as a float32 array of `shape`, or None without one (--mean/--std need it)."""
    from drconv import image as image_mod

    if image is None:
        if mean is not None or std is not None:
            raise UsageError("--mean and --std apply to an --image; give one")
        return None
    return image_mod.load(image, shape, image_mod.parse_floats(mean, "--mean"), image_mod.parse_floats(std, "--std"))


def display_picture(image: Path | None, shape: tuple[int, ...], longest: int = 320):
    """The --image as RGB to draw on, at the input's aspect, its longer side `longest` pixels (None without one)."""
    from drconv import image as image_mod

    if image is None:
        return None
    h, w = shape[2], shape[3]
    scale = longest / max(h, w)
    return image_mod.rgb(image, (max(1, round(h * scale)), max(1, round(w * scale))))


def _fail(exc: Exception) -> NoReturn:
    err_console.print(Text.assemble(("error:", "bold red"), f" {exc}"), soft_wrap=True)
    raise typer.Exit(getattr(exc, "exit_code", 1)) from None


def user_errors(fn: F) -> F:
    """Turn the mistakes a user can fix into one line on stderr and exit code 1, no traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ImportError as exc:
            missing = missing_dependency(exc, f"drconv {fn.__name__.removesuffix('_cmd')}")
            if missing is None:
                raise
            _fail(missing)
        except (DrconvError, ValueError) as exc:
            _fail(exc)
        except (MemoryError, RuntimeError) as exc:  # torch's CPU allocator raises RuntimeError
            if not isinstance(exc, MemoryError) and "can't allocate memory" not in str(exc):
                raise
            flags = "--layer or --batch" if kwargs.get("layer") else "--input-shape, --batch or --size"
            _fail(DrconvError(f"out of memory on this input; give a smaller {flags}"))

    return wrapper  # type: ignore[return-value]


def _announce(line: str) -> None:
    """Tell the user on stderr what loading their model changed (stdout may carry JSON)."""
    err_console.print(line, soft_wrap=True)


def _memory_gib() -> tuple[float, float]:
    """This machine's (available, total) memory in GiB, from /proc/meminfo (sysconf elsewhere)."""
    try:
        info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines() if ":" in line)
        total, available = (int(info[key].split()[0]) / 2**20 for key in ("MemTotal", "MemAvailable"))
    except (OSError, KeyError, ValueError):
        total = available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return available, total


def check_fits(shape: tuple[int, ...], flag: str = "--input-shape", floats: int | None = None) -> None:
    """Refuse, before anything is allocated, an input that alone is larger than this machine's free memory.

    `floats`: the float32 values the work holds, where more than the input (a --layer's filters).
    """
    need = (floats or math.prod(shape)) * 4 / 2**30
    available, total = _memory_gib()
    if need > available:

        def gib(x: float) -> str:
            return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"

        what = "x".join(map(str, shape))
        raise DrconvError(
            f"{'input ' if floats is None else ''}{what} needs ~{gib(need)} GiB as float32, this machine has "
            f"{gib(available)} GiB available ({gib(total)} GiB in all); give a smaller {flag}"
        )


def parse_shape(text: str) -> tuple[int, ...]:
    """'1,3,224,224' or '1x3x224x224' -> (1, 3, 224, 224)."""
    parts = text.replace("x", ",").split(",")
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a shape like 1,3,224,224") from None
    if len(shape) != 4 or min(shape) < 1:
        raise typer.BadParameter(f"{text!r} must be 4 positive sizes N,C,H,W")
    check_fits(shape)
    return shape


def _version_callback(value: bool) -> None:
    if value:
        from drconv import __version__

        console.print(f"drconv {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, flag("--version", callback=_version_callback, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Deploy DRConv models to ONNX Runtime and TensorRT at the cost of one dense convolution."""


@app.command()
@user_errors
def models() -> None:
    """List the built-in models (use one with --model NAME)."""
    table = Table(title="built-in models")
    table.add_column("name", style="bold", overflow="fold")
    table.add_column("description", overflow="fold")
    for name in model_names.names():  # no torch: a machine that only runs exports lists them too
        default = " (default)" if name == DEFAULT_MODEL else ""
        table.add_row(name + default, model_names.describe(name))
    console.print(table)
    console.print("Your own: --model package.module:factory or path/to/file.py:factory [--checkpoint weights.pt]")


@app.command()
@user_errors
def info(
    as_json: Annotated[bool, flag("--json", help="Print machine-readable JSON instead of a table.")] = False,
) -> None:
    """Versions, CUDA availability and the paths of the built native libraries."""
    from drconv import info as info_mod

    data = info_mod.collect()
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    table = Table(title="drconv environment", show_header=False)
    table.add_column("key", style="bold", overflow="fold")
    table.add_column("value", overflow="fold")
    for key, value in data.items():
        if key == "plugins":
            for backend, path in value.items():
                reason = data["plugins_left_out"].get(backend, "reinstall drconv, or `make plugins` in a checkout")
                table.add_row(f"plugin: {backend}", path or f"not built: {reason}")
        elif key != "plugins_left_out":
            table.add_row(key, "-" if value is None else str(value))
    console.print(table)


@app.command()
@user_errors
def summary(
    model: ModelOption = DEFAULT_MODEL,
    checkpoint: CheckpointOption = None,
    input_shape: Annotated[
        str, typer.Option("--input-shape", help="Input shape N,C,H,W of the forward pass.")
    ] = defaults.shape_text(defaults.INPUT_SHAPE),
    seed: Annotated[int, typer.Option(help="Seed of the random input.")] = 0,
    as_json: Annotated[
        bool,
        flag(
            "--json",
            help="Print one JSON object (totals, every counted layer, DRConv region shares) instead of tables.",
        ),
    ] = False,
    image: ImageOption = None,
    mean: MeanOption = None,
    std: StdOption = None,
) -> None:
    """Run one forward pass and summarise the model: shapes, parameters, multiply-adds, DRConv region use, latency."""
    import dataclasses

    import torch

    from drconv.summary import format_count, run_summary

    shape = parse_shape(input_shape)
    picture = picture_input(image, shape, mean, std)
    net = _models().load_model(model, checkpoint, on_convert=_announce)
    if picture is None:
        x = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    else:
        x = torch.from_numpy(picture)
    try:
        report = run_summary(net, x)
    except RuntimeError as exc:  # e.g. a channel mismatch inside a user's model
        raise DrconvError(f"model {model} cannot run on input {shape}: {str(exc).splitlines()[0]}") from exc

    if as_json:
        # stdout carries the JSON object alone, so that it pipes into other tools.
        data = {
            "model": model,
            "input_shape": list(report.input_shape),
            "output_shape": list(report.output_shape),
            "parameters": report.parameters,
            "multiply_adds": report.multiply_adds,
            "latency_ms": report.latency_ms,
            "threads": torch.get_num_threads(),
            "layers": [dataclasses.asdict(layer) for layer in report.layers],
            "drconv_layers": [dataclasses.asdict(layer) for layer in report.drconv_layers],
        }
        typer.echo(json.dumps(data))
        return

    table = Table(title=f"{model}: DRConv layers on input {shape}")
    # Fold long names rather than cut them: a block's two region convs differ only at the end.
    table.add_column("layer", overflow="fold")
    for col in ("in", "out", "params", "R", "pixels per region (%)"):
        table.add_column(col)
    for layer in report.drconv_layers:
        shares = " ".join(f"{100 * s:.0f}" for s in layer.region_share)
        table.add_row(
            layer.name,
            "x".join(map(str, layer.input_shape[1:])),
            "x".join(map(str, layer.output_shape[1:])),
            f"{layer.params:,}",
            str(layer.regions),
            shares,
        )
    console.print(table)
    console.print(
        f"parameters {report.parameters:,} ({format_count(report.parameters)})  "
        f"multiply-adds {format_count(report.multiply_adds)} per image"
    )
    console.print(
        f"input {report.input_shape}  output {report.output_shape}  "
        f"forward {report.latency_ms:.1f} ms (median of 3, {torch.get_num_threads()} threads)"
    )


def _print_onnx_summary(path: Path) -> None:
    from drconv.export import describe

    d = describe(path)
    ops = Text("  ops: ")
    for i, (op, n) in enumerate(d["ops"].items()):
        ops.append(("  " if i else "") + op, style="bold" if "::" in op else "")
        ops.append(f" x{n}")
    opsets = ", ".join(f"{k} {v}" for k, v in d["opsets"].items())
    console.print(
        Text.assemble((str(path), "bold"), f": {d['nodes']} nodes, {d['bytes'] / 1e6:.1f} MB, opsets {opsets}")
    )
    console.print(ops)
    console.print(f"  custom nodes: {len(d['custom_nodes'])}")
    for kind in ("inputs", "outputs"):
        for name, shape in d[kind].items():
            console.print(f"  {kind[:-1]} {name}: [{', '.join(map(str, shape))}]")


def _print_verify(report) -> None:
    table = Table(title=f"{report.runtime} vs PyTorch on input {report.input_shape}")
    for col in ("output", "shape", "max abs err", "max rel err", f"atol {report.atol:g} + rtol {report.rtol:g}"):
        table.add_column(col, overflow="fold")
    for out in report.outputs:
        verdict = Text("ok", style="green") if out.ok else Text("FAIL", style="bold red")
        table.add_row(out.name, "x".join(map(str, out.shape)), f"{out.max_abs:.3g}", f"{out.max_rel:.3g}", verdict)
    console.print(table)
    if report.regions:
        regions = Table(title="region agreement: pixels routed to the region PyTorch chose")
        columns = ("DRConv layer", "node", "pixels", "agreement", "min top-2 margin", "softmax rule differs",
                   f">= {report.min_agreement:g}")  # fmt: skip
        for col in columns:
            regions.add_column(col, overflow="fold")
        for r in report.regions:
            ok = r.agreement >= report.min_agreement
            verdict = Text("ok", style="green") if ok else Text("FAIL", style="bold red")
            margin = "-" if r.min_margin is None else f"{r.min_margin:.3g}"
            regions.add_row(
                r.layer, r.node, str(r.pixels), f"{r.agreement:.4%}", margin, str(r.softmax_differs), verdict
            )
        console.print(regions)
    if report.regions_note:
        err_console.print(f"note: region agreement not measured: {report.regions_note}", soft_wrap=True)


class ExportMode(str, Enum):
    custom = "custom"
    portable = "portable"


class Runtime(str, Enum):  # drconv.verify.RUNTIMES
    ort = "ort"
    openvino = "openvino"


class FilterLayout(str, Enum):  # drconv.export.rewrite.FILTER_LAYOUTS
    IHWO = "IHWO"
    OIHW = "OIHW"


# verify's random input where the file's axes are symbolic
VERIFY_BATCH, VERIFY_SIZE = 2, 64
AtolOption = Annotated[float, typer.Option("--atol", help="Absolute tolerance.", min=0)]
RtolOption = Annotated[float, typer.Option("--rtol", help="Relative tolerance (numpy.allclose's rule).", min=0)]


def _run_verify(
    path: Path,
    net,
    batch: int,
    size: int,
    atol: float,
    rtol: float,
    min_agreement: float | None = None,
    as_json: bool = False,
    runtime: str = "ort",
    inputs=None,
    plot: Path | None = None,
    picture=None,
) -> None:
    from drconv.verify import DEFAULT_MIN_AGREEMENT, RUNTIMES, verify_onnx

    if plot is not None:
        from drconv.benchmark.report import image_format

        image_format(plot)  # a bad name is refused before the work

    with err_console.status(f"verifying {path.name} with {RUNTIMES[runtime]} ..."):
        report = verify_onnx(
            path,
            net,
            batch=batch,
            size=size,
            atol=atol,
            rtol=rtol,
            min_agreement=DEFAULT_MIN_AGREEMENT if min_agreement is None else min_agreement,
            runtime=runtime,
            inputs=inputs,
        )
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        _print_verify(report)
    if plot is not None:
        from drconv import regions

        found = [regions.Disagreement(layers, ours != theirs) for layers, ours, theirs in report.region_maps]
        title = f"{path.name}: pixels {report.runtime} routes to another region than PyTorch"
        regions.plot_disagreements(found, picture, plot, title)
        (err_console if as_json else console).print(f"wrote {plot}")
    problems = []
    if not report.outputs_ok:
        problems.append(f"differs from PyTorch beyond atol {atol:g} + rtol {rtol:g}")
    if not report.regions_ok:
        worst = min(report.regions, key=lambda r: r.agreement)
        problems.append(
            f"routes {1 - worst.agreement:.2%} of {worst.layer}'s pixels to another region than PyTorch "
            f"(agreement below {report.min_agreement:g})"
        )
    if problems:
        err_console.print(Text.assemble(("error:", "bold red"), f" {path} {'; and '.join(problems)}"), soft_wrap=True)
        raise typer.Exit(1)


@app.command()
@user_errors
def export(
    output: Annotated[
        Path, typer.Option("--output", "-o", help="The .onnx file to write.", parser=output_file, metavar="FILE")
    ],
    model: ModelOption = DEFAULT_MODEL,
    checkpoint: CheckpointOption = None,
    mode: Annotated[
        ExportMode,
        typer.Option(
            help="custom: one drconv node per region conv, with its standard-op body as an ONNX function "
            "for runtimes without drconv's library; portable: those functions inlined, standard ONNX ops only."
        ),
    ] = ExportMode.custom,
    input_shape: Annotated[
        str, typer.Option("--input-shape", help="Sample input N,C,H,W to trace with.")
    ] = defaults.shape_text(defaults.INPUT_SHAPE),
    static: Annotated[
        bool, flag("--static", help="Fix batch, height and width to --input-shape (default: dynamic).")
    ] = False,
    opset: Annotated[
        int,
        typer.Option(
            help=f"Default-domain ONNX opset: {defaults.ONNX_OPSET} up to the newest the installed onnx knows."
        ),
    ] = defaults.ONNX_OPSET,
    verify: Annotated[
        bool, flag("--verify", help="Afterwards, compare ONNX Runtime with PyTorch (drconv verify).")
    ] = False,
    filter_layout: Annotated[
        FilterLayout,
        typer.Option(
            "--filter-layout",
            help="Custom nodes' filters: IHWO (read by the CPU kernel without packing; drconv build and CUDA "
            "sessions convert it) or OIHW.",
        ),
    ] = FilterLayout.IHWO,
    fuse: Annotated[
        bool,
        flag(
            "--fuse/--no-fuse",
            help="Fold the BatchNormalization and ReLU after each region conv into its node (drconv build and CUDA "
            "sessions split them out again).",
        ),
    ] = True,
    plugin_v1: Annotated[
        bool,
        flag(
            "--plugin-v1",
            help="Write version 1 of the node only (RegionConv2d, OIHW, with standard ops around it) and no "
            "functions, for trtexec and other tools that load the TensorRT plugin themselves.",
        ),
    ] = False,
) -> None:
    """Export a model to ONNX: DRConv layers as custom nodes (custom) or standard ops (portable)."""
    import torch

    from drconv.export import to_onnx

    shape = parse_shape(input_shape)
    if not static and 1 in shape[2:]:  # torch.export makes a size of 1 a constant (batch 1 is handled)
        err_console.print(
            f"note: --input-shape {'x'.join(map(str, shape))} has a height or width of 1, which torch.export "
            "fixes: those axes will be static; trace with sizes above 1 for dynamic ones",
            soft_wrap=True,
        )
    net = _models().load_model(model, checkpoint, on_convert=_announce)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    with console.status(f"exporting {model} ({mode.value}, {'static' if static else 'dynamic'} shapes) ..."):
        to_onnx(
            net,
            x,
            output,
            mode=mode.value,
            dynamic=not static,
            opset=opset,
            layout=filter_layout.value,
            fuse=fuse,
            node_version=1 if plugin_v1 else None,
        )
    console.print("wrote ", end="")
    _print_onnx_summary(output)
    if verify:
        batch, size = (shape[0], shape[2]) if static else (shape[0] + 1, _models().other_size(net, shape[2]))
        _run_verify(output, net, batch, size, atol=1e-4, rtol=1e-3)


@app.command("verify")
@user_errors
def verify_cmd(
    onnx_file: Annotated[Path, typer.Argument(help="The exported .onnx file.", dir_okay=False)],
    model: ModelOption = DEFAULT_MODEL,
    checkpoint: CheckpointOption = None,
    atol: AtolOption = 1e-4,
    rtol: RtolOption = 1e-3,
    batch: Annotated[
        int | None,
        typer.Option(
            # typer's help is rich markup: a bracket is escaped to show
            help=f"Batch size of the random input (where the batch axis is symbolic). \\[default: {VERIFY_BATCH}]",
            min=1,
            show_default=False,
        ),
    ] = None,
    size: Annotated[
        int | None,
        typer.Option(
            help=f"Height and width of the random input (where symbolic). \\[default: {VERIFY_SIZE}]",
            min=1,
            show_default=False,
        ),
    ] = None,
    min_agreement: Annotated[
        float,
        typer.Option(
            "--min-agreement",
            help="Least share of pixels each DRConv layer must route to the region PyTorch chose; below it the "
            "runtime convolves those pixels with another region's filter, and verify exits 1.",
            min=0.0,
            max=1.0,
        ),
    ] = defaults.MIN_AGREEMENT,
    as_json: Annotated[bool, flag("--json", help="Print the report as JSON instead of tables.")] = False,
    runtime: Annotated[
        Runtime,
        typer.Option(
            help="Where to run the export: ONNX Runtime (ort) or OpenVINO (openvino, CPU, float32), each with "
            "drconv's library."
        ),
    ] = Runtime.ort,
    plot: Annotated[
        Path | None,
        typer.Option(
            "--plot",
            help="Draw, per guide, the pixels the runtime routes to another region than PyTorch (over --image "
            "if given), in the format the extension names.",
            parser=output_file,
            metavar="FILE",
        ),
    ] = None,
    image: ImageOption = None,
    mean: MeanOption = None,
    std: StdOption = None,
) -> None:
    """Run PyTorch and a runtime on one random input (or --image) and compare every output; exit 1 above tolerance."""
    from drconv.runtime.ort import image_input

    if not onnx_file.is_file():
        raise DrconvError(f"{onnx_file}: no such file")
    _, dims = image_input(onnx_file)
    flags = {"--batch": (batch, [0]), "--size": (size, [2, 3])}  # as given, for the note below
    batch, size = batch or VERIFY_BATCH, size or VERIFY_SIZE
    shape = tuple(d or given for d, given in zip(dims, (batch, 3, size, size), strict=True))
    check_fits(shape, "--batch or --size")
    ignored = [f for f, (given, axes) in flags.items() if given is not None and all(dims[a] is not None for a in axes)]
    if ignored:  # a static export runs at its own shape only
        fixed = "x".join("?" if d is None else str(d) for d in dims)
        verb = "does" if len(ignored) == 1 else "do"
        err_console.print(
            f"note: {onnx_file.name} has a fixed input shape {fixed}, so {' and '.join(ignored)} {verb} not apply; "
            "verifying at that shape",
            soft_wrap=True,
        )
    inputs = picture_input(image, shape, mean, std)
    net = _models().load_model(model, checkpoint, on_convert=_announce)
    _run_verify(
        onnx_file, net, batch, size, atol, rtol, min_agreement, as_json, runtime.value,
        inputs=inputs, plot=plot, picture=display_picture(image, shape),
    )  # fmt: skip


@app.command()
@user_errors
def regions(
    image: Annotated[Path, typer.Argument(help="The picture (JPEG, PNG, ...).", dir_okay=False, show_default=False)],
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            help="The drawing to write, in the format its extension names (.png, .svg, .pdf, ...).",
            parser=output_file,
            metavar="FILE",
        ),
    ],
    model: Annotated[
        str,
        typer.Option(
            "--model",
            "-m",
            help="A built-in model name, package.module:factory or path/to/file.py:factory (PyTorch), or an "
            "exported .onnx file (run in --runtime).",
        ),
    ] = DEFAULT_MODEL,
    checkpoint: CheckpointOption = None,
    runtime: Annotated[
        Runtime, typer.Option(help="Where an .onnx --model runs: ONNX Runtime (ort) or OpenVINO (openvino).")
    ] = Runtime.ort,
    input_shape: Annotated[
        str,
        typer.Option(
            "--input-shape", help="The input N,C,H,W the picture is resized to (a .onnx file's fixed axes win)."
        ),
    ] = defaults.shape_text(defaults.INPUT_SHAPE),
    mean: MeanOption = None,
    std: StdOption = None,
    json_file: Annotated[
        Path | None,
        typer.Option(
            "--json",
            help="Also write every guide's layers, resolution and region shares as JSON.",
            parser=output_file,
            metavar="FILE",
        ),
    ] = None,
) -> None:
    """Draw every guide's region map over a picture: one panel per guide, one colour per region."""
    from drconv import regions as regions_mod
    from drconv.benchmark.report import image_format, write_json
    from drconv.verify import RUNTIMES

    image_format(output, "-o")
    shape = parse_shape(input_shape)
    exported = model.endswith(".onnx")
    if exported:
        from drconv.runtime.ort import image_input

        if checkpoint is not None:
            raise UsageError("--checkpoint loads weights into a PyTorch model; an .onnx file has its own")
        _, dims = image_input(Path(model))
        shape = tuple(d or given for d, given in zip(dims, shape, strict=True))
    x = picture_input(image, shape, mean, std)
    if exported:
        with err_console.status(f"running {model} in {RUNTIMES[runtime.value]} ..."):
            maps = regions_mod.from_runtime(model, x, runtime.value)
        source = f"{Path(model).name} ({RUNTIMES[runtime.value]})"
    else:
        import torch

        net = _models().load_model(model, checkpoint, on_convert=_announce)
        maps = regions_mod.from_torch(net, torch.from_numpy(x))
        source = model + (f" + {checkpoint.name}" if checkpoint else "")
    regions_mod.plot(maps, display_picture(image, shape), output, f"{source}: regions over {image.name}")
    layers = sum(len(m.layers) for m in maps)
    guides = f"{len(maps)} guide{'s' if len(maps) != 1 else ''}"
    console.print(f"wrote {output}: {guides}, {layers} layer{'s' if layers != 1 else ''}")
    if json_file is not None:
        write_json(
            json_file,
            {"image": str(image), "model": model, "input_shape": list(shape), "guides": [m.to_json() for m in maps]},
        )
        console.print(f"wrote {json_file}")


@app.command()
@user_errors
def build(
    onnx_file: Annotated[Path, typer.Argument(help="An ONNX file from `drconv export` (custom mode).", dir_okay=False)],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="The engine file to write.", parser=output_file, metavar="FILE")
    ],
    fp16: Annotated[bool, flag("--fp16", help="Allow float16 kernels (TensorRT 10; 11 reads the ONNX types).")] = False,
    min_shape: Annotated[
        list[str] | None, typer.Option("--min-shape", help="Smallest input shape, input:NxCxHxW.", metavar="SHAPE")
    ] = None,
    opt_shape: Annotated[
        list[str] | None, typer.Option("--opt-shape", help="Shape to tune for, input:NxCxHxW.", metavar="SHAPE")
    ] = None,
    max_shape: Annotated[
        list[str] | None, typer.Option("--max-shape", help="Largest input shape, input:NxCxHxW.", metavar="SHAPE")
    ] = None,
    workspace_mb: Annotated[
        int, typer.Option("--workspace-mb", help="Builder workspace limit in MiB.", min=1)
    ] = defaults.WORKSPACE_MB,
    timing_cache: Annotated[
        Path | None,
        typer.Option("--timing-cache", help="Timing cache to read and update.", parser=output_file, metavar="FILE"),
    ] = None,
) -> None:
    """Build a TensorRT engine (plus a JSON sidecar) from an exported ONNX model, with the drconv plugin."""
    from drconv.runtime import trt

    options = trt.BuildOptions(
        fp16=fp16,
        min_shapes=dict(trt.parse_shape_spec(s) for s in min_shape or []),
        opt_shapes=dict(trt.parse_shape_spec(s) for s in opt_shape or []),
        max_shapes=dict(trt.parse_shape_spec(s) for s in max_shape or []),
        workspace_mb=workspace_mb,
        timing_cache=timing_cache,
    )
    with console.status(f"building a TensorRT engine from {onnx_file} ..."):
        meta = trt.build_engine(onnx_file, output, options)
    console.print(
        f"wrote {output} and {output.name}.json: TensorRT {meta['tensorrt']}, {meta['precision']}, GPU {meta['gpu']}"
    )


class TritonBackend(str, Enum):
    onnxruntime = "onnxruntime"
    openvino = "openvino"
    tensorrt = "tensorrt"
    python = "python"


MaxBatchOption = Annotated[
    int | None,
    typer.Option(
        "--max-batch-size",
        help="Largest batch Triton's dynamic batcher forms (0: no batching; default 8 where the file's batch axis "
        "is dynamic, else 0).",
        min=0,
        show_default=False,
    ),
]
InstancesOption = Annotated[int, typer.Option("--instances", help="Model instances (instance_group count).", min=1)]


@app.command()
@user_errors
def triton(
    onnx_file: Annotated[Path, typer.Argument(help="An ONNX file from `drconv export` (custom mode).", dir_okay=False)],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="The model repository folder (made if absent).", metavar="DIR")
    ],
    name: Annotated[str | None, typer.Option(help="The model's name and folder (default: the file's stem).")] = None,
    backend: Annotated[
        TritonBackend,
        typer.Option(
            help="Triton backend: onnxruntime, openvino, tensorrt (engine built here where TensorRT is) or "
            "python (drconv.runtime.ort; needs drconv installed beside Triton)."
        ),
    ] = TritonBackend.onnxruntime,
    max_batch_size: MaxBatchOption = None,
    instances: InstancesOption = 1,
    library_dir: Annotated[
        str | None,
        typer.Option(
            "--library-dir",
            help="Where the model's folder (and so drconv's library) will be on the serving machine, e.g. "
            "/models/NAME; Triton wants absolute paths. Default: the folder's absolute path here.",
            metavar="DIR",
        ),
    ] = None,
    input_shape: Annotated[
        str,
        typer.Option("--input-shape", help="tensorrt: the engine's H and W (and C); batch runs 1 to --max-batch-size."),
    ] = defaults.shape_text(defaults.INPUT_SHAPE),
    force: Annotated[bool, flag("--force", help="Replace the model's folder if it exists.")] = False,
) -> None:
    """Write a Triton model repository for an exported model: config.pbtxt, the model, drconv's library."""
    from drconv.serving import repository

    with err_console.status(f"writing {output / (name or onnx_file.stem)} ...") as status:
        written = repository.write(
            onnx_file,
            output,
            name=name,
            backend=backend.value,
            max_batch_size=max_batch_size,
            instances=instances,
            library_dir=library_dir,
            input_shape=parse_shape(input_shape),
            force=force,
            status=status.update,
        )
    console.print(f"wrote {written.folder} for Triton's {backend.value} backend")
    if backend is TritonBackend.tensorrt and written.library:
        console.print(f"serve with: tritonserver --backend-config=tensorrt,plugins={written.library}", soft_wrap=True)
        err_console.print(
            "note: Triton's tensorrt backend only dlopens that library, which registers its plugin only when TensorRT "
            "loads it as a plugin library, so that server does not find the plugin yet (README, Serving)",
            soft_wrap=True,
        )
    if written.todo:
        err_console.print(f"note: {written.todo}", soft_wrap=True)


@app.command()
@user_errors
def serve(
    onnx_file: Annotated[Path, typer.Argument(help="An ONNX file from `drconv export` (custom mode).", dir_okay=False)],
    name: Annotated[str | None, typer.Option(help="The model's name on the server (default: the file's stem).")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on; 0.0.0.0 serves other machines too.")] = "127.0.0.1",
    http_port: Annotated[int, typer.Option("--http-port", help="HTTP (KServe v2) port.", min=1, max=65535)] = 8000,
    grpc_port: Annotated[int, typer.Option("--grpc-port", help="gRPC (KServe v2) port.", min=1, max=65535)] = 8001,
    metrics_port: Annotated[
        int, typer.Option("--metrics-port", help="Prometheus metrics port.", min=1, max=65535)
    ] = 8002,
    max_batch_size: MaxBatchOption = None,
    instances: InstancesOption = 1,
) -> None:
    """Serve an exported model with a real Triton server here (nvidia-pytriton's), until Ctrl-C or SIGTERM."""
    from drconv.serving import server

    def ready(running: server.Server) -> None:
        urls = running.urls
        console.print(f"serving {running.name} (Triton, python backend, drconv's ONNX Runtime kernels)")
        console.print(f"  HTTP     {urls['http']}/v2/models/{running.name}")
        console.print(f"  gRPC     {urls['grpc']}")
        console.print(f"  metrics  {urls['metrics']}")
        console.print(f"load test: drconv benchmark --url {urls['http']} --name {running.name}", soft_wrap=True)
        console.print("stop with Ctrl-C or SIGTERM")
        sys.stdout.flush()

    server.serve(
        onnx_file,
        on_ready=ready,
        on_start=lambda _: err_console.print(f"starting Triton on {onnx_file} ...", soft_wrap=True),
        name=name,
        host=host,
        ports=server.Ports(http_port, grpc_port, metrics_port),
        max_batch_size=max_batch_size,
        instances=instances,
    )
    console.print("stopped")


class Device(str, Enum):
    cpu = "cpu"
    cuda = "cuda"


@app.command()
@user_errors
def benchmark(
    targets: Annotated[
        list[str] | None,
        typer.Argument(
            help="What to time: a model (built-in name or package.module:factory), .onnx files (ONNX Runtime, "
            "or OpenVINO with --backend ov; CPU) and/or .engine files (TensorRT, with --device cuda). "
            "Default: drconv-tiny.",
            show_default=False,
            metavar="TARGET",
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help=f"A model to time (built-in name or package.module:factory), besides any files; "
            f"with no TARGET, {DEFAULT_MODEL}.",
        ),
    ] = None,
    checkpoint: CheckpointOption = None,
    baseline: Annotated[
        str | None,
        typer.Option(
            "--baseline",
            help="Also time this model (built-in name or package.module:factory; 'twin': the plain twin of a zoo "
            "model) on the same runtimes; /bound is then each backend's ratio to it.",
        ),
    ] = None,
    backend: Annotated[
        str | None,
        typer.Option(
            "--backend",
            "-b",
            help="Comma-separated backends (default: all that run here). --layer: torch, torch-naive, torch-dense, "
            "ort-custom, ort-portable, ort-dense, ov-custom, ov-portable, ov-dense (OpenVINO); on cuda torch, "
            "torch-naive, torch-cuda, trt, cudnn-dense. Models: torch, ort-custom, ort-portable, ov-custom, "
            "ov-portable; on cuda torch, trt. .onnx files: ort (default), ov.",
        ),
    ] = None,
    device: Annotated[Device, typer.Option(help="Where PyTorch and TensorRT run (ONNX Runtime runs on the CPU).")] = (
        Device.cpu
    ),
    batch: Annotated[
        int | None,
        typer.Option(help=f"Batch size: N of --input-shape, or of --layer (default {defaults.LAYER_BATCH}).", min=1),
    ] = None,
    input_shape: Annotated[
        str | None,
        typer.Option(
            "--input-shape",
            help=f"Model input N,C,H,W, default {defaults.shape_text(defaults.INPUT_SHAPE)} (symbolic axes of .onnx "
            "files take it).",
        ),
    ] = None,
    layer: Annotated[
        str | None, typer.Option(help="Time one region conv of input CxHxW (e.g. 64x56x56) instead of a model.")
    ] = None,
    regions: Annotated[
        int | None, typer.Option(help=f"Regions R of the --layer (default {defaults.LAYER_REGIONS}).", min=1)
    ] = None,
    kernel: Annotated[
        int | None,
        typer.Option(
            help=f"Filter size k of the --layer (default {defaults.LAYER_KERNEL}; k x k, stride 1, same padding).",
            min=1,
        ),
    ] = None,
    out_channels: Annotated[
        int | None, typer.Option("--out-channels", help="Output channels K of the --layer (default: C).", min=1)
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(
            help="CPU threads of PyTorch and ONNX Runtime, at most one per core (default: one per core).", min=1
        ),
    ] = None,
    warmup: Annotated[int, typer.Option(help="Untimed calls per backend before timing.", min=0)] = 5,
    iters: Annotated[int | None, typer.Option(help="Timed calls per backend (default 50).", min=1)] = (None),
    seconds: Annotated[
        float | None, typer.Option(help="Time for this many seconds in all instead of --iters.", min=0.01)
    ] = None,
    json_file: Annotated[
        Path | None,
        typer.Option(
            "--json",
            help="Write the results as JSON (schema in docs/performance.md).",
            parser=output_file,
            metavar="FILE",
        ),
    ] = None,
    plot_file: Annotated[
        Path | None,
        typer.Option(
            "--plot",
            help="Write a bar chart (p50 bars, p90 whiskers, bound lines) in the format its extension names: "
            ".png, .svg, .pdf, ...",
            parser=output_file,
            metavar="FILE",
        ),
    ] = None,
    image: ImageOption = None,
    mean: MeanOption = None,
    std: StdOption = None,
    url: Annotated[
        str | None,
        typer.Option(
            help="Load-test a running Triton server instead (http://HOST:PORT or grpc://HOST:PORT, as `drconv serve` "
            "prints): concurrent clients, p50/p90/p99, throughput, errors and the batch sizes the server formed; "
            "--iters or --seconds per client.",
            metavar="URL",
        ),
    ] = None,
    name: Annotated[str | None, typer.Option(help="With --url: the served model's name.")] = None,
    clients: Annotated[int, typer.Option(help="With --url: concurrent clients, one connection each.", min=1)] = 8,
    no_check: Annotated[
        bool,
        flag(
            "--no-check",
            help="Time .onnx files given with a model even where their outputs differ from the model's "
            "(by default such a file is refused: it is not that model's export).",
        ),
    ] = False,
) -> None:
    """Time backends side by side in one process, in alternating bursts; p50/p90/p99 and the ratio to the bound."""
    import tempfile

    if url is not None or name is not None:
        given = [
            flag
            for flag, value in (
                ("TARGET", targets),
                ("--model", model),
                ("--layer", layer),
                ("--backend", backend),
                ("--baseline", baseline),
                ("--plot", plot_file),
            )
            if value
        ]
        if url is None or name is None or given:
            raise UsageError(f"a load test takes --url and --name{' and not ' + ', '.join(given) if given else ''}")
        _load_test(url, name, clients, iters, seconds, warmup, batch, input_shape, json_file)
        return

    from drconv.benchmark.request import BenchmarkRequest

    request = BenchmarkRequest(
        targets=targets or [],
        model=model,
        checkpoint=checkpoint,
        baseline=baseline,
        backends=[b.strip() for b in backend.split(",") if b.strip()] if backend else None,
        device=device.value,
        batch=batch,
        input_shape=parse_shape(input_shape) if input_shape else None,
        layer=layer,
        regions=regions,
        kernel=kernel,
        out_channels=out_channels,
        warmup=warmup,
        iters=iters,
        seconds=seconds,
        json_file=json_file,
        plot_file=plot_file,
        check_files=not no_check,
        picture=_picture_maker(image, mean, std),
    ).checked()
    torch = _benchmark_torch(request)
    if request.layer is None:
        check_fits(request.shape, "--input-shape or --batch")
    else:
        spec = request.layer_spec()
        check_fits((spec.batch, spec.channels, spec.height, spec.width), "--layer or --batch", spec.floats())
    threads = check_threads(threads) or _timing().default_threads()
    if torch is not None:
        torch.set_num_threads(threads)

    def load_model(spec: str, weights: Path | None):
        return _models().load_model(spec, weights, on_convert=_announce)

    with tempfile.TemporaryDirectory(prefix="drconv-bench-") as tmp:
        with err_console.status("preparing backends ...") as status:
            prepared, title = request.prepare(threads, Path(tmp), status.update, load_model)
        if not prepared.backends:
            raise DrconvError(f"no backend can run here: {'; '.join(f'{k}: {v}' for k, v in prepared.skipped.items())}")
        title += f", {device.value}, {threads} thread{'s' if threads != 1 else ''}"
        samples = _time_backends(prepared, request, torch)
    _report(request, prepared, samples, title, threads)


@app.command()
@user_errors
def profile(
    target: Annotated[
        str,
        typer.Argument(
            help="An .onnx file, or a model (built-in name or package.module:factory), exported here first "
            "(custom mode).",
            show_default=False,
        ),
    ],
    baseline: Annotated[
        str | None,
        typer.Option(
            "--baseline",
            help="Profile this too and show the difference: an .onnx file, a model, or 'twin' (the plain twin of "
            "a zoo model).",
        ),
    ] = None,
    runtime: Annotated[
        Runtime, typer.Option(help="ONNX Runtime (ort) or OpenVINO (openvino, CPU, float32), with drconv's library.")
    ] = Runtime.ort,
    input_shape: Annotated[
        str | None,
        typer.Option(
            "--input-shape",
            help=f"Input N,C,H,W, default {defaults.shape_text(defaults.INPUT_SHAPE)} (a file's symbolic axes "
            "take it).",
        ),
    ] = None,
    threads: Annotated[
        int | None, typer.Option(help="Inference threads, at most one per core (default: one per core).", min=1)
    ] = None,
    runs: Annotated[int, typer.Option(help="Profiled runs, after 10 unprofiled ones.", min=1)] = 100,
    json_file: Annotated[
        Path | None, typer.Option("--json", help="Write the table as JSON.", parser=output_file, metavar="FILE")
    ] = None,
) -> None:
    """Time per operator type from the runtime's own profiler: nodes and µs per run, beside a baseline's."""
    import tempfile

    from drconv._atomic import check_writable
    from drconv.benchmark import profile as prof

    if json_file is not None:
        check_writable(json_file, "--json")
    shape = parse_shape(input_shape) if input_shape else defaults.INPUT_SHAPE
    check_fits(shape)
    threads = check_threads(threads) or _timing().default_threads()
    with tempfile.TemporaryDirectory(prefix="drconv-profile-") as tmp:
        with err_console.status("profiling ...") as status:
            path = _profiled_file(target, shape, Path(tmp) / "model.onnx", status.update)
            base = None
            if baseline is not None:
                spec = _twin(target) if baseline == "twin" else baseline
                base = _profiled_file(spec, shape, Path(tmp) / "baseline.onnx", status.update)
            status.update(f"profiling {target} in {runtime.value} ...")
            mine = prof.profile_file(path, runtime.value, shape, threads, runs)
            theirs = None
            if base is not None:
                status.update(f"profiling {baseline} in {runtime.value} ...")
                theirs = prof.profile_file(base, runtime.value, shape, threads, runs)
    rows = prof.compare(mine, theirs)
    title = f"{target} in {runtime.value}, input {'x'.join(map(str, shape))}, {threads} threads: µs per run"
    console.print(_profile_table(title, rows, mine, theirs, baseline))
    console.print(
        "from the runtime's profiler, which adds its own cost to every node: read the shares and the differences"
    )
    if json_file is not None:
        from drconv.benchmark import report

        totals = {"total_us": round(prof.totals(mine).us, 2)}
        if theirs is not None:
            totals["baseline_total_us"] = round(prof.totals(theirs).us, 2)
        document = {"target": target, "baseline": baseline, "runtime": runtime.value, "input_shape": list(shape),
                    "threads": threads, "runs": runs, **totals, "ops": rows}  # fmt: skip
        report.write_json(json_file, document)
        console.print(f"wrote {json_file}")


def _twin(target: str) -> str:
    from drconv.model_names import TWINS

    if target not in TWINS:
        raise DrconvError(f"--baseline twin: {target} has no plain twin (models with one: {', '.join(TWINS)})")
    return TWINS[target]


def _profiled_file(target: str, shape: tuple[int, ...], out: Path, status: Callable[[str], None]) -> Path:
    """`target` itself where it is an .onnx file, else the model it names exported to `out`."""
    path = Path(target)
    if path.suffix == ".onnx" or path.is_file():
        if not path.is_file():
            raise DrconvError(f"{path}: no such file")
        return path
    import torch

    from drconv.export import to_onnx

    net = _models().load_model(target, None, on_convert=_announce)
    status(f"exporting {target} ...")
    return to_onnx(net, torch.randn(shape), out)


def _profile_table(title: str, rows: list[dict], mine, theirs, baseline: str | None) -> Table:
    from drconv.benchmark import profile as prof

    caption = f"baseline: {baseline}" if theirs is not None else None
    table = Table(title=title, caption=caption, box=None)
    table.add_column("op", no_wrap=True, min_width=max(len(r["op"]) for r in [*rows, {"op": "total"}]))
    for column in ("nodes", "µs"):
        table.add_column(column, justify="right", no_wrap=True)
    if theirs is not None:
        for column in ("baseline nodes", "baseline µs", "difference µs"):
            table.add_column(column, justify="right", no_wrap=True)
    for row in rows:
        cells = [row["op"], str(row["nodes"]), f"{row['us']:.1f}"]
        if theirs is not None:
            cells += [str(row["baseline_nodes"]), f"{row['baseline_us']:.1f}", f"{row['diff_us']:+.1f}"]
        table.add_row(*cells)
    total = prof.totals(mine)
    cells = ["total", str(total.nodes), f"{total.us:.1f}"]
    if theirs is not None:
        base = prof.totals(theirs)
        cells += [str(base.nodes), f"{base.us:.1f}", f"{total.us - base.us:+.1f}"]
    table.add_row(*cells, style="bold")
    return table


def _timing():
    from drconv.benchmark import timing

    return timing


def _benchmark_torch(request):
    """torch where the benchmark needs it (a layer, a model, an engine, CUDA), else None; missing: one line."""
    if not request.needs_torch:
        return None
    import torch

    if request.device == "cuda" and not torch.cuda.is_available():
        raise DrconvError("--device cuda: CUDA is not available here (torch.cuda.is_available() is False)")
    return torch


def _time_backends(prepared, request, torch) -> list:
    """The timed calls of every backend, in alternating bursts, with a progress bar on stderr."""
    import contextlib

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    timing = _timing()
    with Progress(
        TextColumn("timing {task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    ) as progress:
        task = progress.add_task(", ".join(b.name for b in prepared.backends), total=1.0)
        with torch.no_grad() if torch is not None else contextlib.nullcontext():
            return timing.alternate(
                prepared.backends,
                request.warmup,
                request.iters,
                request.seconds,
                lambda done: progress.update(task, completed=done),
            )


def _report(request, prepared, samples, title: str, threads: int) -> None:
    """The table, the skipped backends, a noise warning, and the JSON and plot files asked for."""
    import shlex

    from drconv.benchmark import env as env_mod
    from drconv.benchmark import report

    timing = _timing()
    rows = report.results(prepared.backends, samples, prepared.errors)
    calls = rows[0].stats.iters
    how = f"{calls} calls each, in alternating bursts of {min(calls, timing.BURST)}"
    base = prepared.config.get("baseline")
    bound_is = f"the same runtime on {base}" if base else "the dense conv of the same shape"
    console.print(report.table(f"{title}: ms, {how}", rows, bound_is))
    for name, why in prepared.skipped.items():
        console.print(f"skipped {name}: {why}", style="dim")
    spread = report.noisy(rows)
    if spread:
        factors = ", ".join(f"{name} {factor:.2f}" for name, factor in spread.items())
        console.print(
            Text.assemble(
                ("noisy timings", "yellow"),
                f" (p50 / fastest call: {factors}): the machine was busy, so the ratios may be off; rerun when "
                "it is idle, or compare the min column",
            )
        )
    config = prepared.config | {
        "threads": threads,
        "warmup": request.warmup,
        "iters": request.iters,
        "seconds": request.seconds,
        "burst": timing.BURST,
        "pause_ms": timing.PAUSE_S * 1e3,
        "command": shlex.join(["drconv", *sys.argv[1:]]),
    }
    if request.json_file is not None:
        report.write_json(request.json_file, report.to_json(env_mod.collect(threads), config, rows, prepared.skipped))
        console.print(f"wrote {request.json_file}")
    if request.plot_file is not None:
        report.plot(request.plot_file, title, rows)
        console.print(f"wrote {request.plot_file}")


def _picture_maker(image: Path | None, mean: str | None, std: str | None):
    """--image as a function from an input shape to that input (checked now, before any work); None without."""
    if image is None:
        picture_input(None, (1, 3, 1, 1), mean, std)  # --mean/--std alone are refused
        return None
    picture_input(image, (1, 3, 8, 8), mean, std)

    def make(shape: tuple[int, ...]):
        return picture_input(image, shape, mean, std)

    return make


def _load_test(url, name, clients, iters, seconds, warmup, batch, input_shape, json_file) -> None:
    """`drconv benchmark --url`: the load test, its table, and the JSON asked for."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from drconv.benchmark import env as env_mod
    from drconv.benchmark import report
    from drconv.serving import load

    requests = None if seconds is not None else (iters or 50)
    # started once the server answered, so that an unreachable one is only its error line
    progress = Progress(
        TextColumn(f"load test of {name}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    )
    task = progress.add_task(name, total=clients * requests if requests else None)
    try:
        result = load.run(
            url,
            name,
            clients=clients,
            requests=requests,
            seconds=seconds,
            warmup=warmup,
            batch=batch or 1,
            input_shape=parse_shape(input_shape) if input_shape else defaults.INPUT_SHAPE,
            progress=lambda done: progress.update(task, completed=done),
            on_start=progress.start,
        )
    finally:
        if progress.live.is_started:  # (stop prints a newline where stderr is no terminal)
            progress.stop()
    doc = result.to_json()
    table = Table(title=f"{name} at {url} ({result.protocol}), {clients} clients, batch {result.batch}: ms")
    for column in ("requests", "errors", "p50", "p90", "p99", "req/s", "images/s"):
        table.add_column(column, justify="right")
    table.add_row(
        str(result.requests),
        str(result.errors),
        *(f"{doc[k]:.2f}" for k in ("p50_ms", "p90_ms", "p99_ms")),
        f"{doc['requests_per_s']:.1f}",
        f"{doc['images_per_s']:.1f}",
    )
    console.print(table)
    formed = ", ".join(f"{size}: {count}" for size, count in doc["batch_sizes"].items()) or "none reported"
    console.print(f"batch sizes the server formed (executions per size): {formed}", soft_wrap=True)
    if result.errors:
        console.print(Text.assemble(("errors", "red"), f": {result.errors}, the first: {result.first_error}"))
    if json_file is not None:
        import shlex

        doc["command"] = shlex.join(["drconv", *sys.argv[1:]])
        doc["env"] = env_mod.collect(None)
        report.write_json(json_file, doc)
        console.print(f"wrote {json_file}")
    if result.errors:
        raise typer.Exit(1)


class _HelpFlag:
    """A command whose --help shows no `<bool>` value: it is a flag, like those of `flag()`."""

    def get_help_option(self, ctx):
        option = super().get_help_option(ctx)  # type: ignore[misc]
        if option is not None:
            option.metavar = ""
        return option


class _Command(_HelpFlag, TyperCommand):
    def get_params(self, ctx):
        params = super().get_params(ctx)
        for param in params:  # typer shows an argument's Python type (`<list[str]>`) beside its metavar
            if isinstance(param, TyperArgument) and param.metavar:
                param.display_type_rich = lambda ctx: None
        return params


class _Group(_HelpFlag, TyperGroup):
    pass


app.info.cls = _Group
for _info in app.registered_commands:
    _info.cls = _Command


def _stdout_error(probe: bool = False) -> OSError | None:
    """The error that writing standard output now raises (a full disk, /dev/full, a closed pipe), if any.

    `probe`: after an OSError from somewhere in a command, write a newline to find out whether
    stdout was its source (a failed write leaves nothing buffered to flush).
    """
    try:
        if probe:
            sys.stdout.write("\n")
        sys.stdout.flush()
    except OSError as exc:
        return exc
    return None


def _fail_on_stdout(exc: OSError) -> NoReturn:
    """One line for output that cannot be written; stdout then goes nowhere, so exit does not fail again."""
    with contextlib.suppress(OSError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    err_console.print(
        Text.assemble(("error:", "bold red"), f" cannot write the standard output: {exc.strerror or exc}"),
        soft_wrap=True,
    )
    sys.exit(1)


def main() -> None:
    """Console-script entry point."""
    # `--model mynet:factory` imports from the current directory, as `python -m` and uvicorn do:
    # a console script's path starts at its own bin folder instead.
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        app()
    except SystemExit as done:  # the command ran: its output must still reach stdout
        error = _stdout_error()
        if error is not None:
            _fail_on_stdout(error)
        raise done from None
    except OSError:
        error = _stdout_error(probe=True)
        if error is None:
            raise
        _fail_on_stdout(error)


if __name__ == "__main__":
    main()
