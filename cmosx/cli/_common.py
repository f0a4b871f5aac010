"""Helpers shared by the command modules: error mapping at the CLI edge, reusable option types."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Optional, TypeVar

import typer

from cmosx.errors import CmosxError, UsageError

F = TypeVar("F", bound=Callable)


def debug_enabled() -> bool:
    """``CMOSX_DEBUG=1`` shows tracebacks instead of one-line errors."""
    return os.environ.get("CMOSX_DEBUG") == "1"


def report_errors(func: F) -> F:
    """Wrap a command: a :class:`CmosxError` becomes ``Error: ...`` on stderr and its exit code."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except CmosxError as error:
            if debug_enabled():
                raise
            typer.echo(f"Error: {error}", err=True)
            raise typer.Exit(error.exit_code) from None

    return wrapper  # type: ignore[return-value]


def parse_size(text: str, option: str, *, square_ok: bool = False, multiple: int = 1) -> tuple[int, int]:
    """A size option: ``"480x640"`` -> (480, 640) (height x width); with ``square_ok`` also ``"96"`` -> (96, 96).

    :class:`UsageError` naming ``option`` when ``text`` is not that shape, or a side is not a positive
    multiple of ``multiple``.
    """
    shape = "N or HEIGHTxWIDTH" if square_ok else "HEIGHTxWIDTH"
    try:
        parts = tuple(int(part) for part in text.lower().split("x"))
    except ValueError:
        parts = ()
    if len(parts) == 1 and square_ok:
        parts = (parts[0], parts[0])
    if len(parts) != 2:
        raise UsageError(f"{option} must look like {shape} (e.g. 480x640), got {text!r}")
    if min(parts) < 1 or any(side % multiple for side in parts):
        kind = "positive" if multiple == 1 else f"positive multiples of {multiple}"
        raise UsageError(f"{option} {text}: height and width must be {kind}")
    return parts[0], parts[1]


# Options shared by the photo commands (``upscale``, ``blurmap``): one definition, the same help everywhere.
InputsArg = Annotated[
    list[str], typer.Argument(help="Image files, folders or glob patterns.", show_default=False, metavar="INPUT")
]
OutputDirOpt = Annotated[
    Optional[Path], typer.Option("-o", "--output-dir", help="Folder for the outputs (created if missing).")
]
ModelOpt = Annotated[
    Optional[str], typer.Option("--model", help="Bundled model name, local path, or hf://owner/repo[@rev][/file].")
]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.")]
PrecisionOpt = Annotated[str, typer.Option("--precision", help="auto, fp32, bf16 or fp16.")]
TileOpt = Annotated[str, typer.Option("--tile", help="Tile size in input pixels, or 'auto' (from free memory).")]
OverlapOpt = Annotated[int, typer.Option("--overlap", help="Overlap between tiles, input pixels (blended).")]
RecursiveOpt = Annotated[bool, typer.Option("--recursive", "-r", help="Descend into sub-folders.")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs.")]
SkipExistingOpt = Annotated[bool, typer.Option("--skip-existing", help="Skip inputs whose outputs exist.")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="List what would be written; process nothing.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON record per file and a summary.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar, only errors and failures.")]
MaxMegapixelsOpt = Annotated[
    float, typer.Option("--max-megapixels", help="Refuse inputs above this many megapixels (checked before decoding).")
]
