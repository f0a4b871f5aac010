"""``cmosx eval``: evaluate a model on BSR test groups with the paper's metrics."""

from __future__ import annotations

import typer

from cmosx.cli._common import report_errors
from cmosx.errors import CmosxError


def register(app: typer.Typer) -> None:
    app.command(name="eval", help="Evaluate a model on BSR test groups with the paper's metrics.")(evaluate_command)


@report_errors
def evaluate_command() -> None:
    raise CmosxError("'cmosx eval' is not implemented yet")
