"""The ``cmosx`` Typer application and its entry point (errors map to exit codes in :mod:`cmosx.cli._common`)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from cmosx import __version__
from cmosx.cli._common import CmosxGroup

app = typer.Typer(
    name="cmosx",
    cls=CmosxGroup,
    help=(
        "Blind super-resolution for defocused photos: estimates a per-pixel blur map and a "
        "semantic map (CMOS) and upscales x4 with RRDB-SFT."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"cmosx {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        Optional[bool],
        typer.Option("--version", callback=_version_callback, is_eager=True, help="Print the version and exit."),
    ] = None,
) -> None:
    """cmosx: sharper, 4x larger photos whose blur varies with depth."""


def _register_commands() -> None:
    # Imported here so each command module can use ``app`` without a cycle.
    from cmosx.cli import bench, blurmap, dataset, evaluate, train, upscale, weights

    for module in (upscale, blurmap, train, evaluate, dataset, weights, bench):
        module.register(app)


_register_commands()


def main(argv: Optional[list[str]] = None) -> None:
    """Console-script entry point (``cmosx``, ``python -m cmosx``)."""
    app(args=argv, prog_name="cmosx")
