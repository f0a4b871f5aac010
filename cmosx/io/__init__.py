"""Image reading and writing with photo metadata (EXIF, XMP, ICC), RAW development, atomic writes.

``read_image(path) -> Photo`` and ``write_image(photo, path, quality=95)``; see :mod:`cmosx.io.photo`.
"""

from cmosx.io.photo import Photo, PhotoMetadata
from cmosx.io.reader import DEFAULT_MAX_PIXELS, read_image
from cmosx.io.writer import DEFAULT_JPEG_QUALITY, write_image

__all__ = ["DEFAULT_JPEG_QUALITY", "DEFAULT_MAX_PIXELS", "Photo", "PhotoMetadata", "read_image", "write_image"]
