"""Phone and web photo containers: HEIC/HEIF (through pillow-heif) and AVIF (Pillow), 8 to 12 bits.

8-bit images decode through Pillow like any other format. Deeper ones (10-bit phone HEICs, 10/12-bit
AVIFs) would be reduced to 8 bits there, so they decode here to uint16 scaled to the full 16-bit range.
Orientation: libheif applies a HEIC's rotation itself and pillow-heif reports EXIF orientation 1; an
AVIF's rotation is reported as its EXIF orientation, applied by the reader like any JPEG's.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

HEIF_FORMATS = {"HEIF", "AVIF"}  # Pillow format names (pillow-heif opens HEIC/HEIF as "HEIF")
_CONTAINERS = (b"meta", b"iprp", b"ipco")  # boxes on the way to the item properties
_registered = False


def register_heif_opener() -> None:
    """Let Pillow open HEIC/HEIF files (pillow-heif's plugin); a no-op after the first call."""
    global _registered
    if not _registered:
        try:
            import pillow_heif
        except ImportError:  # pragma: no cover - pillow-heif is a dependency; HEIC then stays unreadable
            return
        pillow_heif.register_heif_opener()
        _registered = True


def _boxes(data: bytes, start: int, end: int):
    """(type, body start, body end) of the ISO-BMFF boxes in ``data[start:end]``."""
    while start + 8 <= end:
        size, kind = struct.unpack(">I4s", data[start : start + 8])
        header = 8
        if size == 1 and start + 16 <= end:
            size, header = struct.unpack(">Q", data[start + 8 : start + 16])[0], 16
        elif size == 0:
            size = end - start
        if size < header:
            return
        yield kind, start + header, min(start + size, end)
        start += size


def av1_bit_depth(data: bytes) -> int:
    """Bits per sample of an AVIF's image items (the largest ``av1C`` states), 8 when none is found."""
    depth = 8

    def walk(start: int, end: int, level: int) -> None:
        nonlocal depth
        for kind, body, stop in _boxes(data, start, end):
            if level < len(_CONTAINERS) and kind == _CONTAINERS[level]:
                walk(body + (4 if kind == b"meta" else 0), stop, level + 1)  # meta is a FullBox
            elif kind == b"av1C" and stop - body >= 3:
                flags = data[body + 2]
                if flags & 0x40:  # high_bitdepth; twelve_bit beside it
                    depth = max(depth, 12 if flags & 0x20 else 10)

    walk(0, len(data), 0)
    return depth


def container_bit_depth(path: Path, fmt: str, info: dict) -> int:
    """Bits per sample of a HEIF (pillow-heif's ``info["bit_depth"]``) or AVIF (its ``av1C``) image."""
    if fmt == "HEIF":
        return int(info.get("bit_depth") or 8)
    with path.open("rb") as handle:
        return av1_bit_depth(handle.read(1 << 20))  # the item properties come before the image data


def decode_deep(path: Path, fmt: str, bit_depth: int) -> tuple[np.ndarray, str]:
    """A 10/12-bit HEIF or AVIF -> (H x W x C uint16 on the full 16-bit scale, alpha kind)."""
    if fmt == "HEIF":
        import pillow_heif

        heif = pillow_heif.open_heif(path, convert_hdr_to_8bit=False)
        raw = np.asarray(heif) >> (16 - bit_depth)  # pillow-heif shifts the samples to the top bits
        alpha_kind = "associated" if heif.has_alpha and heif.premultiplied_alpha else "straight"
    else:
        import imagecodecs

        raw = imagecodecs.avif_decode(path.read_bytes())
        alpha_kind = "straight"
    if raw.ndim == 2:
        raw = raw[:, :, None]
    peak = (1 << bit_depth) - 1
    scaled = np.round(raw.astype(np.float64) * (65535.0 / peak)).clip(0, 65535).astype(np.uint16)
    return scaled, alpha_kind if scaled.shape[2] in (2, 4) else "none"
