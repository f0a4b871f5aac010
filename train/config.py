"""Training configurations: one frozen dataclass per run, built from a preset plus overrides.

Presets (``PRESETS[preset][stage]``):

- ``paper``: the authors' recipe (technical notes section 5) -- Adam betas (0.9, 0.99); estimator lr 1e-4,
  batch 8, whole 480 x 640 HR images, 700 epochs of NYUv2's 795 images with 10 warm-up epochs; sr lr 2e-4,
  batch 16, HR crops 192; blind lr 5e-5, batch 4, whole images. The step counts of stages 2 and 3 are not
  published; we use the estimator's count.
- ``cpu``: the same recipe sized for a 2-core CPU (batch 8 of 192 x 192 crops, fewer steps, one torch thread;
  ``--workers 1`` renders data on a second core); synthetic scenes rendered at 240 x 320 and reused for 4
  steps' crops.

``cmosx train`` without ``--stage`` runs the whole recipe (:mod:`cmosx.train.recipe`): the estimator, the sr
stage twice (upper bound on ground-truth maps, and the blur-unaware baseline) and the blind stage, each with
its stage's preset schedule.

Unknown option names are a :class:`~cmosx.errors.UsageError`, as are values out of range.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from cmosx.catalog import DATASET_NAMES
from cmosx.errors import UsageError

STAGES = ("estimator", "sr", "blind")
GIA_MODES = ("none", "F", "FC", "FCS")
AMP_MODES = ("auto", "off", "bf16", "fp16")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines one training run (serialised to ``RUN/config.json``).

    ``crop`` is the HR crop ``(height, width)``; the LR crop is ``crop / 4``. ``steps`` counts optimizer
    steps; ``batch_size`` is per process (DDP multiplies it by the world size).
    """

    stage: str
    dataset: str = "synthetic-bsr"
    root: str | None = None
    spec: str = "lite"
    preset: str = "cpu"
    # optimisation
    steps: int = 1000
    batch_size: int = 4
    crop: tuple[int, int] = (96, 96)
    lr: float = 2e-4
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.0
    warmup_steps: int = 50
    min_lr_ratio: float = 0.0
    grad_clip: float | None = None
    seed: int = 0
    # precision and layout: "auto" = fp16 AMP on CUDA, fp32 on CPU; "bf16" = bf16 autocast (CPU or GPU)
    amp: str = "auto"
    channels_last: bool = True
    # augmentation
    flip: bool = True
    zoom_ratios: tuple[float, ...] = (1.0, 1.2, 1.5)
    # photo-bsr: the folder of photos (its train split) and the share of procedural scenes mixed in
    photos: str | None = None
    procedural_share: float = 0.25
    # synthetic-bsr / photo-bsr streaming (ignored for on-disk datasets)
    scene_size: tuple[int, int] = (480, 640)  # HR size each synthetic scene is rendered at, before the crop
    crops_per_scene: int = 1  # each rendered scene serves this many steps' crops (rendering is the CPU bottleneck)
    space_invariant_fraction: float = 0.25  # share of space-invariant samples (paper text: a quarter)
    lr_noise: float = 0.0  # Gaussian noise std on the LR, 8-bit levels (robustness to real photos)
    lr_jpeg: int | None = None  # JPEG quality of the LR (None = no JPEG); the lowest one with lr_jpeg_max
    lr_jpeg_max: int | None = None  # quality drawn uniformly from lr_jpeg..lr_jpeg_max per image
    lr_jpeg_probability: float = 1.0  # share of LR images that are JPEG re-encoded
    # bookkeeping
    threads: int | None = None  # torch CPU threads (None = torch's default)
    checkpoint_every: int = 200
    keep_checkpoints: int = 2
    log_every: int = 10
    num_workers: int = 0
    # estimator losses (notes section 5: 1 / 1 on final outputs, 0.5 / 0.5 on auxiliary outputs)
    blur_weight: float = 1.0
    seg_weight: float = 1.0
    aux_blur_weight: float = 0.5
    aux_seg_weight: float = 0.5
    # sr / blind pixel loss: "l1" (the paper) or "l2" (MSE, what PSNR measures)
    pixel_loss: str = "l1"
    # ablations (paper Table 5 and section 4.4), all through the same code path
    gia_mode: str | None = None  # None = the spec's own mode
    single_task: bool = False  # estimator: blur loss only (no semantic supervision)
    no_aux: bool = False  # estimator: no deep supervision of the auxiliary outputs
    semantics_in_sr: bool = True  # sr/blind: False feeds an all-zero semantic map
    space_invariant_only: bool = False  # train only on space-invariant samples
    unconditioned: bool = False  # sr/blind: blur-unaware baseline (prior inputs zeroed)
    # blind stage inputs
    estimator: str | None = None  # estimator run dir or model reference
    init: str | None = None  # run or model whose network starts this stage (estimator: CMOS; sr, blind: SR)
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes copied into the run record

    def __post_init__(self) -> None:
        _check(self.stage in STAGES, f"unknown stage {self.stage!r}; choose from {', '.join(STAGES)}")
        _check(
            self.dataset in DATASET_NAMES, f"unknown dataset {self.dataset!r}; choose from {', '.join(DATASET_NAMES)}"
        )
        _check(self.steps >= 1, f"steps must be >= 1, got {self.steps}")
        _check(self.batch_size >= 1, f"batch size must be >= 1, got {self.batch_size}")
        _check(len(self.crop) == 2, f"crop must be (height, width), got {self.crop!r}")
        _check(
            all(c >= 16 and c % 4 == 0 for c in self.crop),
            f"crop sides must be multiples of 4 and >= 16, got {self.crop}",
        )
        _check(self.lr > 0, f"lr must be > 0, got {self.lr}")
        _check(self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}")
        _check(0.0 <= self.min_lr_ratio <= 1.0, f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        _check(self.amp in AMP_MODES, f"unknown amp mode {self.amp!r}; choose from {', '.join(AMP_MODES)}")
        _check(self.checkpoint_every >= 1, "checkpoint_every must be >= 1")
        _check(self.keep_checkpoints >= 1, "keep_checkpoints must be >= 1")
        _check(self.log_every >= 1, "log_every must be >= 1")
        _check(len(self.scene_size) == 2 and all(c % 4 == 0 for c in self.scene_size), "scene size: multiples of 4")
        _check(
            self.scene_size[0] >= self.crop[0] and self.scene_size[1] >= self.crop[1],
            f"the crop {self.crop} does not fit in the synthetic scene size {self.scene_size}",
        )
        _check(self.crops_per_scene >= 1, "crops_per_scene must be >= 1")
        _check(0.0 <= self.procedural_share <= 1.0, "procedural_share must be in [0, 1]")
        _check(
            self.dataset != "photo-bsr" or self.photos is not None or self.root is not None,
            "photo-bsr needs --photos DIR (a folder of your own photos) or --root (a generated photo-bsr set)",
        )
        _check(0.0 <= self.space_invariant_fraction <= 1.0, "space_invariant_fraction must be in [0, 1]")
        self.degradation()  # the LR noise / JPEG settings are checked where they are defined
        _check(self.threads is None or self.threads >= 1, "threads must be >= 1")
        weights = (self.blur_weight, self.seg_weight, self.aux_blur_weight, self.aux_seg_weight)
        _check(all(w >= 0 for w in weights), f"loss weights must be >= 0, got {weights}")
        _check(self.pixel_loss in ("l1", "l2"), f"pixel loss must be l1 or l2, got {self.pixel_loss!r}")
        _check(len(self.zoom_ratios) >= 1 and all(r >= 1.0 for r in self.zoom_ratios), "zoom ratios must be >= 1")
        _check(
            self.gia_mode is None or self.gia_mode in GIA_MODES,
            f"unknown GIA mode {self.gia_mode!r}; choose from {', '.join(GIA_MODES)}",
        )
        if self.stage != "blind":
            _check(self.estimator is None, "--estimator is only used by the blind stage")
        if self.stage != "estimator":
            _check(not (self.single_task or self.no_aux), "--single-task and --no-aux apply to the estimator stage")
        if self.stage == "estimator":
            _check(
                self.semantics_in_sr and not self.unconditioned,
                "--no-semantics-in-sr and --unconditioned apply to the sr and blind stages",
            )
            _check(
                any(self.estimator_loss_weights().values()),
                f"the estimator's loss weights are all zero (blur, seg, aux blur, aux seg = {weights}"
                f"{', with --single-task' if self.single_task else ''}{', with --no-aux' if self.no_aux else ''}):"
                " nothing would be trained",
            )

    def estimator_loss_weights(self) -> dict[str, float]:
        """The weights of the estimator's loss terms (blur, seg, aux_blur, aux_seg) after the ablations.

        ``single_task`` drops both semantic terms, ``no_aux`` both auxiliary ones.
        """
        return {
            "blur": self.blur_weight,
            "seg": 0.0 if self.single_task else self.seg_weight,
            "aux_blur": 0.0 if self.no_aux else self.aux_blur_weight,
            "aux_seg": 0.0 if (self.no_aux or self.single_task) else self.aux_seg_weight,
        }

    def degradation(self):
        """The synthetic-bsr LR degradation these settings describe (a ``Degradation``; UsageError if invalid)."""
        from cmosx.train.data.degrade import Degradation

        return Degradation(
            noise_sigma=self.lr_noise,
            jpeg_quality=self.lr_jpeg,
            jpeg_quality_max=self.lr_jpeg_max,
            jpeg_probability=self.lr_jpeg_probability,
        )

    # -- serialisation -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        return make_config(**data)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise UsageError(message)


# NYUv2-BSR: 795 training images; 700 epochs of batch 8 with 10 warm-up epochs (paper section 4.1).
_PAPER_STEPS = 700 * 795 // 8
_PAPER_WARMUP = 10 * 795 // 8

# CPU: synthetic scenes rendered at 240 x 320 and each reused for 4 steps' crops (rendering costs more
# than a lite training step on these CPUs). Batch 8 of 192 x 192 moved ~4x more pixels per second than
# batch 4 of 96 x 96 here (small convolutions are overhead-bound).
# One torch thread, as the bundled model's CPU rounds (more threads on busy cores measured up to 10x slower);
# `--workers 1` renders the data on a second core.
_CPU_DATA: dict[str, Any] = dict(scene_size=(240, 320), crops_per_scene=4, threads=1)

# What each preset assumes (shown by ``cmosx train --help`` and in the docs).

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "paper": {
        "estimator": dict(
            lr=1e-4,
            batch_size=8,
            crop=(480, 640),
            steps=_PAPER_STEPS,
            warmup_steps=_PAPER_WARMUP,
            checkpoint_every=2000,
        ),
        "sr": dict(
            lr=2e-4,
            batch_size=16,
            crop=(192, 192),
            steps=_PAPER_STEPS,
            warmup_steps=_PAPER_WARMUP,
            checkpoint_every=2000,
        ),
        "blind": dict(
            lr=5e-5,
            batch_size=4,
            crop=(480, 640),
            steps=_PAPER_STEPS,
            warmup_steps=_PAPER_WARMUP,
            checkpoint_every=2000,
        ),
    },
    "cpu": {
        "estimator": dict(
            lr=2e-4, batch_size=8, crop=(192, 192), steps=2000, warmup_steps=60, checkpoint_every=100, **_CPU_DATA
        ),
        "sr": dict(
            lr=2e-4, batch_size=8, crop=(192, 192), steps=2000, warmup_steps=60, checkpoint_every=100, **_CPU_DATA
        ),
        "blind": dict(
            lr=5e-5, batch_size=8, crop=(192, 192), steps=600, warmup_steps=20, checkpoint_every=100, **_CPU_DATA
        ),
    },
}

