"""The in-memory photo: pixels as float tensors plus what a photographer expects to keep (EXIF, XMP, ICC)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor

from cmosx.errors import ArgumentError


@dataclass
class PhotoMetadata:
    """Metadata carried from the input to the output.

    ``exif`` already has the orientation applied to the pixels (its Orientation tag says 1 or is absent);
    ``xmp`` is the raw XMP packet (UTF-8 bytes); ``icc_profile`` the embedded ICC profile bytes.
    """

    exif: Image.Exif | None = None
    xmp: bytes | None = None
    icc_profile: bytes | None = None


@dataclass
class Photo:
    """One decoded image.

    color: C x H x W float32 in [0, 1], C = 1 (grayscale) or 3 (RGB), straight (not premultiplied) colour.
    alpha: 1 x H x W float32 in [0, 1], or None for opaque images.
    bit_depth: bits per channel of the source samples (8 or 16; float sources count as 16).
    source_format: "JPEG", "PNG", "TIFF", "WEBP", "BMP", "HEIF" (HEIC), "AVIF" or "RAW".
    notes: human-readable remarks about conversions done on read (CMYK -> RGB, ...).
    """

    color: Tensor
    alpha: Tensor | None
    bit_depth: int
    source_format: str
    metadata: PhotoMetadata = field(default_factory=PhotoMetadata)
    source: Path | None = None
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.color.dim() != 3 or self.color.shape[0] not in (1, 3):
            raise ArgumentError(f"color must be 1 x H x W or 3 x H x W, got {tuple(self.color.shape)}")
        if self.alpha is not None and self.alpha.shape != (1, *self.color.shape[1:]):
            raise ArgumentError(f"alpha must be 1 x H x W matching color, got {tuple(self.alpha.shape)}")

    @property
    def width(self) -> int:
        return int(self.color.shape[2])

    @property
    def height(self) -> int:
        return int(self.color.shape[1])

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels, as Pillow reports sizes."""
        return self.width, self.height

    @property
    def is_grayscale(self) -> bool:
        return self.color.shape[0] == 1

    def rgb(self) -> Tensor:
        """3 x H x W float32 in [0, 1]: grayscale replicated to three channels, alpha ignored."""
        return self.color.expand(3, -1, -1).contiguous() if self.is_grayscale else self.color

    def with_pixels(self, color: Tensor, alpha: Tensor | None) -> Photo:
        """A copy with new pixels (e.g. upscaled), keeping metadata, bit depth and notes."""
        return dataclasses.replace(self, color=color, alpha=alpha, notes=list(self.notes))


def to_float(array, bit_depth: int) -> Tensor:
    """H x W x C integer or float numpy array -> C x H x W float32 tensor in [0, 1]."""
    import numpy as np

    if array.dtype == np.uint8:
        values = array.astype(np.float32) / 255.0
    elif array.dtype == np.uint16:
        values = array.astype(np.float32) / 65535.0
    elif array.dtype.kind == "f":
        values = np.clip(np.nan_to_num(array.astype(np.float32)), 0.0, 1.0)
    else:  # pragma: no cover - callers convert other integer types first
        raise ArgumentError(f"unsupported sample type {array.dtype} for {bit_depth}-bit data")
    if values.ndim == 2:
        values = values[:, :, None]
    return torch.from_numpy(np.ascontiguousarray(values.transpose(2, 0, 1)))


def to_integer(values: Tensor | list[Tensor], bit_depth: int, strip_rows: int = 256):
    """C x H x W float tensor(s) in [0, 1] -> H x W x C numpy uint8 (8) or uint16 (16), rounded to nearest.

    A list of tensors (e.g. colour and alpha) is stacked along C. Converted by strips of rows, so the only
    full-size buffer is the integer result (a float copy of a 96 MP photo would be 1.1 GB).
    """
    import numpy as np

    parts = [values] if isinstance(values, Tensor) else list(values)
    peak = 255.0 if bit_depth == 8 else 65535.0
    dtype = np.uint8 if bit_depth == 8 else np.uint16
    height, width = parts[0].shape[-2:]
    out = np.empty((height, width, sum(part.shape[0] for part in parts)), dtype=dtype)
    for y0 in range(0, height, strip_rows):
        strip = torch.cat([part[:, y0 : y0 + strip_rows].detach().cpu().float() for part in parts], dim=0)
        scaled = strip.clamp_(0.0, 1.0).mul_(peak).round_()  # cat made a copy: in place is safe
        out[y0 : y0 + strip_rows] = scaled.permute(1, 2, 0).numpy()  # exact integers: the cast only converts
    return out
