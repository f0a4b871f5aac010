"""Writing photos: 16-bit kept where the format allows (PNG, TIFF), EXIF/XMP/ICC carried, atomic replace."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

from PIL import Image, TiffImagePlugin
from PIL.PngImagePlugin import PngInfo

from cmosx.errors import OutputError, UsageError
from cmosx.io.atomic import atomic_write_bytes
from cmosx.io.formats import SIXTEEN_BIT_FORMATS, format_for_output_path
from cmosx.io.metadata import EXIF_IFD, GPS_IFD, exif_for_output, xmp_for_output
from cmosx.io.photo import Photo, to_integer

DEFAULT_JPEG_QUALITY = 95
_TIFF_ICC_TAG = 34675
_TIFF_XMP_TAG = 700


def write_image(photo: Photo, path: str | Path, quality: int = DEFAULT_JPEG_QUALITY) -> list[str]:
    """Encode ``photo`` to ``path`` (format from the extension) atomically; returns notes on conversions.

    PNG and TIFF keep 16 bits per channel when ``photo.bit_depth`` is 16; JPEG, WebP, AVIF and BMP are 8-bit. EXIF
    is written with Orientation 1, the new pixel dimensions and no thumbnail; XMP likewise updated; the ICC
    profile is embedded unchanged. JPEG cannot hold alpha: it is flattened onto white (with a note).
    """
    path = Path(path)
    if not 1 <= quality <= 100:
        raise UsageError(f"quality must be 1-100, got {quality}")
    fmt = format_for_output_path(path)
    notes: list[str] = []
    bit_depth = photo.bit_depth if fmt in SIXTEEN_BIT_FORMATS else 8
    if photo.bit_depth > bit_depth:
        notes.append(f"{fmt} holds 8 bits per channel: 16-bit samples rounded to 8 bits")
    exif = exif_for_output(photo.metadata.exif, photo.width, photo.height)
    xmp = xmp_for_output(photo.metadata.xmp, photo.width, photo.height)
    icc = photo.metadata.icc_profile
    try:
        if fmt == "JPEG":
            data = _encode_jpeg(photo, exif, xmp, icc, quality, notes)
        elif fmt == "PNG":
            data = _encode_png(photo, bit_depth, exif, xmp, icc)
        elif fmt == "TIFF":
            data = _encode_tiff(photo, bit_depth, exif, xmp, icc)
        elif fmt == "WEBP":
            if photo.is_grayscale:
                notes.append("WebP has no grayscale mode: stored as RGB with equal channels")
            data = _encode_pillow(photo, "WEBP", exif, xmp, icc, quality=quality, method=4)
        elif fmt == "AVIF":
            if photo.is_grayscale:
                notes.append("AVIF is written as RGB: grayscale stored with equal channels")
                photo = photo.with_pixels(photo.color.expand(3, -1, -1), photo.alpha)
            data = _encode_pillow(photo, "AVIF", exif, xmp, icc, quality=quality)
        else:  # BMP holds no metadata and, as read by most programs, no alpha
            if photo.alpha is not None:
                notes.append("BMP output has no alpha: transparent areas flattened onto white")
                photo = _flatten_on_white(photo)
            if exif or xmp or icc:
                notes.append("BMP cannot hold EXIF/XMP/ICC metadata: not written")
            data = _encode_pillow(photo, "BMP", None, None, None)
    except (OSError, ValueError) as error:
        raise OutputError(f"{path}: encoding {fmt} failed ({error})") from None
    atomic_write_bytes(path, data)
    return notes


def _pillow_image(photo: Photo, with_alpha: bool = True) -> Image.Image:
    """An 8-bit Pillow image (L, LA, RGB or RGBA) of the photo."""
    channels = [photo.color] + ([photo.alpha] if with_alpha and photo.alpha is not None else [])
    array = to_integer(channels, 8)
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[array.shape[2]]
    return Image.fromarray(array[:, :, 0] if mode == "L" else array, mode=mode)


def _encode_pillow(photo: Photo, fmt: str, exif, xmp, icc, **options) -> bytes:
    image = _pillow_image(photo)
    if exif is not None:
        options["exif"] = exif.tobytes()
    if icc:
        options["icc_profile"] = icc
    if xmp:
        options["xmp"] = xmp
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _flatten_on_white(photo: Photo) -> Photo:
    return photo.with_pixels(photo.color * photo.alpha + (1.0 - photo.alpha), None)


def _encode_jpeg(photo: Photo, exif, xmp, icc, quality: int, notes: list[str]) -> bytes:
    if photo.alpha is not None:
        notes.append("JPEG has no alpha: transparent areas flattened onto white")
        photo = _flatten_on_white(photo)
    # Chroma subsampling (4:2:0) visibly softens colour edges; keep full chroma at high qualities.
    return _encode_pillow(
        photo, "JPEG", exif, xmp, icc, quality=quality, subsampling=0 if quality >= 90 else 2, optimize=True
    )


def _encode_png(photo: Photo, bit_depth: int, exif, xmp, icc) -> bytes:
    if bit_depth == 8:
        info = PngInfo()
        if xmp:
            info.add_itxt("XML:com.adobe.xmp", xmp.decode("utf-8", errors="replace"))
        image = _pillow_image(photo)
        buffer = io.BytesIO()
        options = {"pnginfo": info}
        if exif is not None:
            options["exif"] = exif.tobytes()
        if icc:
            options["icc_profile"] = icc
        image.save(buffer, "PNG", **options)
        return buffer.getvalue()
    return _encode_png16(photo, exif, xmp, icc)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def _encode_png16(photo: Photo, exif, xmp, icc) -> bytes:
    """16-bit PNG through libpng (imagecodecs), then iCCP / eXIf / iTXt chunks spliced in after IHDR."""
    import imagecodecs

    channels = [photo.color] + ([photo.alpha] if photo.alpha is not None else [])
    array = to_integer(channels, 16)
    if array.shape[2] == 1:
        array = array[:, :, 0]
    data = imagecodecs.png_encode(array, level=6)
    extra = b""
    if icc:
        extra += _png_chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(icc))
    if exif is not None:
        blob = exif.tobytes()
        extra += _png_chunk(b"eXIf", blob[6:] if blob.startswith(b"Exif\x00\x00") else blob)
    if xmp:
        extra += _png_chunk(b"iTXt", b"XML:com.adobe.xmp\x00\x00\x00\x00\x00" + xmp)
    ihdr_end = 8 + 4 + 4 + 13 + 4  # signature + IHDR chunk (length, type, 13 bytes, crc)
    return data[:ihdr_end] + extra + data[ihdr_end:]


def _encode_tiff(photo: Photo, bit_depth: int, exif, xmp, icc) -> bytes:
    """Deflate-compressed TIFF (8 or 16 bit) with ICC, XMP, IFD0 EXIF tags and Exif/GPS sub-IFDs."""
    import tifffile

    channels = [photo.color] + ([photo.alpha] if photo.alpha is not None else [])
    array = to_integer(channels, bit_depth)
    extratags = []
    if icc:
        extratags.append((_TIFF_ICC_TAG, 7, len(icc), icc, True))
    if xmp:
        extratags.append((_TIFF_XMP_TAG, 1, len(xmp), xmp, True))
    sub_ifds = {}
    software = "cmosx"
    if exif is not None:
        for tag, value in exif.items():
            if tag == 0x0131:  # Software: tifffile writes it itself
                software = str(value)
            elif isinstance(value, str):
                encoded = value.encode("utf-8", errors="replace") + b"\x00"
                extratags.append((tag, 2, len(encoded), encoded, True))
            elif isinstance(value, int) and tag != 0x0112 and 0 <= value < 65536:  # Rating, RatingPercent
                extratags.append((tag, 3, 1, value, True))
        for pointer in (EXIF_IFD, GPS_IFD):
            entries = exif.get_ifd(pointer)
            if entries:
                sub_ifds[pointer] = dict(entries)
                # tifffile refuses to write pointer tags itself: write a placeholder under the next (unused)
                # tag number, which sorts in the same place, and patch code and offset afterwards.
                extratags.append((pointer + 1, 4, 1, 0, True))
    buffer = io.BytesIO()
    tifffile.imwrite(
        buffer,
        array if array.shape[2] > 1 else array[:, :, 0],
        photometric="rgb" if photo.color.shape[0] == 3 else "minisblack",
        extrasamples=["unassalpha"] if photo.alpha is not None else None,
        compression="zlib",
        metadata=None,
        software=software,
        extratags=extratags,
    )
    return _append_sub_ifds(buffer.getvalue(), sub_ifds) if sub_ifds else buffer.getvalue()


def _append_sub_ifds(data: bytes, sub_ifds: dict[int, dict]) -> bytes:
    """Append EXIF/GPS IFDs to a classic little-endian TIFF and point IFD0's placeholder tags at them."""
    import tifffile

    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        if tif.byteorder != "<" or tif.is_bigtiff:
            raise OutputError("unexpected TIFF layout while adding EXIF")
        value_offsets = {pointer: tif.pages[0].tags[pointer + 1].valueoffset for pointer in sub_ifds}
    out = bytearray(data)
    for pointer, entries in sub_ifds.items():
        if len(out) % 2:
            out += b"\x00"
        start = len(out)
        ifd = TiffImagePlugin.ImageFileDirectory_v2(prefix=b"II")
        for tag, value in entries.items():
            ifd[tag] = value
        out += ifd.tobytes(offset=start)
        entry = value_offsets[pointer] - 8  # classic TIFF entry: tag (2), type (2), count (4), value (4)
        out[entry : entry + 2] = struct.pack("<H", pointer)
        out[value_offsets[pointer] : value_offsets[pointer] + 4] = struct.pack("<I", start)
    return bytes(out)


__all__ = ["DEFAULT_JPEG_QUALITY", "write_image"]
