"""File formats cmosx reads and writes, decided by file extension (RAW) or by Pillow's sniffing."""

from __future__ import annotations

from pathlib import Path

from cmosx.errors import UsageError

# Extensions of the raster formats read through Pillow / imagecodecs / tifffile.
RASTER_EXTENSIONS = {".jpg", ".jpeg", ".jpe", ".png", ".tif", ".tiff", ".webp", ".bmp", ".avif"}
# Phone photos (HEVC in a HEIF container), read through pillow-heif.
HEIF_EXTENSIONS = {".heic", ".heif", ".hif"}

# Camera RAW extensions developed with rawpy (LibRaw). LibRaw reads many more; these are the common ones.
RAW_EXTENSIONS = {
    ".dng", ".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".raf", ".orf", ".rw2",
    ".pef", ".srw", ".x3f", ".3fr", ".iiq", ".erf", ".kdc", ".mrw", ".mos", ".raw", ".rwl",
}  # fmt: skip

IMAGE_EXTENSIONS = RASTER_EXTENSIONS | HEIF_EXTENSIONS | RAW_EXTENSIONS

# --format value -> (Pillow-style format name, file extension)
OUTPUT_FORMATS = {
    "png": ("PNG", ".png"),
    "jpeg": ("JPEG", ".jpg"),
    "tiff": ("TIFF", ".tif"),
    "webp": ("WEBP", ".webp"),
    "avif": ("AVIF", ".avif"),  # where this Pillow has an AVIF encoder (avif_writable)
}

_EXTENSION_FORMATS = {
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".jpe": "JPEG",
    ".png": "PNG",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".webp": "WEBP",
    ".bmp": "BMP",
    ".avif": "AVIF",
}

# Formats that can hold 16 bits per channel when written by cmosx.
SIXTEEN_BIT_FORMATS = {"PNG", "TIFF"}


def avif_writable() -> bool:
    """True when this Pillow was built with libavif (Pillow >= 11.2 wheels are)."""
    from PIL import features

    return bool(features.check("avif"))


def is_raw_path(path: Path) -> bool:
    """True when the extension names a camera RAW file (developed with rawpy)."""
    return path.suffix.lower() in RAW_EXTENSIONS


def is_image_path(path: Path) -> bool:
    """True when the extension is one cmosx picks up from folders."""
    return path.suffix.lower() in IMAGE_EXTENSIONS


def format_for_output_path(path: Path) -> str:
    """Pillow-style format name ("JPEG", "PNG", "TIFF", "WEBP", "BMP", "AVIF") from an output file's extension."""
    fmt = _EXTENSION_FORMATS.get(path.suffix.lower())
    if fmt is None or (fmt == "AVIF" and not avif_writable()):
        known = ", ".join(sorted(ext for ext, name in _EXTENSION_FORMATS.items() if name != "AVIF" or avif_writable()))
        raise UsageError(f"{path}: cannot write '{path.suffix}' files (known: {known})")
    return fmt


def output_extension(input_path: Path, fmt: str) -> str:
    """The extension an output gets for ``--format fmt`` ("same", "png", "jpeg", "tiff", "webp", "avif").

    ``same`` keeps the input's extension, except: RAW inputs become 16-bit TIFF (``.tif``); HEIC/HEIF
    photos become JPEG (``.jpg``: what every program opens, with EXIF/ICC/XMP kept; encoding HEVC needs a
    patent-encumbered encoder not every pillow-heif build has); AVIF stays AVIF where Pillow can write it,
    else PNG. Pick png or tiff to keep a 10-bit HEIC/AVIF's depth (16-bit output).
    """
    suffix = input_path.suffix.lower()
    if fmt == "same":
        if is_raw_path(input_path):
            return ".tif"
        if suffix in HEIF_EXTENSIONS:
            return ".jpg"
        if suffix == ".avif" and not avif_writable():
            return ".png"
        return suffix if suffix in _EXTENSION_FORMATS else ".png"
    choices = "same, png, jpeg, tiff, webp" + (" or avif" if avif_writable() else "")
    if fmt == "avif" and not avif_writable():
        raise UsageError(f"--format avif: this Pillow cannot write AVIF (choose {choices})")
    try:
        return OUTPUT_FORMATS[fmt][1]
    except KeyError:
        raise UsageError(f"unknown --format '{fmt}' (choose {choices})") from None
