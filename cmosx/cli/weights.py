"""``cmosx weights``: list, verify and export model weights."""

from __future__ import annotations

import typer

from cmosx.cli._common import report_errors
from cmosx.errors import CmosxError

group = typer.Typer(help="List, verify and export model weights.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(group, name="weights")


@group.command(name="list")
@report_errors
def list_command() -> None:
    raise CmosxError("'cmosx weights list' is not implemented yet")
