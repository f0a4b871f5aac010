"""Tile geometry: where each tile sits, what the network sees around it (halo), and how it is aligned.

Everything here is plain integer arithmetic on one axis; a 2-D tiling is the product of a row plan
and a column plan (see :class:`TileGrid`).

Vocabulary (all in input pixels, half-open intervals ``[start, stop)``):

- **core**: the pixels a tile contributes to the output. Neighbouring cores overlap by at least
  ``overlap`` pixels; the blend window (``blend.py``) fades between them there.
- **input window**: the core plus at least ``halo`` pixels of context on each side (less only at the
  image border, where the network sees exactly what it sees when run on the whole image). Every input
  window of one plan has the same length, so tiles can be stacked into a batch, and starts on a
  multiple of ``multiple_of`` so strided networks see the same pixel grid as on the whole image.

The tile count is chosen first and the core size second, so the tiles are evenly spread and there is
never a thin last tile.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cmosx.errors import UsageError


@dataclass(frozen=True)
class Span:
    """One tile along one axis: its core ``[start, stop)`` and its input window ``[in_start, in_stop)``."""

    start: int
    stop: int
    in_start: int
    in_stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start

    @property
    def in_size(self) -> int:
        return self.in_stop - self.in_start


@dataclass(frozen=True)
class AxisPlan:
    """The tiles along one axis: cores cover ``[region_start, region_stop)`` without gaps.

    ``length`` is the whole axis (input windows may use any of it); the region is the whole axis
    except when a tile is re-split after an out-of-memory error.
    """

    length: int
    spans: tuple[Span, ...]
    overlap: int
    halo: int
    multiple_of: int = 1
    region_start: int = 0
    region_stop: int = -1

    def __post_init__(self):
        if self.region_stop < 0:
            object.__setattr__(self, "region_stop", self.length)

    @property
    def region_size(self) -> int:
        return self.region_stop - self.region_start

    def __len__(self) -> int:
        return len(self.spans)

    def neighbour_overlaps(self, index: int) -> tuple[int, int]:
        """Pixels shared with the previous and the next tile's core (0 at the region border)."""
        span = self.spans[index]
        before = self.spans[index - 1].stop - span.start if index > 0 else 0
        after = span.stop - self.spans[index + 1].start if index + 1 < len(self.spans) else 0
        return max(before, 0), max(after, 0)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def plan_axis(
    length: int,
    tile: int,
    overlap: int,
    halo: int,
    multiple_of: int = 1,
    region: tuple[int, int] | None = None,
) -> AxisPlan:
    """Plan the tiles along one axis.

    Args:
        length: axis length in pixels; must be a multiple of ``multiple_of`` (pad the image first).
        tile: the largest core size wanted (pixels).
        overlap: the least number of pixels neighbouring cores share (blended there).
        halo: the least context the network sees beyond the core (its receptive-field radius).
        multiple_of: input windows start on, and span, multiples of this (network stride).
        region: the part ``[a, b)`` of the axis the cores must cover (default: all of it).

    Returns:
        An :class:`AxisPlan`; a single tile covering the region when it is at most ``tile`` long.
    """
    if length < 1:
        raise UsageError(f"cannot tile an axis of length {length}")
    if tile < 1 or overlap < 0 or halo < 0 or multiple_of < 1:
        raise UsageError(f"invalid tiling: tile={tile}, overlap={overlap}, halo={halo}, multiple_of={multiple_of}")
    if length % multiple_of:
        raise UsageError(f"axis length {length} is not a multiple of {multiple_of}; pad the image first")
    region_start, region_stop = region if region is not None else (0, length)
    if not 0 <= region_start < region_stop <= length:
        raise UsageError(f"tiling region {region} outside an axis of length {length}")
    extent = region_stop - region_start

    if extent <= tile:
        count, size = 1, extent
        starts = [region_start]
    else:
        if overlap * 2 > tile:
            raise UsageError(f"overlap ({overlap}) must be at most half the tile size ({tile})")
        # Count first: the fewest tiles of at most `tile` pixels that overlap by at least `overlap`.
        count = math.ceil((extent - overlap) / (tile - overlap))
        # Then the size: the smallest core size that covers the region with that count and overlap.
        size = math.ceil((extent + (count - 1) * overlap) / count)
        # Spread the starts evenly; each step is floor or ceil of the mean step, never above size - overlap.
        starts = [region_start + (i * (extent - size)) // (count - 1) for i in range(count)]

    in_size = min(length, _round_up(size + 2 * halo + multiple_of - 1, multiple_of))
    spans = []
    for start in starts:
        in_start = min(max(start - halo, 0), length - in_size)
        in_start -= in_start % multiple_of
        spans.append(Span(start, start + size, in_start, in_start + in_size))
    return AxisPlan(length, tuple(spans), overlap, halo, multiple_of, region_start, region_stop)


@dataclass(frozen=True)
class TileGrid:
    """A 2-D tiling: every (row span, column span) pair is one tile."""

    rows: AxisPlan
    cols: AxisPlan

    def __len__(self) -> int:
        return len(self.rows) * len(self.cols)

    def indices(self) -> list[tuple[int, int]]:
        """(row index, column index) of every tile, row-major."""
        return [(i, j) for i in range(len(self.rows)) for j in range(len(self.cols))]


def as_pair(value: int | tuple[int, int]) -> tuple[int, int]:
    """An int or a (rows, cols) pair -> a (rows, cols) pair."""
    if isinstance(value, int):
        return value, value
    rows, cols = value
    return int(rows), int(cols)


def plan_grid(
    height: int,
    width: int,
    tile: int | tuple[int, int],
    overlap: int,
    halo: int,
    multiple_of: int | tuple[int, int] = 1,
) -> TileGrid:
    """Plan a 2-D tiling of a ``height x width`` image (multiples of ``multiple_of``: int or (rows, cols)).

    ``tile``: the largest core size, one for both axes or (rows, cols).
    """
    m_rows, m_cols = as_pair(multiple_of)
    t_rows, t_cols = as_pair(tile)
    return TileGrid(
        rows=plan_axis(height, t_rows, overlap, halo, m_rows),
        cols=plan_axis(width, t_cols, overlap, halo, m_cols),
    )


def _axis_options(
    length: int, overlap: int, halo: int, multiple_of: int, keep: int
) -> list[tuple[int, int, int, int]]:
    """(tile, tiles kept, input pixels computed, input window size) for each tile count along one axis,
    fewest tiles first.

    ``keep``: tiles starting at or beyond it (in the padding) are skipped, as the runner does.
    """
    options, seen = [], set()
    for count in range(1, max(1, length // max(multiple_of, 2 * overlap + 1, 1)) + 1):
        tile = -(-(length + (count - 1) * overlap) // count)
        if count > 1 and overlap * 2 > tile:
            break
        plan = plan_axis(length, tile, overlap, halo, multiple_of)
        kept = [span for span in plan.spans if span.start < keep]
        if len(plan.spans) != count or len(kept) in seen:
            continue
        seen.add(len(kept))
        options.append((tile, len(kept), sum(span.in_size for span in kept), plan.spans[0].in_size))
    return options


def plan_fitting_tiles(
    height: int,
    width: int,
    overlap: int,
    halo: int,
    multiple_of: int | tuple[int, int],
    fits,
    limit: tuple[int, int] | None = None,
) -> tuple[int, int]:
    """The (rows, cols) core tile whose grid computes the fewest input pixels with every window fitting.

    ``fits(in_rows, in_cols) -> bool`` says whether one input window fits the memory budget. Tiles need
    not be square: a photo whose width fits one window is cut into full-width strips, so its halo is
    computed again only along one axis. When even the smallest tiles do not fit, they are returned (the
    runner then splits on out-of-memory errors where the device reports them). ``limit``: the part of
    the image kept (tiles wholly beyond it are not computed). Ties go to fewer tiles.
    """
    m_rows, m_cols = as_pair(multiple_of)
    keep_rows, keep_cols = limit if limit is not None else (height, width)
    row_options = _axis_options(height, overlap, halo, m_rows, keep_rows)
    col_options = _axis_options(width, overlap, halo, m_cols, keep_cols)
    best, best_cost = None, None
    for row_tile, row_count, row_pixels, row_in in row_options:
        for col_tile, col_count, col_pixels, col_in in col_options:
            if not fits(row_in, col_in):
                continue
            cost = (row_pixels * col_pixels, row_count * col_count)
            if best_cost is None or cost < best_cost:
                best, best_cost = (row_tile, col_tile), cost
    if best is None:
        return row_options[-1][0], col_options[-1][0]
    return best


def plan_subgrid(rows: AxisPlan, cols: AxisPlan, row: Span, col: Span, tile: int) -> TileGrid:
    """Re-split one tile's core (``row`` x ``col``) into smaller tiles with the same halo (after an OOM)."""
    overlap = min(rows.overlap, tile // 4)
    return TileGrid(
        rows=plan_axis(rows.length, tile, overlap, rows.halo, rows.multiple_of, (row.start, row.stop)),
        cols=plan_axis(cols.length, tile, overlap, cols.halo, cols.multiple_of, (col.start, col.stop)),
    )


def padded_size(size: int, multiple_of: int) -> int:
    """The smallest multiple of ``multiple_of`` that is at least ``size``."""
    return _round_up(size, multiple_of)


def lcm_pair(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    """Per-axis least common multiple of two (rows, cols) alignments."""
    return math.lcm(a[0], b[0]), math.lcm(a[1], b[1])
