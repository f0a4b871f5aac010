"""Tiled execution: batches of tiles through a network, blended into one CPU buffer, with OOM recovery.

The runner knows geometry and failure handling, not networks: it calls ``compute(windows)`` with a
list of tile windows (row span, column span; all of one shape) and expects one fresh core output per
window (``C x scale*h x scale*w``, any device). Out-of-memory (by exception type) first halves the
batch; a single tile that still does not fit is re-split into smaller tiles with the same halo, whose
outputs are blended into that tile's core before it joins the image. Any other error propagates: a
failed tile is never replaced by whatever a buffer held before.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from cmosx.engine.blend import TileAccumulator
from cmosx.engine.memory import OOM_ERRORS, release_cached
from cmosx.engine.tiles import AxisPlan, Span, as_pair, plan_grid, plan_subgrid
from cmosx.errors import DeviceError, EngineError

Window = tuple[Span, Span]  # (row span, column span)
ComputeFn = Callable[[list[Window]], list[Tensor]]
Progress = Callable[[int, int], None]


def window_input(tensor: Tensor, window: Window) -> Tensor:
    """The input crop of ``window`` from a ``C x H x W`` tensor (a view)."""
    row, col = window
    return tensor[:, row.in_start : row.in_stop, col.in_start : col.in_stop]


def crop_core(output: Tensor, window: Window, scale: int) -> Tensor:
    """The core of ``window`` from a network output over its input window (``C x scale*h x scale*w``)."""
    row, col = window
    y0, x0 = (row.start - row.in_start) * scale, (col.start - col.in_start) * scale
    return output[..., y0 : y0 + row.size * scale, x0 : x0 + col.size * scale]


class TiledRunner:
    """Run ``compute`` over a tiling of a ``height x width`` (padded) input and blend the results.

    Args:
        compute: windows -> core outputs (see module docstring).
        channels: output channels.
        scale: output pixels per input pixel.
        device: where ``compute`` runs (for releasing cached memory after an OOM).
        min_tile: the smallest core size a re-split may use before giving up.
    """

    def __init__(self, compute: ComputeFn, channels: int, scale: int, device: torch.device, min_tile: int = 16):
        self.compute = compute
        self.channels = channels
        self.scale = scale
        self.device = device
        self.min_tile = min_tile
        self.batch_used = 0  # the batch size that worked (after any OOM halving)
        self.tiles_run = 0  # top-level tiles of the last run

    @staticmethod
    def count_tiles(
        height: int,
        width: int,
        tile: int | tuple[int, int],
        overlap: int,
        halo: int,
        multiple_of: int | tuple[int, int],
        limit: tuple[int, int] | None = None,
    ) -> int:
        """How many tiles :meth:`run` will compute with these arguments."""
        grid = plan_grid(height, width, tile, overlap, halo, multiple_of)
        rows = sum(1 for s in grid.rows.spans if limit is None or s.start < limit[0])
        cols = sum(1 for s in grid.cols.spans if limit is None or s.start < limit[1])
        return rows * cols

    def run(
        self,
        height: int,
        width: int,
        tile: int | tuple[int, int],
        overlap: int,
        halo: int,
        multiple_of: int | tuple[int, int],
        batch: int = 1,
        progress: Progress | None = None,
        limit: tuple[int, int] | None = None,
    ) -> Tensor:
        """Tile, compute, blend; returns ``channels x scale*height x scale*width`` float32 on the CPU.

        ``height x width`` is the padded input size (multiples of ``multiple_of``); ``limit`` (rows,
        cols) is the part of it to keep: the output is ``scale*limit`` and tiles wholly in the padding
        are skipped. ``tile``: the largest core size, one for both axes or (rows, cols).
        """
        grid = plan_grid(height, width, tile, overlap, halo, multiple_of)
        acc = TileAccumulator(self.channels, grid.rows, grid.cols, self.scale, limit=limit)
        pending = [index for index in grid.indices() if index in acc.expected]
        total, done = len(pending), 0
        self.tiles_run = total
        batch = max(1, int(batch))
        if progress is not None:
            progress(0, total)
        while pending:
            group = pending[:batch]
            windows = [(grid.rows.spans[i], grid.cols.spans[j]) for i, j in group]
            try:
                cores = self._checked(windows)
            except OOM_ERRORS:
                release_cached(self.device)
                if batch > 1:
                    batch = max(1, batch // 2)
                    continue
                (i, j), window = group[0], windows[0]
                cores = [self._compute_split(grid.rows, grid.cols, window, min(as_pair(tile)) // 2)]
            for (i, j), core in zip(group, cores, strict=True):
                acc.add(i, j, core)
            pending = pending[len(group) :]
            done += len(group)
            if progress is not None:
                progress(done, total)
        self.batch_used = batch
        return acc.finish()

    def _checked(self, windows: list[Window]) -> list[Tensor]:
        cores = self.compute(windows)
        if len(cores) != len(windows):
            raise EngineError(f"compute returned {len(cores)} outputs for {len(windows)} tiles")
        return cores

    def _compute_split(self, rows: AxisPlan, cols: AxisPlan, window: Window, tile: int) -> Tensor:
        """The core output of ``window``, computed as smaller tiles (recursively halved on OOM)."""
        row, col = window
        if tile < self.min_tile:
            raise DeviceError(
                f"out of memory on {self.device} even for {self.min_tile}-pixel tiles; "
                "free memory, or use a smaller tile batch or the CPU"
            )
        sub = plan_subgrid(rows, cols, row, col, tile)
        acc = TileAccumulator(self.channels, sub.rows, sub.cols, self.scale)
        for i, j in sub.indices():
            sub_window = (sub.rows.spans[i], sub.cols.spans[j])
            try:
                (core,) = self._checked([sub_window])
            except OOM_ERRORS:
                release_cached(self.device)
                core = self._compute_split(sub.rows, sub.cols, sub_window, tile // 2)
            acc.add(i, j, core)
        return acc.finish()