_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}
RESUME_MAY_CHANGE = ("steps", "extra", "num_workers")  # what --resume may change (--steps extends a run)


def resume_differences(config: TrainConfig, saved: TrainConfig) -> list[str]:
    """The settings of ``config`` that differ from the run it would resume (other than RESUME_MAY_CHANGE)."""
    mine, theirs = config.to_dict(), saved.to_dict()
    return sorted(k for k in mine if k not in RESUME_MAY_CHANGE and mine[k] != theirs.get(k))


def make_config(stage: str, preset: str = "cpu", **overrides: Any) -> TrainConfig:
    """Build a config: the preset's values for ``stage``, then ``overrides`` (``None`` values are ignored).

    Raises UsageError for an unknown preset, stage or option name.
    """
    if preset not in PRESETS:
        raise UsageError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    if stage not in STAGES:
        raise UsageError(f"unknown stage {stage!r}; choose from {', '.join(STAGES)}")
    unknown = sorted(set(overrides) - _FIELDS)
    if unknown:
        raise UsageError(f"unknown training option(s): {', '.join(unknown)}")
    values: dict[str, Any] = dict(PRESETS[preset][stage])
    if overrides.get("steps") is not None and overrides.get("warmup_steps") is None:
        # keep the preset's warm-up share when only the step count changes
        values["warmup_steps"] = round(values["warmup_steps"] * overrides["steps"] / values["steps"])
    values.update({k: v for k, v in overrides.items() if v is not None and k != "stage"})
    for key in ("crop", "betas", "zoom_ratios", "scene_size"):
        if key in values and isinstance(values[key], list):
            values[key] = tuple(values[key])
    if isinstance(values.get("crop"), int):
        values["crop"] = (values["crop"], values["crop"])
    return TrainConfig(stage=stage, preset=preset, **values)


def parse_quality_range(text: str) -> tuple[int, int | None]:
    """``"90"`` -> (90, None); ``"75-95"`` -> (75, 95) (JPEG qualities)."""
    try:
        parts = [int(p) for p in text.split("-")]
    except ValueError:
        raise UsageError(f"--lr-jpeg must be Q or QMIN-QMAX, got {text!r}") from None
    if len(parts) == 1:
        return (parts[0], None)
    if len(parts) == 2:
        return (parts[0], parts[1])
    raise UsageError(f"--lr-jpeg must be Q or QMIN-QMAX, got {text!r}")
