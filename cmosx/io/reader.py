"""Reading photos: the pixel limit is checked on the header before any decoding, then pixels, metadata,
orientation. 8 or 16 bits is decided by the stored sample type, never by pixel values."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, UnidentifiedImageError

from cmosx.errors import InputImageError
from cmosx.io.formats import is_raw_path
from cmosx.io.heif import HEIF_FORMATS, container_bit_depth, decode_deep, register_heif_opener
from cmosx.io.metadata import exif_from_tiff_tags, load_exif, orientation_of
from cmosx.io.orientation import ORIENTATION_TAG, apply_orientation
from cmosx.io.photo import Photo, PhotoMetadata, to_float
from cmosx.ops.alpha import unpremultiply

DEFAULT_MAX_PIXELS = 100_000_000  # 100 megapixels of input (the x4 output has 16 times more)
READABLE_FORMATS = {"JPEG", "MPO", "PNG", "TIFF", "WEBP", "BMP", "HEIF", "AVIF"}
_TIFF_ICC_TAG = 34675
_TIFF_XMP_TAG = 700


def read_image(path: str | Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Photo:
    """Decode ``path`` (JPEG, PNG, TIFF, WebP, BMP, HEIC/HEIF, AVIF or camera RAW) into an upright :class:`Photo`.

    The EXIF orientation is applied to the pixels (the returned EXIF says 1); alpha is returned straight
    (associated/premultiplied alpha is divided out); 10/12-bit HEIC/AVIF is held as 16-bit; CMYK is converted
    to RGB (through its ICC profile when it has one) with a note. Raises :class:`InputImageError` naming the
    file for anything unreadable: missing, empty, truncated, corrupt, unsupported, or more than ``max_pixels``
    pixels (checked before decoding).
    """
    path = Path(path)
    if not path.is_file():
        raise InputImageError(f"{path}: no such file")
    try:
        if path.stat().st_size == 0:
            raise InputImageError(f"{path}: empty file (0 bytes)")
        if is_raw_path(path):
            from cmosx.io.raw import read_raw

            return read_raw(path, max_pixels)
        return _read_raster(path, max_pixels)
    except InputImageError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as error:
        raise InputImageError(f"{path}: cannot decode ({_describe(error)})") from None


def _describe(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


def _open(path: Path) -> Image.Image:
    register_heif_opener()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(path)
    except Image.DecompressionBombError as error:
        raise InputImageError(f"{path}: refused before decoding, far too many pixels ({error})") from None
    except UnidentifiedImageError:
        raise InputImageError(f"{path}: not an image format cmosx can read (or the file is corrupt)") from None


def _check_pixels(path: Path, width: int, height: int, max_pixels: int | None) -> None:
    if max_pixels is not None and width * height > max_pixels:
        raise InputImageError(
            f"{path}: {width} x {height} pixels is over the limit of {max_pixels / 1e6:.0f} megapixels "
            "(raise it with --max-megapixels)"
        )


def _is_tiff(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(4) in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def _read_raster(path: Path, max_pixels: int | None) -> Photo:
    try:
        image = _open(path)
    except InputImageError:
        if _is_tiff(path):  # TIFFs Pillow cannot open (float RGB, BigTIFF, ...) go to tifffile alone
            return _read_tiff_with_tifffile(path, max_pixels)
        raise
    with image:
        fmt = image.format
        if fmt not in READABLE_FORMATS:
            raise InputImageError(
                f"{path}: {fmt} images are not supported (JPEG, PNG, TIFF, WebP, BMP, HEIC, AVIF, RAW)"
            )
        _check_pixels(path, image.width, image.height, max_pixels)
        metadata = _metadata(image)
        notes: list[str] = []
        if fmt == "PNG" and _png_bit_depth(path) == 16:
            array, alpha_kind = _decode_png16(path)
        elif fmt == "TIFF" and _tiff_needs_tifffile(image):
            array, alpha_kind = _decode_tiff_deep(path, notes)
        elif fmt in HEIF_FORMATS and (depth := container_bit_depth(path, fmt, image.info)) > 8:
            array, alpha_kind = decode_deep(path, fmt, depth)
            notes.append(f"{depth}-bit {'HEIC' if fmt == 'HEIF' else fmt} held as 16-bit")
        else:
            if getattr(image, "n_frames", 1) > 1:
                notes.append("only the first frame/page was read")
            array, alpha_kind, icc = _decode_pillow(image, metadata.icc_profile, notes)
            metadata.icc_profile = icc
    return _to_photo(path, array, alpha_kind, "JPEG" if fmt == "MPO" else fmt, metadata, notes)


def _read_tiff_with_tifffile(path: Path, max_pixels: int | None) -> Photo:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        _check_pixels(path, int(page.imagewidth), int(page.imagelength), max_pixels)
        icc = page.tags.get(_TIFF_ICC_TAG)
        xmp = page.tags.get(_TIFF_XMP_TAG)
        metadata = PhotoMetadata(
            exif=None,
            xmp=bytes(xmp.value) if xmp is not None and isinstance(xmp.value, (bytes, bytearray)) else None,
            icc_profile=bytes(icc.value) if icc is not None and isinstance(icc.value, (bytes, bytearray)) else None,
        )
    metadata.exif = exif_from_tiff_tags(path)
    notes: list[str] = []
    array, alpha_kind = _decode_tiff_deep(path, notes)
    return _to_photo(path, array, alpha_kind, "TIFF", metadata, notes)


def _metadata(image: Image.Image) -> PhotoMetadata:
    exif = load_exif(image)
    xmp = image.info.get("xmp") or image.info.get("XML:com.adobe.xmp")
    if xmp is None and image.format == "TIFF":
        xmp = getattr(image, "tag_v2", {}).get(_TIFF_XMP_TAG)
    if isinstance(xmp, str):
        xmp = xmp.encode("utf-8")
    if isinstance(xmp, tuple):  # some TIFF writers store XMP as a tuple of byte values
        xmp = bytes(xmp)
    return PhotoMetadata(
        exif=exif if len(exif) else None,
        xmp=bytes(xmp) if xmp else None,
        icc_profile=image.info.get("icc_profile") or None,
    )


def _png_bit_depth(path: Path) -> int:
    """The IHDR bit depth, read from the header: Pillow opens a 16-bit RGB PNG as mode "RGB" and says no more."""
    with path.open("rb") as handle:
        header = handle.read(26)
    # 8-byte signature, 4-byte length, "IHDR", width, height, then the bit depth byte.
    return header[24] if len(header) > 24 and header[12:16] == b"IHDR" else 8


def _decode_png16(path: Path) -> tuple[np.ndarray, str]:
    """16-bit PNGs through libpng (imagecodecs): Pillow would reduce 16-bit RGB to 8 bits."""
    import imagecodecs

    array = imagecodecs.png_decode(path.read_bytes())
    channels = 1 if array.ndim == 2 else array.shape[2]
    return array, ("straight" if channels in (2, 4) else "none")


def _tiff_needs_tifffile(image: Image.Image) -> bool:
    tags = getattr(image, "tag_v2", {})
    bits = tags.get(258, (8,))
    bits = bits if isinstance(bits, tuple) else (bits,)
    sample_format = tags.get(339, (1,))
    sample_format = sample_format if isinstance(sample_format, tuple) else (sample_format,)
    return max(bits) > 8 or 3 in sample_format


def _decode_tiff_deep(path: Path, notes: list[str]) -> tuple[np.ndarray, str]:
    """16-bit and float TIFFs through tifffile (Pillow cannot hold 16-bit RGB)."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if len(tif.pages) > 1:
            notes.append("only the first page was read")
        page = tif.pages[0]
        array = page.asarray()
        photometric = int(page.photometric)
        extras = tuple(int(x) for x in (page.extrasamples or ()))
        if int(page.planarconfig) == 2 and array.ndim == 3:  # separate planes: S x H x W
            array = np.moveaxis(array, 0, -1)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.dtype.kind == "f":
        notes.append("floating-point samples clipped to [0, 1] and treated as 16-bit")
    elif array.dtype != np.uint16:
        if array.dtype.kind not in "ui":
            raise InputImageError(f"{path}: unsupported TIFF sample type {array.dtype}")
        array = np.clip(array, 0, 65535).astype(np.uint16)
    if photometric == 0:  # MinIsWhite
        array = (1.0 - array) if array.dtype.kind == "f" else (65535 - array).astype(np.uint16)
    if photometric == 5:  # separated (CMYK)
        notes.append("CMYK converted to RGB without a colour profile")
        peak = 1.0 if array.dtype.kind == "f" else 65535.0
        cmyk = array[:, :, :4].astype(np.float32) / peak
        rgb = (1.0 - cmyk[:, :, :3]) * (1.0 - cmyk[:, :, 3:4])
        return (rgb * peak).astype(array.dtype), "none"
    if photometric not in (0, 1, 2):
        raise InputImageError(f"{path}: unsupported TIFF colour model (photometric {photometric})")
    color_channels = 3 if photometric == 2 else 1
    if array.shape[2] > color_channels:
        kind = "associated" if extras and extras[0] == 1 else "straight"
        return array[:, :, : color_channels + 1], kind
    return array[:, :, :color_channels], "none"


