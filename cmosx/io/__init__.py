"""Image reading and writing with photo metadata (EXIF, XMP, ICC), RAW development, atomic writes."""
