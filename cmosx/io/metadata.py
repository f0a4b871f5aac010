"""Carrying EXIF and XMP to an output of another size: dimensions updated, orientation reset, thumbnail dropped."""

from __future__ import annotations

import re
import struct
from pathlib import Path

from PIL import Image

from cmosx.io.orientation import ORIENTATION_TAG

EXIF_IFD = 0x8769
GPS_IFD = 0x8825
INTEROP_IFD = 0xA005
PIXEL_X_DIMENSION = 0xA002
PIXEL_Y_DIMENSION = 0xA003

# IFD0 tags that describe the photo (not how its pixels are stored) and so stay valid after upscaling.
# Everything else in IFD0 (strip offsets, sample formats, DNG private tags, ...) is left behind.
DESCRIPTIVE_IFD0_TAGS = {
    0x010E,  # ImageDescription
    0x010F,  # Make
    0x0110,  # Model
    0x0131,  # Software
    0x0132,  # DateTime
    0x013B,  # Artist
    0x013C,  # HostComputer
    0x4746,  # Rating
    0x4749,  # RatingPercent
    0x8298,  # Copyright
    0x9C9B,  # XPTitle
    0x9C9C,  # XPComment
    0x9C9D,  # XPAuthor
    0x9C9E,  # XPKeywords
    0x9C9F,  # XPSubject
}


def orientation_of(exif: Image.Exif | None) -> int:
    """The EXIF orientation (1-8), 1 when absent or invalid."""
    if exif is None:
        return 1
    value = exif.get(ORIENTATION_TAG, 1)
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def exif_for_output(exif: Image.Exif | None, width: int, height: int) -> Image.Exif | None:
    """A fresh EXIF for an output of ``width`` x ``height`` pixels.

    Keeps the descriptive IFD0 tags, the Exif IFD (date taken, exposure, lens, maker note) and the GPS IFD;
    sets Orientation to 1 (pixels are stored upright) and PixelX/YDimension to the new size; leaves out IFD1,
    so the input's (now stale) thumbnail is dropped, and the interoperability pointer.
    """
    if exif is None:
        return None
    out = Image.Exif()
    for tag, value in exif.items():
        if tag in DESCRIPTIVE_IFD0_TAGS:
            out[tag] = value
    out[ORIENTATION_TAG] = 1
    exif_ifd = {tag: value for tag, value in exif.get_ifd(EXIF_IFD).items() if tag != INTEROP_IFD}
    exif_ifd[PIXEL_X_DIMENSION] = width
    exif_ifd[PIXEL_Y_DIMENSION] = height
    out.get_ifd(EXIF_IFD).update(exif_ifd)
    gps = exif.get_ifd(GPS_IFD)
    if gps:
        out.get_ifd(GPS_IFD).update(gps)
    return out


def _replace_xmp_value(text: str, name: str, value: int) -> str:
    attribute = re.compile(rf'({re.escape(name)}\s*=\s*["\'])[^"\']*(["\'])')
    element = re.compile(rf"(<{re.escape(name)}>)[^<]*(</{re.escape(name)}>)")
    text = attribute.sub(lambda m: f"{m.group(1)}{value}{m.group(2)}", text)
    return element.sub(lambda m: f"{m.group(1)}{value}{m.group(2)}", text)


def xmp_for_output(xmp: bytes | None, width: int, height: int) -> bytes | None:
    """The XMP packet with tiff:Orientation reset to 1 and the pixel dimensions it states updated."""
    if not xmp:
        return None
    text = xmp.decode("utf-8", errors="replace")
    text = _replace_xmp_value(text, "tiff:Orientation", 1)
    for name, value in (
        ("tiff:ImageWidth", width),
        ("tiff:ImageLength", height),
        ("exif:PixelXDimension", width),
        ("exif:PixelYDimension", height),
    ):
        text = _replace_xmp_value(text, name, value)
    return text.encode("utf-8")


def load_exif(image: Image.Image) -> Image.Exif:
    """The image's EXIF with the Exif and GPS sub-IFDs read now (Pillow reads TIFF ones lazily from the file)."""
    exif = image.getexif()
    for pointer in (EXIF_IFD, GPS_IFD):
        try:
            exif.get_ifd(pointer)
        except (OSError, ValueError, SyntaxError, struct.error):
            exif.pop(pointer, None)  # a broken sub-IFD is dropped rather than failing the photo
    return exif


def exif_from_tiff_tags(path: Path) -> Image.Exif | None:
    """IFD0 descriptive tags plus the text/integer entries of the Exif and GPS IFDs, as parsed by tifffile.

    tifffile gives sub-IFD entries by name without their TIFF types, so only values whose type is unambiguous
    (text, integers, raw bytes) are carried: camera, lens, dates, ISO; rational exposure values are left out.
    """
    import tifffile

    exif = Image.Exif()
    with tifffile.TiffFile(path) as tif:
        tags = tif.pages[0].tags
        for tag in tags.values():
            if tag.code in DESCRIPTIVE_IFD0_TAGS and isinstance(tag.value, (str, int)):
                exif[tag.code] = tag.value
        for pointer, registry in ((EXIF_IFD, tifffile.TIFF.EXIF_TAGS), (GPS_IFD, tifffile.TIFF.GPS_TAGS)):
            tag = tags.get(pointer)
            if tag is None or not isinstance(tag.value, dict):
                continue
            entries = {}
            for name, value in tag.value.items():
                code = registry.get(name) if isinstance(name, str) else name
                if isinstance(code, int) and code != INTEROP_IFD and isinstance(value, (str, int, bytes)):
                    entries[code] = value
            if entries:
                exif.get_ifd(pointer).update(entries)
    return exif if len(exif) else None
