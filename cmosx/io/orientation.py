"""EXIF orientation (tag 0x0112, values 1-8) applied to pixel arrays so images come out upright."""

from __future__ import annotations

import numpy as np

ORIENTATION_TAG = 0x0112


def apply_orientation(array: np.ndarray, orientation: int) -> np.ndarray:
    """Turn an H x W x C array stored with EXIF ``orientation`` into the upright image.

    1 normal, 2 mirrored left-right, 3 rotated 180, 4 mirrored top-bottom, 5 transposed, 6 needs a 90 degree
    clockwise turn, 7 transversed, 8 needs a 90 degree counter-clockwise turn. Unknown values are ignored.
    On arrays, not ``PIL.ImageOps.exif_transpose``: 16-bit colour and float pixels never become Pillow images.
    """
    if orientation == 2:
        out = array[:, ::-1]
    elif orientation == 3:
        out = array[::-1, ::-1]
    elif orientation == 4:
        out = array[::-1]
    elif orientation == 5:
        out = array.transpose(1, 0, 2)
    elif orientation == 6:
        out = np.rot90(array, k=-1)
    elif orientation == 7:
        out = array[::-1, ::-1].transpose(1, 0, 2)
    elif orientation == 8:
        out = np.rot90(array, k=1)
    else:
        out = array
    return np.ascontiguousarray(out)
