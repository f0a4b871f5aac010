"""``cmosx train``: train CMOS, RRDB-SFT or the blind pipeline on a BSR dataset."""

from __future__ import annotations

import typer

from cmosx.cli._common import report_errors
from cmosx.errors import CmosxError


def register(app: typer.Typer) -> None:
    app.command(name="train", help="Train CMOS, RRDB-SFT or the blind pipeline on a BSR dataset.")(train_command)


@report_errors
def train_command() -> None:
    raise CmosxError("'cmosx train' is not implemented yet")
