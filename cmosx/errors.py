"""Typed errors raised by library code.

Library code raises these and never prints or exits; the CLI (``cmosx.cli``) turns each one into a
single ``Error: ...`` line on stderr and the error's ``exit_code``.

Exit codes: 0 success, 1 a file or run failed (:class:`CmosxError`), 2 usage error
(:class:`UsageError`).
"""

from __future__ import annotations


class CmosxError(Exception):
    """Base of every error cmosx raises on purpose. Exit code 1."""

    exit_code = 1


class UsageError(CmosxError):
    """The command line or a configuration asks for something invalid. Exit code 2."""

    exit_code = 2


class InputImageError(CmosxError):
    """An input file cannot be read or decoded (truncated, corrupt, unsupported, too large)."""


class OutputError(CmosxError):
    """An output cannot be written (exists, would overwrite an input, disk error)."""


class ModelError(CmosxError):
    """A model cannot be resolved or loaded (unknown name, missing file, bad keys)."""


class ChecksumError(ModelError):
    """A weights file does not match the sha256 recorded in its manifest."""


class DatasetError(CmosxError):
    """A dataset is missing, malformed, or cannot be generated."""


class DeviceError(CmosxError):
    """The requested device or precision is not available on this machine."""


class CheckpointError(CmosxError):
    """A training checkpoint is missing, truncated, not a cmosx checkpoint, or holds what it cannot store."""


class ArgumentError(CmosxError, ValueError):
    """A library function was called with a value it does not take (a shape, a mode): the caller's mistake.

    Also a ``ValueError``, so code that catches the builtin keeps working. Exit code 1.
    """


class EngineError(CmosxError, RuntimeError):
    """The engine's own bookkeeping failed (a tile missing or added twice, a benchmark subprocess that died):
    a bug or a broken environment, not bad input. Also a ``RuntimeError``. Exit code 1."""
