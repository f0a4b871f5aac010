"""File formats cmosx reads and writes, decided by file extension (RAW) or by Pillow's sniffing."""

from __future__ import annotations

from pathlib import Path

from cmosx.errors import UsageError

# Extensions of the raster formats read through Pillow / imagecodecs / tifffile.
RASTER_EXTENSIONS = {".jpg", ".jpeg", ".jpe", ".png", ".tif", ".tiff", ".webp", ".bmp"}

# Camera RAW extensions developed with rawpy (LibRaw). LibRaw reads many more; these are the common ones.
RAW_EXTENSIONS = {
    ".dng", ".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".raf", ".orf", ".rw2",
    ".pef", ".srw", ".x3f", ".3fr", ".iiq", ".erf", ".kdc", ".mrw", ".mos", ".raw", ".rwl",
}  # fmt: skip

IMAGE_EXTENSIONS = RASTER_EXTENSIONS | RAW_EXTENSIONS

# --format value -> (Pillow-style format name, file extension)
OUTPUT_FORMATS = {
    "png": ("PNG", ".png"),
    "jpeg": ("JPEG", ".jpg"),
    "tiff": ("TIFF", ".tif"),
    "webp": ("WEBP", ".webp"),
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
}

# Formats that can hold 16 bits per channel when written by cmosx.
SIXTEEN_BIT_FORMATS = {"PNG", "TIFF"}


def is_raw_path(path: Path) -> bool:
    """True when the extension names a camera RAW file (developed with rawpy)."""
    return path.suffix.lower() in RAW_EXTENSIONS


def is_image_path(path: Path) -> bool:
    """True when the extension is one cmosx picks up from folders."""
    return path.suffix.lower() in IMAGE_EXTENSIONS


def format_for_output_path(path: Path) -> str:
    """Pillow-style format name ("JPEG", "PNG", "TIFF", "WEBP", "BMP") from an output file's extension."""
    try:
        return _EXTENSION_FORMATS[path.suffix.lower()]
    except KeyError:
        known = ", ".join(sorted(_EXTENSION_FORMATS))
        raise UsageError(f"{path}: cannot write '{path.suffix}' files (known: {known})") from None


def output_extension(input_path: Path, fmt: str) -> str:
    """The extension an output gets for ``--format fmt`` ("same", "png", "jpeg", "tiff", "webp").

    ``same`` keeps the input's extension, except RAW inputs, which become 16-bit TIFF (``.tif``).
    """
    if fmt == "same":
        if is_raw_path(input_path):
            return ".tif"
        return input_path.suffix.lower() if input_path.suffix.lower() in _EXTENSION_FORMATS else ".png"
    try:
        return OUTPUT_FORMATS[fmt][1]
    except KeyError:
        raise UsageError(f"unknown --format '{fmt}' (choose same, png, jpeg, tiff or webp)") from None
