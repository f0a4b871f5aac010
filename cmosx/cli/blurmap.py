"""``cmosx blurmap``: write the estimated defocus (and semantic) maps of images."""

from __future__ import annotations

import typer

from cmosx.cli._common import report_errors
from cmosx.errors import CmosxError


def register(app: typer.Typer) -> None:
    app.command(name="blurmap", help="Write the estimated defocus (and semantic) maps of images.")(blurmap_command)


@report_errors
def blurmap_command() -> None:
    raise CmosxError("'cmosx blurmap' is not implemented yet")
