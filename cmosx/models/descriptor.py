"""What the inference engine needs to know about a model: scale, tiling geometry, precision safety.

Tiling rule (LR pixel coordinates). Both networks pad internally, so any input size works
(``multiple_of == 1``). Their GIA windows are anchored at the top-left corner of the input, so a tile
gives the same result as the whole image when:

- the tile's top-left corner (halo included) sits at a multiple of ``align_lr`` (RRDB-SFT) or
  ``cmos_align_lr`` (CMOS), and
- only output pixels at least ``halo_lr`` / ``cmos_halo_lr`` LR pixels away from a tile edge that is
  not an image edge are kept.

With ``global_pool`` True (a spec whose GIA pools channels over the whole image, e.g. ``paper``) a
tile's result also depends on the whole image's pooled means: the networks take them as ``pooled=``
and the engine computes them tile by tile first (:mod:`cmosx.engine.global_pool`), so tiling stays
exact (``exact_tiling`` says whether tiled inference can equal untiled inference at all; it is True
for every spec here).

How the halos were measured (``cmosx bench networks --halo``): a model whose GIA gates
(alpha, beta) are set to 1, whose flow predictors are random and whose BatchNorm statistics are
random, in eval mode; the gradient of the outputs at the centre pixel with respect to every input
pixel gives the influence radius (largest Chebyshev distance where the gradient exceeds 1e-4 of its
maximum); tiling a 480 x 640 image then checks tiled == untiled (>= 45 dB). Measured radii: RRDB-SFT
lite 7 px, CMOS lite 105 px. Trained networks reach further than random ones, so the halos below add
margin: RRDB-SFT ``max(window) + 2 nb + 4`` (32 for lite) and CMOS one coarsest-scale window
(8 * max(window) = 160).
"""

from __future__ import annotations

from dataclasses import dataclass

from cmosx.models.cmos import BACKBONE_MULTIPLE
from cmosx.models.specs import GIASpec, ModelSpec


@dataclass(frozen=True)
class ModelDescriptor:
    scale: int  # output / input size ratio
    multiple_of: int  # LR input sizes must be multiples of this (1: any size, padding is internal)
    halo_lr: int  # RRDB-SFT receptive-field margin in LR pixels for tiling
    cmos_halo_lr: int  # CMOS receptive-field margin in LR pixels for tiling
    num_classes: int
    bf16_safe: bool  # autocast(bfloat16) stays finite and close (tests: CPU, and CUDA in test_models_gpu.py)
    fp16_safe: bool  # autocast(float16) on CUDA stays finite and close (tests/models/test_models_gpu.py, H100)
    align_lr: tuple[int, int] = (1, 1)  # RRDB-SFT tile corners at multiples of (rows, cols)
    cmos_align_lr: tuple[int, int] = (1, 1)  # CMOS tile corners at multiples of (rows, cols)
    exact_tiling: bool = True  # tiled == untiled with the rule above (and the global pass when global_pool)
    global_pool: bool = False  # some GIA pools channels over the whole image: tiles need its means first


def _window_grid(gia: GIASpec) -> tuple[int, int]:
    """The window grid a GIA's output depends on, or (1, 1) when it uses no windows."""
    uses_windows = "S" in gia.mode or ("C" in gia.mode and gia.channel_pool == "window")
    return gia.window if uses_windows else (1, 1)


def describe(spec: ModelSpec, num_classes: int) -> ModelDescriptor:
    """The descriptor of networks built from ``spec`` with ``num_classes`` semantic classes."""
    sr_window = _window_grid(spec.sr.gia)
    cmos_window = _window_grid(spec.cmos.gia)
    cmos_align = (BACKBONE_MULTIPLE * cmos_window[0], BACKBONE_MULTIPLE * cmos_window[1])
    global_pool = any(gia.channel_pool == "global" and "C" in gia.mode for gia in (spec.cmos.gia, spec.sr.gia))
    return ModelDescriptor(
        scale=spec.scale,
        multiple_of=1,
        halo_lr=max(spec.sr.gia.window) + 2 * spec.sr.nb + 4,
        cmos_halo_lr=BACKBONE_MULTIPLE * max(spec.cmos.gia.window),
        num_classes=num_classes,
        bf16_safe=True,
        fp16_safe=True,
        align_lr=sr_window,
        cmos_align_lr=cmos_align,
        exact_tiling=True,
        global_pool=global_pool,
    )
