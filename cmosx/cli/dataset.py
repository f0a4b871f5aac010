"""``cmosx dataset``: generate and inspect BSR datasets."""

from __future__ import annotations

import typer

from cmosx.cli._common import report_errors
from cmosx.errors import CmosxError

group = typer.Typer(help="Generate and inspect BSR datasets.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(group, name="dataset")


@group.command(name="generate")
@report_errors
def generate_command() -> None:
    raise CmosxError("'cmosx dataset generate' is not implemented yet")
