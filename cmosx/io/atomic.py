"""Atomic file writes: the bytes go to a hidden temp file in the destination folder, then ``os.replace``.

Every file cmosx and its training code write goes through here (images, maps, weights, model cards,
manifests, checkpoints, run records, dataset files), so a crash or kill leaves either the previous file or
the complete new one, never a partial one -- at most a hidden ``.cmosx-tmp-*.tmp`` file beside it (skipped by
cmosx's input discovery, which skips hidden files). Any ``OSError`` becomes an :class:`OutputError` naming
the destination; the temp file is removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cmosx.errors import OutputError

TEMP_PREFIX = ".cmosx-tmp-"
TEMP_SUFFIX = ".tmp"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates 0600 files; outputs get the mode an ordinary ``open()`` would give them. Read once, at import:
# os.umask can only be read by setting it, which would race with other threads creating files.
_FILE_MODE = 0o666 & ~_umask()


def atomic_write_bytes(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Write ``data`` to ``path`` so that ``path`` is either untouched or complete, never partial.

    ``durable`` fsyncs the data before the rename (off for the many small files of a generated dataset,
    which a rerun regenerates).
    """

    def fill(handle: int, temp: Path) -> None:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            if durable:
                os.fsync(stream.fileno())
        os.chmod(temp, _FILE_MODE)

    _through_temp(Path(path), fill)


def atomic_write_text(path: Path, text: str, *, durable: bool = True) -> None:
    """:func:`atomic_write_bytes` of ``text`` in UTF-8."""
    atomic_write_bytes(path, text.encode("utf-8"), durable=durable)


def atomic_write_json(path: Path, data: Any, *, sort_keys: bool = False, durable: bool = True) -> None:
    """``data`` as JSON, indented by 2, with a final newline (:func:`atomic_write_bytes`)."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=sort_keys) + "\n", durable=durable)


def atomic_write(path: Path, write: Callable[[Path], None], *, durable: bool = True) -> None:
    """Let ``write(temp)`` create the file at a temp path beside ``path``, then publish it atomically.

    For writers that want a file name rather than bytes (safetensors' ``save_file``, ``Image.save``; pass
    the format explicitly, the temp name ends in ``.tmp``).
    """

    def fill(handle: int, temp: Path) -> None:
        os.close(handle)
        write(temp)
        if durable:
            with open(temp, "rb+") as stream:
                os.fsync(stream.fileno())
        os.chmod(temp, _FILE_MODE)

    _through_temp(Path(path), fill)


def atomic_link_or_copy(source: Path, path: Path) -> None:
    """Make ``path`` a hard link to ``source`` (a copy where links are impossible), atomically."""

    def fill(handle: int, temp: Path) -> None:
        os.close(handle)
        temp.unlink()  # os.link wants a free name; mkstemp only reserved one
        try:
            os.link(source, temp)
        except OSError:
            shutil.copy2(source, temp)

    _through_temp(Path(path), fill)


def _through_temp(path: Path, fill: Callable[[int, Path], None]) -> None:
    """Reserve a hidden temp file beside ``path``, ``fill(fd, temp)`` it, then ``os.replace`` it onto ``path``."""
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX, dir=folder)
    except OSError as error:
        raise OutputError(f"{path}: cannot write ({error.strerror or error})") from None
    temp = Path(name)
    try:
        fill(handle, temp)
        os.replace(temp, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            temp.unlink()
        if isinstance(error, OSError):
            raise OutputError(f"{path}: cannot write ({error.strerror or error})") from None
        raise
