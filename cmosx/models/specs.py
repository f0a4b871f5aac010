"""Network sizes as data: frozen dataclass specs for CMOS and RRDB-SFT, and the named presets.

``paper`` reproduces the authors' sizes (CMOS about 15.98 M parameters with 40 classes, RRDB-SFT
nf 64 / nb 10 / gc 32 about 8.96 M); ``lite`` is sized for CPU inference and training (about 1.5 M
multiply-accumulates per LR pixel for both networks together); ``tiny`` is for fast tests.

Specs round-trip through plain dicts (:func:`spec_to_dict` / :func:`spec_from_dict`) for config.json.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from cmosx.errors import ModelError, UsageError

GiaMode = Literal["none", "F", "FC", "FCS"]
"""Paper Table 5 ablations: no GIA (concat + conv), flow only, flow + channel, flow + channel + spatial."""

ChannelPool = Literal["global", "window"]
"""Pooling of GIA's channel stream: the paper's global average, or an average per 15 x 20 window.

``window`` keeps every output pixel a function of a bounded neighbourhood, so tiled inference equals
untiled inference; on a 120 x 160 training crop the coarsest CMOS scale holds exactly one window, where
both poolings agree.
"""

GIA_MODES: tuple[str, ...] = ("none", "F", "FC", "FCS")


@dataclass(frozen=True)
class GIASpec:
    """Switches shared by every GIA of a network."""

    mode: GiaMode = "FCS"
    window: tuple[int, int] = (15, 20)  # spatial-stream window, rows x columns
    channel_pool: ChannelPool = "global"


@dataclass(frozen=True)
class CMOSSpec:
    """CMOS estimator: HRNet-W18-small-v2 style backbone, ITP heads, GIA decoder, final heads."""

    stem_channels: int = 64  # both stem convs (stride 1)
    stage1_planes: int = 64  # bottleneck planes; stage 1 outputs 4 * planes channels
    stage1_blocks: int = 2
    widths: tuple[int, int, int, int] = (18, 36, 72, 144)  # branches at 1, 1/2, 1/4, 1/8 of the LR input
    modules: tuple[int, int, int] = (1, 3, 2)  # HRNet modules in stages 2, 3, 4
    branch_blocks: int = 2  # basic blocks per branch in every module
    itp_blocks: int = 2  # residual basic blocks per initial-task-prediction head
    groups: tuple[int, int, int, int] = (3, 6, 8, 12)  # channel-stream groups r per scale
    head_channels: int = 0  # hidden width of the final 1x1 heads; 0 = sum(widths) as in the paper
    gia: GIASpec = field(default_factory=GIASpec)

    def __post_init__(self) -> None:
        for width, r in zip(self.widths, self.groups, strict=True):
            if width % r:
                raise ModelError(f"CMOS spec: width {width} is not divisible by its group count {r}")


@dataclass(frozen=True)
class SRSpec:
    """RRDB-SFT super-resolution network conditioned on a blur map and a semantic map."""

    nf: int = 64  # trunk channels
    nb: int = 10  # RRDB_SFT blocks
    gc: int = 32  # growth channels of the dense blocks
    sft_hidden: int = 32  # hidden channels of the SFT scale/shift branches
    groups: int = 8  # channel-stream groups r of the prior GIA
    blur_scale: float = 0.2  # the blur sigma (HR px) is multiplied by this before the embedding
    semantic_input: Literal["probabilities", "indices"] = "probabilities"
    # "none": the network draws the whole image (the paper); "bilinear": it adds a correction to an
    # upsampling of the LR aligned with the training LR's sampling grid, which trains much faster
    residual: Literal["none", "bilinear"] = "none"
    gia: GIASpec = field(default_factory=GIASpec)

    def __post_init__(self) -> None:
        if self.residual not in ("none", "bilinear"):
            raise ModelError(f"SR spec: residual must be 'none' or 'bilinear', got {self.residual!r}")
        if self.nf % self.groups:
            raise ModelError(f"SR spec: nf {self.nf} is not divisible by its group count {self.groups}")


@dataclass(frozen=True)
class ModelSpec:
    """A named pair of networks and the scale factor (always 4 in this project)."""

    name: str
    cmos: CMOSSpec
    sr: SRSpec
    scale: int = 4


_WINDOW_POOL = GIASpec(mode="FCS", window=(15, 20), channel_pool="window")

SPECS: dict[str, ModelSpec] = {
    "paper": ModelSpec(name="paper", cmos=CMOSSpec(), sr=SRSpec()),
    "lite": ModelSpec(
        name="lite",
        cmos=CMOSSpec(
            stem_channels=16,
            stage1_planes=8,
            stage1_blocks=1,
            widths=(12, 24, 48, 96),
            modules=(1, 1, 1),
            branch_blocks=2,
            itp_blocks=1,
            groups=(3, 6, 8, 12),
            head_channels=48,
            gia=_WINDOW_POOL,
        ),
        sr=SRSpec(nf=32, nb=4, gc=16, sft_hidden=16, groups=8, residual="bilinear", gia=_WINDOW_POOL),
    ),
    "tiny": ModelSpec(
        name="tiny",
        cmos=CMOSSpec(
            stem_channels=8,
            stage1_planes=4,
            stage1_blocks=1,
            widths=(4, 8, 8, 16),
            modules=(1, 1, 1),
            branch_blocks=1,
            itp_blocks=1,
            groups=(2, 2, 2, 4),
            head_channels=8,
            gia=_WINDOW_POOL,
        ),
        sr=SRSpec(nf=8, nb=1, gc=4, sft_hidden=4, groups=2, gia=_WINDOW_POOL),
    ),
}


def get_spec(name: str) -> ModelSpec:
    """The preset called ``name``; :class:`UsageError` listing the known names otherwise."""
    try:
        return SPECS[name]
    except KeyError:
        raise UsageError(f"unknown model spec {name!r}; known: {', '.join(sorted(SPECS))}") from None


def spec_to_dict(spec: ModelSpec) -> dict[str, Any]:
    """A JSON-ready nested dict (tuples become lists)."""
    return dataclasses.asdict(spec)


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ModelError(f"model config: {where} must be an object, got {type(data).__name__}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ModelError(f"model config: unknown field(s) in {where}: {', '.join(unknown)}")
    kwargs = {}
    for name, value in data.items():
        if name == "gia":
            value = _build(GIASpec, value, f"{where}.gia")
        elif name in ("cmos", "sr"):
            value = _build(CMOSSpec if name == "cmos" else SRSpec, value, name)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except TypeError as error:
        raise ModelError(f"model config: bad {where}: {error}") from None


def spec_from_dict(data: dict[str, Any]) -> ModelSpec:
    """Rebuild a :class:`ModelSpec` from :func:`spec_to_dict` output; :class:`ModelError` if malformed."""
    spec = _build(ModelSpec, data, "spec")
    if spec.cmos.gia.mode not in GIA_MODES or spec.sr.gia.mode not in GIA_MODES:
        raise ModelError(f"model config: GIA mode must be one of {', '.join(GIA_MODES)}")
    return spec
