"""The blind-SR pipeline: LR photo -> CMOS blur + semantic maps -> RRDB-SFT -> x4 photo, tiled.

Two tiled stages, both through :class:`~cmosx.engine.runner.TiledRunner` (only tiles go to the device;
results are blended on the CPU):

1. **Maps.** CMOS runs on large tiles with a large halo (``descriptor.cmos_halo_lr``), planned per photo
   (``cmos_tile="auto"``): the tiling that computes the fewest pixels (halos included) with each tile's
   working set within the memory budget (:func:`cmosx.engine.memory.budget_bytes`), e.g. full-width
   strips when a row of the photo fits; the blur
   sigma and the semantic logits of the tiles are blended at LR resolution into one map per photo.
   The blur map is then scaled (``blur_scale``) or replaced (``blur_override``), clamped to
   ``[0, sigma_max]``, and the logits become probabilities (softmax): the rule of training,
   :func:`cmosx.models.cmos.conditions`. With ``keep_bokeh`` the (given or estimated, unscaled) map
   also yields the weight of :mod:`cmosx.engine.bokeh`.
2. **SR.** RRDB-SFT runs on (smaller, batched) tiles of the LR photo with the matching crops of those
   global maps, so every SR tile of a photo is conditioned on the same estimate; the x4 tiles are
   blended into the output buffer. With ``keep_bokeh`` the output is then blended towards a
   grid-aligned bilinear upsampling where the photo is strongly defocused (:mod:`cmosx.engine.bokeh`).

The photo is first framed by one alignment cell (``sr_align`` rows / columns) of replicated pixels on
every side, so that no output pixel near the photo's border sees the networks' zero padding (a trained
network darkens or brightens a few pixels in the corners otherwise); the frame is cropped from the
results. The framed photo is then padded once (replicate, bottom/right) so that every tile's input
window starts on the networks' alignment grid (stride and GIA window grid) and all windows have one
shape; that padding is cut off again when blending.

With the model's halos and alignment (``cmosx.models.descriptor``) tiled output equals untiled output.
For specs whose GIA pools per window (``tiny``/``lite``) every tile is independent. For a spec whose GIA
pools channels over the whole image (``descriptor.global_pool``, the ``paper`` spec) a stage that runs
in several tiles first computes the whole photo's pooled means tile by tile
(:mod:`cmosx.engine.global_pool`) and then runs every tile with them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from cmosx.engine.bokeh import blend_towards_interpolation, bokeh_weight
from cmosx.engine.device import (
    autocast_context,
    candidate_precisions,
    check_precision_supported,
    choose_precision,
    parse_precision,
    resolve_device,
)
from cmosx.engine.global_pool import StartSteps, global_pool_means, needs_global_pass
from cmosx.engine.memory import MemoryModel, budget_bytes, fit_memory_model
from cmosx.engine.runner import TiledRunner, Window, crop_core, window_input
from cmosx.engine.tiles import as_pair, lcm_pair, padded_size, plan_fitting_tiles, plan_grid
from cmosx.errors import InputImageError, UsageError
from cmosx.models.cmos import conditions
from cmosx.models.fuse import fold_batchnorm
from cmosx.models.gia import PoolAnswer, count_pool_requests
from cmosx.ops.grid import grid_downsample
from cmosx.ops.padding import pad_bottom_right
from cmosx.ops.timing import device_sync

Progress = Callable[[int, int], None]

MIN_TILE = 16  # the smallest SR core an out-of-memory re-split may use
CPU_MAX_TILE = 2048  # caps the memory-fitted tile; beyond this the halo overhead is already small
GPU_MAX_TILE = 1024
MAX_TILE_BATCH = 16
SR_PROBE_SIDE = 128  # the SR memory probe runs tiles of this side and twice it
MEMORY_PROBE_VERSION = 2  # raised when the memory probe changes what it measures (2: runs in a row, 12/2026)


@dataclass
class MapsResult:
    """CMOS estimates for one photo (LR resolution, on the CPU)."""

    blur_lr: Tensor  # 1 x H x W float32, Gaussian sigma in HR pixels, in [0, sigma_max]
    semantic_lr: Tensor  # C x H x W float32 class probabilities


@dataclass
class UpscaleResult:
    """One upscaled photo and the maps it was conditioned on (all on the CPU)."""

    image: Tensor  # 3 x (scale H) x (scale W) float32 in [0, 1]
    blur_lr: Tensor  # 1 x H x W sigma (HR px) actually used
    semantic_lr: Tensor  # C x H x W probabilities actually used
    bokeh_lr: Tensor | None = None  # 1 x H x W weight of the smooth interpolation (keep_bokeh), in [0, 1]


@dataclass
class EngineStats:
    """What the last run did (for ``cmosx bench`` and tests)."""

    cmos_tiles: int = 0
    sr_tiles: int = 0
    redone_fp32: int = 0
    precision_probe: dict[str, float] = field(default_factory=dict)


def alignments(model) -> tuple[tuple[int, int], tuple[int, int]]:
    """(CMOS, RRDB-SFT) tile alignment (rows, cols) in LR pixels: where tile input windows may start.

    A tile sees the same pixel grid as the whole photo (the CMOS backbone's stride-8 grid, the GIA
    window grids) when its input window starts on these multiples (see ``cmosx.models.descriptor``).
    """
    desc = model.descriptor
    multiple = as_pair(int(desc.multiple_of))
    cmos_align = lcm_pair(as_pair(tuple(desc.cmos_align_lr)), multiple)
    sr_align = lcm_pair(as_pair(tuple(desc.align_lr)), multiple)
    return cmos_align, sr_align


class Upscaler:
    """Upscale photos x4 with a loaded model on one device (see the module docstring).

    Args:
        model: a :class:`cmosx.models.model.Model`. Both networks are set to eval mode in place and
            run as device copies with their BatchNorms folded (the model's own networks stay where
            they were).
        device: ``auto`` (CUDA > MPS > CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        precision: ``auto``, ``fp32``, ``bf16`` or ``fp16`` (see :mod:`cmosx.engine.device`).
        tile: SR core tile size in LR pixels, or ``auto`` (probe the memory, then fit).
        overlap: LR pixels neighbouring tiles share (blended with a raised-cosine window).
        tile_batch: SR tiles per device call, or ``auto`` (1 on the CPU; fitted on GPUs).
        blur_scale: multiplies the blur map (estimated or given) before clamping to [0, sigma_max]:
            how much of the defocus is removed (``cmosx upscale --deblur``; 0 = told it is in focus).
        keep_bokeh: None (restore everything), or the sigma threshold (HR px, in (0, sigma_max]) above
            which regions are kept soft: smoothly interpolated, not restored (:mod:`cmosx.engine.bokeh`;
            ``DEFAULT_BOKEH_SIGMA`` there). Decided on the unscaled map, so it does not move with
            ``blur_scale``.
        cmos_tile: CMOS core tile size in LR pixels, or ``auto`` (planned per photo within the memory
            budget: the estimate is global whenever the photo fits).
        channels_last: run the networks in channels-last memory format (much faster convolutions).
    """

    def __init__(
        self,
        model,
        device: str | torch.device = "auto",
        precision: str | torch.dtype = "auto",
        tile: int | str = "auto",
        overlap: int = 16,
        tile_batch: int | str = "auto",
        blur_scale: float = 1.0,
        keep_bokeh: float | None = None,
        cmos_tile: int | str = "auto",
        channels_last: bool = True,
    ) -> None:
        self.model = model
        self.device = resolve_device(device)
        desc = model.descriptor
        self.scale = int(desc.scale)
        self.num_classes = int(desc.num_classes)
        self.sigma_max = float(model.card.sigma_max)
        self.halo = int(desc.halo_lr)
        self.cmos_halo = int(desc.cmos_halo_lr)
        self.cmos_align, self.sr_align = alignments(model)
        if overlap < 0:
            raise UsageError(f"overlap must be >= 0, got {overlap}")
        if not (blur_scale >= 0 and math.isfinite(blur_scale)):
            raise UsageError(f"blur scale must be a finite number >= 0, got {blur_scale}")
        if keep_bokeh is not None and not (0 < keep_bokeh <= self.sigma_max):
            limit = f"(0, {self.sigma_max:g}]"
            raise UsageError(f"keep-bokeh sigma must be in {limit} (the model's range), got {keep_bokeh}")
        self.overlap = int(overlap)
        self.blur_scale = float(blur_scale)
        self.keep_bokeh = None if keep_bokeh is None else float(keep_bokeh)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.stats = EngineStats()

        # Both networks run as eval-mode copies with their BatchNorms folded into the convolutions (same
        # output, one pass less per layer; RRDB-SFT has them in its prior GIA), under torch.inference_mode.
        self.cmos = fold_batchnorm(model.cmos.eval()).to(self.device, memory_format=self.memory_format)
        self.sr = fold_batchnorm(model.sr.eval()).to(self.device, memory_format=self.memory_format)

        self.precision = self._choose_precision(precision, desc)
        self.tile = self._choose_tile(tile, "tile", self.halo, self.sr_align, self._sr_memory_model)
        self.cmos_tile: int | None = None  # None: planned per photo (_cmos_tiling)
        if cmos_tile == "auto":
            self._cmos_memory()  # probe (or read the cache) now, not inside the first photo
        else:
            self.cmos_tile = max(self._choose_tile(cmos_tile, "cmos_tile", 0, self.cmos_align, None), self.tile)
        self.tile_batch = self._choose_batch(tile_batch)
        if self.overlap * 2 > self.tile:
            raise UsageError(f"overlap ({self.overlap}) must be at most half the tile size ({self.tile})")

    # ----------------------------------------------------------------- policy

    def _choose_precision(self, precision, desc) -> torch.dtype:
        requested = parse_precision(precision)
        if requested is not None:
            check_precision_supported(requested, self.device)
            return requested
        candidates = candidate_precisions(self.device, bool(desc.bf16_safe), bool(desc.fp16_safe))
        side = 48 if self.device.type == "cpu" else 256  # a GPU needs a larger tile to time more than launches
        chosen, measured = choose_precision(
            self.device,
            self._model_id(),
            lambda dtype: self._probe_sr(dtype, side),
            candidates,
            sync=device_sync(self.device),
        )
        self.stats.precision_probe = measured
        return chosen

    def _model_id(self) -> str:
        """Identifies the model for the on-disk precision cache: both specs, classes, weights, memory format."""
        weights = getattr(self.model, "sha256", "") or getattr(self.model, "source", "")
        return (
            f"{self.model.card.name} {weights} {self.cmos.spec!r} {self.sr.spec!r} {self.num_classes} "
            f"{self.memory_format}"
        )

    def _probe_inputs(self, side_rows: int, side_cols: int) -> tuple[Tensor, Tensor, Tensor]:
        g = torch.Generator().manual_seed(1234)
        lr = torch.rand(1, 3, side_rows, side_cols, generator=g)
        lr = F.avg_pool2d(F.pad(lr, (1, 1, 1, 1), mode="replicate"), 3, 1)  # photo-like, not pure noise
        blur = torch.full((1, 1, side_rows, side_cols), self.sigma_max / 3)
        semantic = torch.full((1, self.num_classes, side_rows, side_cols), 1.0 / self.num_classes)
        return lr, blur, semantic

    def _probe_sr(self, dtype: torch.dtype, side: int = 48) -> Tensor:
        lr, blur, semantic = self._probe_inputs(
            padded_size(side, self.sr_align[0]), padded_size(side, self.sr_align[1])
        )
        return self._run_sr(lr, blur, semantic, dtype)

    def _sr_memory_model(self) -> MemoryModel:
        # 128 and 256 px: with 64 and 128 px (10-30 MB probes) the fitted bytes per pixel of the lite SR
        # network ranged over 1.3-3.7 KB, and a 2048-px tile sized by 1.3 KB peaked 2x over the budget
        side = SR_PROBE_SIDE
        rows, cols = padded_size(side, self.sr_align[0]), padded_size(side, self.sr_align[1])

        def probe(r: int, c: int) -> Tensor:
            return self._run_sr(*self._probe_inputs(r, c), self.precision)

        return self._memory_model("sr", probe, (rows, cols))

    def _cmos_memory(self) -> MemoryModel:
        rows, cols = self.cmos_align

        def probe(r: int, c: int) -> Tensor:
            return self._run_cmos(self._probe_inputs(r, c)[0], self.precision)

        return self._memory_model("cmos", probe, (rows, cols))

    def _memory_model(self, stage: str, probe: Callable[[int, int], Tensor], size: tuple[int, int]) -> MemoryModel:
        """A stage's memory model: from this process, else from the on-disk probe cache, else probed and stored.

        Probing runs ``probe(rows, cols)`` at ``size`` and twice ``size`` (:func:`fit_memory_model`).
        """
        from cmosx.engine import probe_cache

        # MEMORY_PROBE_VERSION in the key: models fitted by an older probe (too low) are not reused
        what = f"{self._model_id()} memory v{MEMORY_PROBE_VERSION} {stage} {self.precision}"
        key, machine, model = probe_cache.cache_key(self.device, what)
        if key not in _memory_models:
            cached = _memory_model_from(probe_cache.load_entry(key))
            if cached is None:
                cached = fit_memory_model(probe, (size, (2 * size[0], 2 * size[1])), self.device)
                entry = {"kind": "memory", "fixed": cached.fixed, "per_pixel": cached.per_pixel}
                probe_cache.store_entry(key, {**entry, "machine": machine, "model": model})
            _memory_models[key] = cached
        return _memory_models[key]

    def _cmos_tiling(self, rows: int, cols: int, limit: tuple[int, int]) -> int | tuple[int, int]:
        """The CMOS core tile for a padded ``rows x cols`` photo: the given one, or planned within the budget."""
        if self.cmos_tile is not None:
            return self.cmos_tile
        memory, budget = self._cmos_memory(), budget_bytes(self.device)
        return plan_fitting_tiles(
            rows, cols, self.overlap, self.cmos_halo, self.cmos_align, lambda r, c: memory.peak(r * c) <= budget, limit
        )

    def _choose_tile(self, tile, name: str, halo: int, align: tuple[int, int], memory: Callable | None) -> int:
        if isinstance(tile, str):
            if tile != "auto" or memory is None:
                raise UsageError(f"{name} must be a positive number of pixels or 'auto', got {tile!r}")
            cap = CPU_MAX_TILE if self.device.type == "cpu" else GPU_MAX_TILE
            fitted = memory().tile_for(budget_bytes(self.device), 1, halo, max(align), lo=64, hi=cap)
            return int(fitted)
        tile = int(tile)
        if tile < 8:
            raise UsageError(f"{name} must be at least 8 LR pixels, got {tile}")
        return tile

    def _choose_batch(self, tile_batch) -> int:
        if isinstance(tile_batch, str):
            if tile_batch != "auto":
                raise UsageError(f"tile batch must be a positive number or 'auto', got {tile_batch!r}")
            if self.device.type == "cpu":
                return 1  # the CPU gains nothing from batching tiles; it only adds memory
            model = self._sr_memory_model()
            side_pixels = (self.tile + 2 * self.halo + max(self.sr_align)) ** 2
            fits = (budget_bytes(self.device) - model.fixed) / max(model.per_pixel * side_pixels, 1.0)
            return int(min(max(fits, 1), MAX_TILE_BATCH))
        if int(tile_batch) < 1:
            raise UsageError(f"tile batch must be at least 1, got {tile_batch}")
        return int(tile_batch)

    # --------------------------------------------------------------- networks

    def _to_device(self, x: Tensor) -> Tensor:
        return x.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)

    def _run_cmos(self, lr: Tensor, dtype: torch.dtype, pooled: list[PoolAnswer] | None = None) -> Tensor:
        """``B x 3 x h x w`` -> ``B x (1 + C) x h x w`` float32 (blur sigma, logits) on the device.
        ``pooled``: whole-photo answers to the global pool requests (:meth:`_global_means`)."""
        with torch.inference_mode(), autocast_context(self.device, dtype):
            out = self.cmos(self._to_device(lr), **_pooled_kwargs(pooled))
            return torch.cat([out.blur_lr, out.logits_lr], dim=1).float()

    def _run_sr(
        self, lr: Tensor, blur: Tensor, semantic: Tensor, dtype: torch.dtype, pooled: list[PoolAnswer] | None = None
    ) -> Tensor:
        """LR tiles and their maps -> ``B x 3 x sh x sw`` float32 on the device (not clamped)."""
        with torch.inference_mode(), autocast_context(self.device, dtype):
            inputs = (self._to_device(lr), self._to_device(blur), self._to_device(semantic))
            out = self.sr(*inputs, **_pooled_kwargs(pooled))
            return out.float()

    def _global_means(
        self, net, start: StartSteps, inputs: list[Tensor], tile, halo: int, align: tuple[int, int]
    ) -> list[PoolAnswer] | None:
        """The whole photo's answers to ``net``'s global pool requests when it runs in several tiles (the
        same plan as the tiled pass; ``tile`` one size or rows, cols), else None (window pooling, or one tile:
        its own means are exact)."""
        requests = count_pool_requests(net)
        grid = plan_grid(inputs[0].shape[-2], inputs[0].shape[-1], tile, self.overlap, halo, align)
        if not needs_global_pass(requests, grid):
            return None
        with torch.inference_mode(), autocast_context(self.device, self.precision):
            return global_pool_means(start, inputs, grid, requests)

    def _with_fp32_fallback(self, out: Tensor, rerun: Callable[[Tensor, torch.dtype], Tensor]) -> Tensor:
        """Redo in float32 the tiles of a reduced-precision batch whose output holds NaN or Inf.

        ``rerun(indices, dtype)`` recomputes the batch entries ``indices``.
        """
        if self.precision == torch.float32:
            return out
        bad = ~torch.isfinite(out).flatten(1).all(dim=1)
        if not bool(bad.any()):
            return out
        indices = bad.nonzero().flatten()
        self.stats.redone_fp32 += int(indices.numel())
        redone = rerun(indices.cpu(), torch.float32)
        with torch.inference_mode():
            out = out.clone()
            out[indices] = redone
        return out

    # ----------------------------------------------------------------- stages

    def _pad(self, x: Tensor, rows: int, cols: int) -> Tensor:
        return pad_bottom_right(x[None], rows - x.shape[-2], cols - x.shape[-1], mode="replicate")[0]

    def _prepare(self, image: Tensor, rows: int, cols: int) -> Tensor:
        """The photo padded to ``rows x cols`` and clamped to [0, 1]: one new CPU copy, input untouched."""
        padded = self._pad(image.detach().to("cpu", torch.float32), rows, cols)
        if padded.untyped_storage().data_ptr() == image.untyped_storage().data_ptr():
            return padded.clamp(0, 1)
        return padded.clamp_(0, 1)

    def _check_image(self, image: Tensor) -> None:
        if not isinstance(image, Tensor) or image.dim() != 3 or image.shape[0] != 3:
            shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
            raise InputImageError(f"expected an RGB image tensor of shape 3 x H x W, got {shape}")
        if image.shape[1] < 1 or image.shape[2] < 1:
            raise InputImageError(f"empty image ({image.shape[1]} x {image.shape[2]})")
        if not image.is_floating_point():
            raise InputImageError(f"expected a float image in [0, 1], got dtype {image.dtype}")

    def _estimate(self, padded: Tensor, tile, sr_size: tuple[int, int], progress) -> Tensor:
        """CMOS over the padded photo -> ``(1 + C) x sr_rows x sr_cols`` (raw blur sigma, logits) on the CPU.

        ``tile``: the CMOS core tile (one size or rows, cols; :meth:`_cmos_tiling`).
        """

        pooled = self._global_means(
            self.cmos, lambda xs: self.cmos.steps(self._to_device(xs[0])), [padded],
            tile, self.cmos_halo, self.cmos_align,
        )  # fmt: skip

        extra = () if pooled is None else (pooled,)

        def compute(windows: list[Window]) -> list[Tensor]:
            lr = torch.stack([window_input(padded, w) for w in windows])
            out = self._run_cmos(lr, self.precision, *extra)
            out = self._with_fp32_fallback(out, lambda idx, d: self._run_cmos(lr[idx], d, *extra))
            return [crop_core(o, w, 1).cpu() for o, w in zip(out, windows, strict=True)]

        runner = TiledRunner(compute, 1 + self.num_classes, 1, self.device, min_tile=max(self.cmos_align))
        out = runner.run(
            padded.shape[-2],
            padded.shape[-1],
            tile,
            self.overlap,
            self.cmos_halo,
            self.cmos_align,
            batch=1,
            progress=progress,
            limit=sr_size,
        )
        self.stats.cmos_tiles = runner.tiles_run
        return out

    def _maps_from_estimate(self, raw: Tensor, blur_override: Tensor | None, size: tuple[int, int]) -> Tensor:
        """Turn the raw estimate into the conditions, in place: blur scaled/replaced and clamped, softmax."""
        self._apply_override(raw, blur_override, size)
        for y0 in range(0, raw.shape[1], 256):  # by strips: no second C x H x W buffer
            strip = raw[:, y0 : y0 + 256]
            strip[0:1], strip[1:] = conditions(strip[0:1], strip[1:], self.sigma_max, self.blur_scale)
        return raw

    def _apply_override(self, raw: Tensor, blur_override: Tensor | None, size: tuple[int, int]) -> None:
        if blur_override is not None:
            raw[0:1] = self._pad(self._override_lr(blur_override, size), raw.shape[-2], raw.shape[-1])

    def _override_lr(self, blur: Tensor, size: tuple[int, int]) -> Tensor:
        """A user blur map (``1 x H x W`` at LR or ``1 x sH x sW`` at HR, sigma in HR px) -> ``1 x H x W``."""
        h, w = size
        if blur.dim() == 2:
            blur = blur[None]
        blur = blur.float()
        if tuple(blur.shape) == (1, h * self.scale, w * self.scale):
            blur = grid_downsample(blur[None], self.scale)[0]  # on the grid: LR pixel i = HR pixel s*i
        if tuple(blur.shape) != (1, h, w):
            raise UsageError(
                f"blur map has size {tuple(blur.shape[-2:])}; expected {h} x {w} (LR) "
                f"or {h * self.scale} x {w * self.scale} (HR)"
            )
        if not bool(torch.isfinite(blur).all()):
            raise UsageError("blur map holds NaN or infinite values")
        if float(blur.min()) < 0:
            raise UsageError(f"blur map holds negative sigma ({float(blur.min()):g}); sigma is >= 0")
        return blur

    def _sizes(self, image: Tensor) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
        h, w = image.shape[-2:]
        align = lcm_pair(self.cmos_align, self.sr_align)
        padded = (padded_size(h, align[0]), padded_size(w, align[1]))
        sr_size = (padded_size(h, self.sr_align[0]), padded_size(w, self.sr_align[1]))
        return (h, w), padded, sr_size

    def _count(self, rows: int, cols: int, tile, halo: int, align, limit) -> int:
        return TiledRunner.count_tiles(rows, cols, tile, self.overlap, halo, align, limit)

    def _frame(self, x: Tensor) -> Tensor:
        """``C x H x W`` -> ``C x (H + 2 mr) x (W + 2 mc)``, replicated border of one alignment cell."""
        mr, mc = self.sr_align
        return F.pad(x.detach().to("cpu", torch.float32)[None], (mc, mc, mr, mr), mode="replicate")[0]

    def _unframe(self, x: Tensor, scale: int = 1) -> Tensor:
        """Cut the frame of :meth:`_frame` off a result at ``scale`` x LR resolution."""
        mr, mc = self.sr_align[0] * scale, self.sr_align[1] * scale
        return x[:, mr : x.shape[-2] - mr, mc : x.shape[-1] - mc]

    def estimate_maps(self, image: Tensor, progress: Progress | None = None) -> MapsResult:
        """CMOS maps only: ``3 x H x W`` in [0, 1] -> :class:`MapsResult` (blur scaled by ``blur_scale``)."""
        self._check_image(image)
        framed = self._estimate_maps_framed(self._frame(image), progress)
        return MapsResult(blur_lr=self._unframe(framed.blur_lr), semantic_lr=self._unframe(framed.semantic_lr))

    def _estimate_maps_framed(self, image: Tensor, progress: Progress | None) -> MapsResult:
        size, padded_rows_cols, sr_size = self._sizes(image)
        padded = self._prepare(image, *padded_rows_cols)
        raw = self._estimate(padded, self._cmos_tiling(*padded_rows_cols, sr_size), sr_size, progress)
        maps = self._maps_from_estimate(raw, None, size)
        h, w = size
        return MapsResult(blur_lr=maps[0:1, :h, :w], semantic_lr=maps[1:, :h, :w])

    def upscale(
        self, image: Tensor, progress: Progress | None = None, blur_override: Tensor | None = None
    ) -> UpscaleResult:
        """Upscale one photo: ``3 x H x W`` float in [0, 1] (CPU) -> :class:`UpscaleResult` (CPU).

        ``progress(done, total)`` is called with tiles done over both stages (monotonic, ends at total).
        ``blur_override``: a blur sigma map (HR px) at LR (``1 x H x W``) or HR size used instead of the
        estimate (the semantics are still estimated).
        """
        self._check_image(image)
        if blur_override is not None:
            blur_override = self._frame(self._override_lr(blur_override, tuple(image.shape[-2:])))
        framed = self._upscale_framed(self._frame(image), progress, blur_override)
        return UpscaleResult(
            image=self._unframe(framed.image, self.scale),
            blur_lr=self._unframe(framed.blur_lr),
            semantic_lr=self._unframe(framed.semantic_lr),
            bokeh_lr=None if framed.bokeh_lr is None else self._unframe(framed.bokeh_lr),
        )

    def _upscale_framed(self, image: Tensor, progress: Progress | None, blur_override: Tensor | None) -> UpscaleResult:
        size, padded_size_rc, sr_size = self._sizes(image)
        padded = self._prepare(image, *padded_size_rc)
        cmos_tile = self._cmos_tiling(*padded_size_rc, sr_size)
        n_cmos = self._count(*padded_size_rc, cmos_tile, self.cmos_halo, self.cmos_align, sr_size)
        n_sr = self._count(*sr_size, self.tile, self.halo, self.sr_align, size)
        total = n_cmos + n_sr
        report = _StagedProgress(progress, total)

        raw = self._estimate(padded, cmos_tile, sr_size, report.stage(0))
        self._apply_override(raw, blur_override, size)
        h, w = size
        bokeh = None if self.keep_bokeh is None else bokeh_weight(raw[0:1, :h, :w], self.keep_bokeh)
        maps = self._maps_from_estimate(raw, None, size)
        blur, semantic = maps[0:1], maps[1:]
        lr = padded[:, : sr_size[0], : sr_size[1]]

        pooled = self._global_means(
            self.sr, lambda xs: self.sr.steps(*(self._to_device(x) for x in xs)), [lr, blur, semantic],
            self.tile, self.halo, self.sr_align,
        )  # fmt: skip

        extra = () if pooled is None else (pooled,)

        def compute(windows: list[Window]) -> list[Tensor]:
            crops = [torch.stack([window_input(t, w) for w in windows]) for t in (lr, blur, semantic)]
            out = self._run_sr(*crops, self.precision, *extra)
            out = self._with_fp32_fallback(out, lambda idx, d: self._run_sr(*(c[idx] for c in crops), d, *extra))
            return [crop_core(o, w, self.scale).cpu() for o, w in zip(out, windows, strict=True)]

        runner = TiledRunner(compute, 3, self.scale, self.device, min_tile=MIN_TILE)
        out = runner.run(
            sr_size[0],
            sr_size[1],
            self.tile,
            self.overlap,
            self.halo,
            self.sr_align,
            batch=self.tile_batch,
            progress=report.stage(n_cmos),
            limit=size,
        )
        self.stats.sr_tiles = runner.tiles_run
        out.clamp_(0.0, 1.0)
        if bokeh is not None:
            blend_towards_interpolation(out, padded[:, :h, :w], bokeh, self.scale)
        return UpscaleResult(image=out, blur_lr=blur[:, :h, :w], semantic_lr=semantic[:, :h, :w], bokeh_lr=bokeh)


_memory_models: dict[str, MemoryModel] = {}  # this process's memory models, by probe_cache key


def _pooled_kwargs(pooled: list[PoolAnswer] | None) -> dict:
    """``pooled=`` for a network forward only when there are means to give (wrappers need not take it)."""
    return {} if pooled is None else {"pooled": pooled}


def _memory_model_from(entry: dict | None) -> MemoryModel | None:
    """A cached memory entry -> :class:`MemoryModel`; None when missing or malformed."""
    if not isinstance(entry, dict) or entry.get("kind") != "memory":
        return None
    values = entry.get("fixed"), entry.get("per_pixel")
    if not all(isinstance(v, (int, float)) and math.isfinite(v) and v >= 0 for v in values) or values[1] <= 0:
        return None
    return MemoryModel(fixed=float(values[0]), per_pixel=float(values[1]))


class _StagedProgress:
    """Turns per-stage (done, total) reports into one monotonic (done, total) over all stages."""

    def __init__(self, progress: Progress | None, total: int):
        self.progress, self.total, self.last = progress, total, -1

    def stage(self, offset: int) -> Progress | None:
        if self.progress is None:
            return None

        def report(done: int, _stage_total: int) -> None:
            value = offset + done
            if value > self.last:
                self.last = value
                self.progress(value, self.total)

        return report
