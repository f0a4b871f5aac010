"""``cmosx bench``: benchmark inference speed, FLOP rate and memory on this machine."""

from __future__ import annotations

import typer

from cmosx.cli._common import report_errors
from cmosx.errors import CmosxError


def register(app: typer.Typer) -> None:
    app.command(name="bench", help="Benchmark inference speed, FLOP rate and memory on this machine.")(bench_command)


@report_errors
def bench_command() -> None:
    raise CmosxError("'cmosx bench' is not implemented yet")
