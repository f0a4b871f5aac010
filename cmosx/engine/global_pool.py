"""Exact tiling for networks whose GIA pools channels over the whole image (``channel_pool="global"``).

Such a network (the ``paper`` spec) is written as a step generator (:mod:`cmosx.models.gia`): each global
channel pool yields its feature maps and waits for their means over the whole image. Every other
operation is local, so a tile computes those maps exactly on its core (the halo covers the receptive
field). :func:`global_pool_means` therefore runs every tile of a plan in lockstep, request by request:
each tile adds the sums of its maps over its *cell* (the cells of a plan partition the whole input,
each inside its tile's core), and the totals divided by the pixel count are sent back to every tile
before the next request. The result, one answer per request, is what the network then gets for every
tile (``pooled=`` of its forward), so tiled output equals untiled output.

Cost: the tiles run up to the last request once more (for RRDB-SFT only its prior GIA; for CMOS nearly
the whole network), and CMOS's tiles are all held in memory between requests (their activations at
every scale: for a large photo a few hundred MB in bf16).
"""

from __future__ import annotations

from collections.abc import Callable, Generator

from torch import Tensor

from cmosx.engine.runner import Window, window_input
from cmosx.engine.tiles import AxisPlan, TileGrid
from cmosx.errors import EngineError
from cmosx.models.gia import PoolAnswer, PoolRequest

StartSteps = Callable[[list[Tensor]], Generator[PoolRequest, PoolAnswer, object]]


def partition_cells(plan: AxisPlan) -> list[tuple[int, int]]:
    """Per tile, the cell ``[a, b)`` it accounts for: from its core start to the next core's start
    (the last to the axis end), so the cells partition ``[0, length)`` and each lies in its core."""
    starts = [span.start for span in plan.spans]
    if starts[0] != 0 or plan.spans[-1].stop != plan.length:
        raise EngineError("global pooling needs a plan whose cores cover the whole axis")
    return list(zip(starts, starts[1:] + [plan.length], strict=True))


def _scaled(a: int, b: int, stride: int) -> tuple[int, int]:
    """The feature pixels ``p`` (each covering input pixels ``[p s, p s + s)``) with ``a <= p s < b``."""
    return -(-a // stride), -(-b // stride)


def _stride(input_size: int, feature_size: int) -> int:
    stride = max(1, input_size // max(feature_size, 1))
    if -(-input_size // stride) != feature_size:
        raise EngineError(f"a {feature_size}-pixel feature map is not a stride of the {input_size}-pixel tile")
    return stride


def _cell_sums(request: PoolRequest, window: Window, cell: tuple[tuple[int, int], tuple[int, int]]):
    """Per map of a one-tile request: (float64 channel sums over the cell, pixel count)."""
    row, col = window
    sums = []
    for feature in request:
        if feature.shape[0] != 1:
            raise EngineError("global pooling runs one tile per call")
        sy = _stride(row.in_size, feature.shape[-2])
        sx = _stride(col.in_size, feature.shape[-1])
        y0, y1 = _scaled(cell[0][0] - row.in_start, cell[0][1] - row.in_start, sy)
        x0, x1 = _scaled(cell[1][0] - col.in_start, cell[1][1] - col.in_start, sx)
        part = feature[0, :, y0:y1, x0:x1]
        sums.append((part.double().sum(dim=(1, 2)).cpu(), part.shape[-2] * part.shape[-1]))
    return sums


def global_pool_means(start: StartSteps, inputs: list[Tensor], grid: TileGrid, requests: int) -> list[PoolAnswer]:
    """The whole input's answer to each of the network's ``requests`` pool requests, computed in tiles.

    Args:
        start: the network's step generator for one tile: ``start([crop, ...])`` with ``1 x C x h x w``
            crops of ``inputs`` (run it under the precision and ``inference_mode`` of the real pass).
        inputs: ``C x H x W`` tensors (CPU) tiled alike, e.g. the photo and its condition maps.
        grid: the tiling (input windows with the network's halo and alignment; cores cover the input).
        requests: pool requests per forward (:func:`cmosx.models.gia.count_pool_requests`).

    Returns:
        ``requests`` answers, each a tuple of ``1 x C x 1 x 1`` float32 means (CPU).
    """
    windows = [(grid.rows.spans[i], grid.cols.spans[j]) for i, j in grid.indices()]
    row_cells, col_cells = partition_cells(grid.rows), partition_cells(grid.cols)
    cells = [(row_cells[i], col_cells[j]) for i, j in grid.indices()]
    tiles = [start([window_input(t, w)[None] for t in inputs]) for w in windows]
    answers: list[PoolAnswer] = []
    try:
        for _ in range(requests):
            totals: list[list] = []
            for tile, window, cell in zip(tiles, windows, cells, strict=True):
                try:
                    request = next(tile) if not answers else tile.send(answers[-1])
                except StopIteration:
                    raise EngineError(f"the network made fewer than {requests} pool requests") from None
                for k, (sums, count) in enumerate(_cell_sums(request, window, cell)):
                    if k == len(totals):
                        totals.append([sums, count])
                    else:
                        totals[k][0] += sums
                        totals[k][1] += count
                del request
            answers.append(tuple((s / n).float().reshape(1, -1, 1, 1) for s, n in totals))
    finally:
        for tile in tiles:
            tile.close()
    return answers


def needs_global_pass(requests: int, grid: TileGrid) -> bool:
    """Whether tiles need :func:`global_pool_means`: the network pools globally and there are several tiles
    (one tile sees the whole input, so its own means are the whole image's)."""
    return requests > 0 and len(grid) > 1
