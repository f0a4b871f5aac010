"""The CLI's edge: errors become one line and an exit code (in one place), and small parsers of option values.

Exit codes: 0 success; 1 a file or run failed (:class:`~cmosx.errors.CmosxError`); 2 usage error
(:class:`~cmosx.errors.UsageError`, or a command line click cannot parse); 130 interrupted (Ctrl-C).
Each error class carries its code (``exit_code``); :class:`CmosxGroup` applies it to every command.
"""

from __future__ import annotations

import os

import typer
from typer.core import TyperGroup

from cmosx.errors import CmosxError, UsageError

INTERRUPTED = 130


def debug_enabled() -> bool:
    """``CMOSX_DEBUG=1`` shows tracebacks instead of one-line errors."""
    return os.environ.get("CMOSX_DEBUG") == "1"


class CmosxGroup(TyperGroup):
    """The root command group: a :class:`CmosxError` raised by any command (or sub-command) becomes
    ``Error: ...`` and the error's exit code; Ctrl-C becomes ``Error: interrupted`` and 130."""

    def invoke(self, ctx: typer.Context):
        try:
            return super().invoke(ctx)
        except CmosxError as error:
            if debug_enabled():
                raise
            typer.echo(f"Error: {error}", err=True)
            raise typer.Exit(error.exit_code) from None
        except KeyboardInterrupt:
            typer.echo("Error: interrupted", err=True)
            raise typer.Exit(INTERRUPTED) from None


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


def set_threads(threads: int | None) -> None:
    """``--threads N``: torch's CPU threads for this process (None: leave torch's default)."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
