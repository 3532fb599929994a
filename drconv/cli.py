"""The `drconv` command line: one function per command, user mistakes as one line and a non-zero exit."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from drconv import info as info_mod
from drconv import models as models_mod
from drconv.errors import DrconvError

app = typer.Typer(
    name="drconv",
    help="Deploy Dynamic Region-Aware Convolution (DRConv) models: inspect, export, verify, build, benchmark.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable)

ModelOption = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        help="A built-in model name (see `drconv models`) or package.module:factory returning an nn.Module.",
    ),
]
CheckpointOption = Annotated[
    Path | None,
    typer.Option("--checkpoint", "-c", help="A state_dict (.pt) to load into the model.", dir_okay=False),
]


def user_errors(fn: F) -> F:
    """Turn the mistakes a user can fix into one line on stderr and exit code 1, no traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (DrconvError, ValueError) as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def parse_shape(text: str) -> tuple[int, ...]:
    """'1,3,224,224' or '1x3x224x224' -> (1, 3, 224, 224)."""
    parts = text.replace("x", ",").split(",")
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a shape like 1,3,224,224") from None
    if len(shape) != 4 or min(shape) < 1:
        raise typer.BadParameter(f"{text!r} must be 4 positive sizes N,C,H,W")
    return shape


def _version_callback(value: bool) -> None:
    if value:
        from drconv import __version__

        console.print(f"drconv {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version_callback, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Deploy DRConv models to ONNX Runtime and TensorRT at the cost of one dense convolution."""


@app.command()
def models() -> None:
    """List the built-in models (use one with --model NAME)."""
    table = Table(title="built-in models")
    table.add_column("name", style="bold")
    table.add_column("description")
    for name in models_mod.names():
        default = " (default)" if name == models_mod.DEFAULT_MODEL else ""
        table.add_row(name + default, models_mod.describe(name))
    console.print(table)
    console.print("Your own: --model package.module:factory [--checkpoint weights.pt]")


@app.command()
def info(
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of a table.")] = False,
) -> None:
    """Versions, CUDA availability and the paths of the built native libraries."""
    data = info_mod.collect()
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    table = Table(title="drconv environment", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    for key, value in data.items():
        if key == "plugins":
            for backend, path in value.items():
                table.add_row(f"plugin: {backend}", path or "not built (make plugins)")
        else:
            table.add_row(key, "-" if value is None else str(value))
    console.print(table)


@app.command()
@user_errors
def summary(
    model: ModelOption = models_mod.DEFAULT_MODEL,
    checkpoint: CheckpointOption = None,
    input_shape: Annotated[
        str, typer.Option("--input-shape", help="Input shape N,C,H,W of the forward pass.")
    ] = "1,3,224,224",
    seed: Annotated[int, typer.Option(help="Seed of the random input.")] = 0,
) -> None:
    """Run one forward pass and summarise the model: shapes, parameters, DRConv region use, latency."""
    import torch

    from drconv.summary import run_summary

    shape = parse_shape(input_shape)
    net = models_mod.load_model(model, checkpoint)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    try:
        report = run_summary(net, x)
    except RuntimeError as exc:  # e.g. a channel mismatch inside a user's model
        raise DrconvError(f"model {model} cannot run on input {shape}: {str(exc).splitlines()[0]}") from exc

    table = Table(title=f"{model}: DRConv2d layers on input {shape}")
    for col in ("layer", "in", "out", "params", "R", "pixels per region (%)"):
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
        f"parameters {report.parameters:,}  input {report.input_shape}  output {report.output_shape}  "
        f"forward {report.latency_ms:.1f} ms (median of 3, {torch.get_num_threads()} threads)"
    )


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