def _decode_pillow(image: Image.Image, icc: bytes | None, notes: list[str]) -> tuple[np.ndarray, str, bytes | None]:
    """8-bit (and 16-bit grey) images Pillow holds natively. Returns (H x W x C array, alpha kind, icc)."""
    image.load()
    mode = image.mode
    if mode == "1":
        image, mode = image.convert("L"), "L"
    elif mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in image.info
        image = image.convert("RGBA" if has_alpha else "RGB")
        mode = image.mode
    elif mode == "CMYK":
        image, icc = _cmyk_to_rgb(image, icc, notes)
        mode = "RGB"
    elif mode in ("YCbCr", "LAB", "HSV"):
        image, mode = image.convert("RGB"), "RGB"
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        return np.asarray(image).astype(np.uint16), "none", icc
    if mode == "I":
        return np.clip(np.asarray(image), 0, 65535).astype(np.uint16), "none", icc
    if mode == "F":
        notes.append("floating-point samples clipped to [0, 1] and treated as 16-bit")
        return np.asarray(image, dtype=np.float32), "none", icc
    if mode in ("L", "RGB"):
        return np.asarray(image), "none", icc
    if mode in ("LA", "RGBA"):
        return np.asarray(image), "straight", icc
    if mode in ("La", "RGBa"):
        return np.asarray(image), "associated", icc
    raise InputImageError(f"{image.filename}: unsupported pixel mode {mode}")


