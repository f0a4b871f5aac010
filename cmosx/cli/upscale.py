"""``cmosx upscale``: upscale photos x4 (folders, files, globs; JPEG/PNG/TIFF/WebP/BMP/RAW)."""

from __future__ import annotations

import typer

from cmosx.cli._common import report_errors
from cmosx.errors import CmosxError


def register(app: typer.Typer) -> None:
    app.command(name="upscale", help="Upscale photos x4 (folders, files, globs; JPEG/PNG/TIFF/WebP/BMP/RAW).")(
        upscale_command
    )


@report_errors
def upscale_command() -> None:
    raise CmosxError("'cmosx upscale' is not implemented yet")
