"""Image reading and writing with photo metadata (EXIF, XMP, ICC), RAW development, atomic writes.

``read_image(path) -> Photo`` and ``write_image(photo, path, quality=95)``; see :mod:`cmosx.io.photo`.
The names below are imported on first use, so that torch-free modules of this package
(:mod:`cmosx.io.formats`, :mod:`cmosx.io.atomic`) stay cheap to import for the CLI's batch machinery.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Photo": "cmosx.io.photo",
    "PhotoMetadata": "cmosx.io.photo",
    "DEFAULT_MAX_PIXELS": "cmosx.io.reader",
    "read_image": "cmosx.io.reader",
    "DEFAULT_JPEG_QUALITY": "cmosx.io.writer",
    "write_image": "cmosx.io.writer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'cmosx.io' has no attribute {name!r}")
