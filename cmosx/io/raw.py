"""Camera RAW development with rawpy (LibRaw): camera white balance, 16-bit, no auto-brighten, sRGB."""

from __future__ import annotations

import struct
from pathlib import Path

from PIL import Image, ImageCms

from cmosx.errors import InputImageError
from cmosx.io.metadata import exif_from_tiff_tags, load_exif
from cmosx.io.photo import Photo, PhotoMetadata, to_float

# What Pillow raises for a container it cannot open (UnidentifiedImageError is an OSError) or a broken IFD.
_PILLOW_ERRORS = (OSError, ValueError, SyntaxError, struct.error, Image.DecompressionBombError)
# What tifffile raises for a non-TIFF container or a broken IFD (TiffFileError is a ValueError).
_TIFFFILE_ERRORS = (OSError, ValueError, struct.error, KeyError, IndexError)


def srgb_profile_bytes() -> bytes:
    """An ICC profile describing sRGB, built by LittleCMS (tags outputs that are sRGB by construction)."""
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _exif_of_raw(path: Path) -> Image.Exif | None:
    """EXIF of a TIFF-based RAW file (DNG, CR2, NEF, ARW, ...); None for other containers (CR3, RAF, ...).

    Metadata is best effort: a container neither Pillow nor tifffile can parse gives None, never an error.
    """
    try:
        with Image.open(path) as image:
            exif = load_exif(image)
            if len(exif):
                return exif
    except _PILLOW_ERRORS:
        pass  # Pillow refuses many RAW IFDs (CFA photometric); tifffile still parses their tags
    try:
        return exif_from_tiff_tags(path)
    except _TIFFFILE_ERRORS:
        return None


def read_raw(path: Path, max_pixels: int | None) -> Photo:
    """Develop a RAW file into a 16-bit sRGB photo (orientation applied by LibRaw).

    Settings: the camera's as-shot white balance, no automatic brightening, 16 bits per channel, sRGB primaries
    and the sRGB tone curve (gamma 2.4, toe slope 12.92), default AHD demosaicing.
    """
    import rawpy  # imported here: only RAW inputs need LibRaw

    raw = rawpy.RawPy()
    try:
        try:
            raw.open_file(str(path))
        except (rawpy.LibRawError, OSError) as error:
            raise InputImageError(f"{path}: not a RAW file rawpy can read ({error})") from None
        width, height = raw.sizes.width, raw.sizes.height
        if max_pixels is not None and width * height > max_pixels:
            raise InputImageError(
                f"{path}: {width} x {height} pixels is over the limit of {max_pixels / 1e6:.0f} megapixels"
            )
        try:
            raw.unpack()
            rgb = raw.postprocess(
                use_camera_wb=True,
                no_auto_bright=True,
                output_bps=16,
                output_color=rawpy.ColorSpace.sRGB,
                gamma=(2.4, 12.92),
            )
        except (rawpy.LibRawError, OSError) as error:
            raise InputImageError(f"{path}: RAW decoding failed ({error})") from None
    finally:
        raw.close()
    metadata = PhotoMetadata(exif=_exif_of_raw(path), xmp=None, icc_profile=srgb_profile_bytes())
    return Photo(
        color=to_float(rgb, 16),
        alpha=None,
        bit_depth=16,
        source_format="RAW",
        metadata=metadata,
        source=path,
        notes=["RAW developed with rawpy: camera white balance, no auto-brighten, 16-bit sRGB"],
    )
