"""Overlap blending: a raised-cosine window per tile, weighted sums and weights kept apart, one division.

Each tile's core is multiplied by a window that is 1 inside, fades in over the pixels it shares with
the previous tile and out over those it shares with the next (``sin^2`` ramps, so two facing ramps sum
to exactly 1), and is 1 up to the image border (no darkening there). The weighted tiles are summed
into the output buffer; the weights are summed separately and divided out at the end, so the result is
a proper weighted average wherever tiles meet, whatever the windows.

A 2-D window is the product of a row window and a column window, and tiles form a product grid, so
the summed 2-D weight is the outer product of the summed row weights and the summed column weights:
we keep those two vectors instead of a full-resolution weight image (saving a third of the output
buffer on large photos). Tiles that are split again after an out-of-memory error are blended inside
their parent core first (a :class:`TileAccumulator` over the sub-grid, in ``cmosx.engine.runner``), so
the grid stays a product grid.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from cmosx.engine.tiles import AxisPlan
from cmosx.errors import EngineError


def ramp(length: int) -> Tensor:
    """``length`` weights rising from near 0 to near 1 (``sin^2``); ``ramp(n) + ramp(n).flip(0) == 1``."""
    t = (torch.arange(length, dtype=torch.float64) + 0.5) / length
    return torch.sin(t * (math.pi / 2)) ** 2


def axis_window(plan: AxisPlan, index: int, scale: int = 1) -> Tensor:
    """The 1-D blend window over tile ``index``'s core, at ``scale`` x the plan's resolution (float32)."""
    span = plan.spans[index]
    size = span.size * scale
    window = torch.ones(size, dtype=torch.float64)
    before, after = plan.neighbour_overlaps(index)
    if before:
        window[: before * scale] *= ramp(before * scale)
    if after:
        window[size - after * scale :] *= ramp(after * scale).flip(0)
    return window.float()


def axis_weight_sum(plan: AxisPlan, scale: int = 1) -> Tensor:
    """The sum of all tiles' 1-D windows over the plan's region, at ``scale`` x resolution (float32, > 0)."""
    total = torch.zeros(plan.region_size * scale, dtype=torch.float32)
    for index, span in enumerate(plan.spans):
        offset = span.start - plan.region_start
        total[offset * scale : (offset + span.size) * scale] += axis_window(plan, index, scale)
    return total


class TileAccumulator:
    """Sums weighted tiles into a ``C x H x W`` float32 CPU buffer; :meth:`finish` divides by the weights.

    The buffer covers the plans' regions (the whole image, or one tile's core when it is re-split).

    Args:
        channels: output channels C.
        rows, cols: the tiling's axis plans (at the input resolution).
        scale: output pixels per input pixel (4 for the SR image, 1 for the maps).
        dtype: the buffer's dtype (float32).
    """

    def __init__(
        self,
        channels: int,
        rows: AxisPlan,
        cols: AxisPlan,
        scale: int = 1,
        dtype=torch.float32,
        limit: tuple[int, int] | None = None,
    ):
        self.rows, self.cols, self.scale = rows, cols, scale
        # `limit` (input pixels from the region start) crops away padding: nothing beyond it is stored.
        lim_rows, lim_cols = limit if limit is not None else (rows.region_size, cols.region_size)
        self.height, self.width = min(lim_rows, rows.region_size) * scale, min(lim_cols, cols.region_size) * scale
        self.buffer = torch.zeros(channels, self.height, self.width, dtype=dtype)
        self.row_weights = axis_weight_sum(rows, scale)[: self.height]
        self.col_weights = axis_weight_sum(cols, scale)[: self.width]
        self._row_windows = [axis_window(rows, i, scale) for i in range(len(rows))]
        self._col_windows = [axis_window(cols, j, scale) for j in range(len(cols))]
        self.expected = {
            (i, j)
            for i, rs in enumerate(rows.spans)
            for j, cs in enumerate(cols.spans)
            if (rs.start - rows.region_start) * scale < self.height
            and (cs.start - cols.region_start) * scale < self.width
        }
        self._added: set[tuple[int, int]] = set()

    def add(self, row: int, col: int, core: Tensor) -> None:
        """Add tile (row, col)'s core output ``C x (scale*h) x (scale*w)`` (any device/dtype)."""
        if (row, col) not in self.expected:
            raise EngineError(f"tile ({row}, {col}) lies outside the output")
        if (row, col) in self._added:
            raise EngineError(f"tile ({row}, {col}) added twice")
        rs, cs = self.rows.spans[row], self.cols.spans[col]
        s = self.scale
        if core.shape[-2:] != (rs.size * s, cs.size * s) or core.shape[0] != self.buffer.shape[0]:
            raise EngineError(
                f"tile ({row}, {col}) has shape {tuple(core.shape)}, expected {rs.size * s}x{cs.size * s}"
            )
        y0, x0 = (rs.start - self.rows.region_start) * s, (cs.start - self.cols.region_start) * s
        y1, x1 = min(y0 + rs.size * s, self.height), min(x0 + cs.size * s, self.width)
        core = core[:, : y1 - y0, : x1 - x0].to(device="cpu", dtype=self.buffer.dtype)
        if self.rows.neighbour_overlaps(row) == (0, 0) and self.cols.neighbour_overlaps(col) == (0, 0):
            self.buffer[:, y0:y1, x0:x1].add_(core)  # a window of ones: no weighted copy of the tile
        else:
            weight = self._row_windows[row][: y1 - y0, None] * self._col_windows[col][None, : x1 - x0]
            self.buffer[:, y0:y1, x0:x1].addcmul_(core, weight)  # no weighted copy of the tile
        self._added.add((row, col))

    @property
    def complete(self) -> bool:
        return self._added == self.expected

    def finish(self, strip_rows: int = 256) -> Tensor:
        """Divide by the summed weights (in place, by strips of rows) and return the buffer."""
        if not self.complete:
            missing = len(self.expected - self._added)
            raise EngineError(f"{missing} tile(s) never produced an output")
        if bool((self.row_weights == 1).all()) and bool((self.col_weights == 1).all()):
            return self.buffer  # no tile overlaps another (e.g. one tile): every weight is 1
        for y0 in range(0, self.buffer.shape[1], strip_rows):
            y1 = min(y0 + strip_rows, self.buffer.shape[1])
            weight = self.row_weights[y0:y1, None] * self.col_weights[None, :]
            self.buffer[:, y0:y1].div_(weight)
        return self.buffer