def _cmyk_to_rgb(image: Image.Image, icc: bytes | None, notes: list[str]) -> tuple[Image.Image, bytes | None]:
    if icc:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
            rgb = ImageCms.profileToProfile(image, source, srgb, outputMode="RGB")
            notes.append("CMYK converted to sRGB through its ICC profile; output tagged sRGB")
            return rgb, srgb.tobytes()
        except (ImageCms.PyCMSError, OSError):
            pass
    notes.append("CMYK converted to RGB without a colour profile (colours are approximate)")
    return image.convert("RGB"), None


def _to_photo(
    path: Path, array: np.ndarray, alpha_kind: str, fmt: str, metadata: PhotoMetadata, notes: list[str]
) -> Photo:
    if array.ndim == 2:
        array = array[:, :, None]
    bit_depth = 8 if array.dtype == np.uint8 else 16
    orientation = orientation_of(metadata.exif)
    array = apply_orientation(array, orientation)
    if metadata.exif is not None and ORIENTATION_TAG in metadata.exif:
        metadata.exif[ORIENTATION_TAG] = 1
    values = to_float(array, bit_depth)
    if alpha_kind == "none":
        color, alpha = values, None
    else:
        color, alpha = values[:-1], values[-1:]
        if alpha_kind == "associated":
            color = unpremultiply(color, alpha)
            notes.append("premultiplied (associated) alpha divided out")
    return Photo(
        color=color, alpha=alpha, bit_depth=bit_depth, source_format=fmt, metadata=metadata, source=path, notes=notes
    )

