"""Helpers shared by the command modules: error mapping at the CLI edge."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import TypeVar

import typer

from cmosx.errors import CmosxError

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
