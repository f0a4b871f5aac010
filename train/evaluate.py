"""Evaluation through the product, in the shape of the paper's Tables 2-3: per test group and the mean.

Every network row runs the engine's :class:`~cmosx.engine.pipeline.Upscaler` (the framing, tiling and
precision policy of ``cmosx upscale``, on ``device`` at ``precision``), so the figures describe what
users get. Rows:

- ``bicubic``: the LR upscaled x4 by pixel-centre bicubic (``F.interpolate``; 1.5 HR px off the grid
  of direct subsampling, which its registration shows);
- ``aligned cubic``: an interpolating cubic spline with LR pixel ``i`` on HR pixel ``s*i``, the grid
  that direct subsampling keeps (:func:`cmosx.train.spline.grid_cubic_upsample`): the interpolation
  a network has to beat;
- ``baseline`` (optional): e.g. the blur-unaware SR network, run with the maps its conditioning
  switches off fed as zeros (the engine then estimates nothing for it);
- ``model``: CMOS blind SR as ``cmosx upscale`` runs it, plus blur-map PSNR/SSIM and mIoU of the
  estimates it was conditioned on (LR maps placed on the HR grid by
  :func:`cmosx.ops.grid.grid_upsample`);
- ``upper bound``: an SR network (by default the model's ``upper`` companion, trained on ground-truth
  maps) given the ground-truth blur map, taken to the LR grid as training does
  (:func:`cmosx.ops.grid.grid_downsample`), through the engine's ``blur_override``. The engine takes no
  semantic map from outside, so its semantics are the model's CMOS estimate; ``maps`` in the report
  says, per row, which maps each network was fed.

Two cases the engine cannot serve run the run's network directly (untiled, float32, said in ``maps`` and
``engine``): an SR network evaluated without any estimator (an sr-stage run alone, e.g. a recipe's
validation) is fed the ground-truth maps it was trained on, semantics included; an estimator run (no
SR network) gives the model row's blur-map and mIoU figures only.

Per image: SR PSNR/SSIM on BT.601 Y after cropping ``border`` pixels (default: the scale); the
registration of every row's output (:func:`cmosx.train.registration.register`: the sub-pixel shift
``reg_dx, reg_dy`` in HR px that best aligns it with the truth, and ``reg_gain`` the PSNR-Y that shift
gains); blur maps normalised by sigma_max; mIoU accumulated over the group's labelled pixels. Where a
group holds no labels (all 255: Cityscapes' test split, photo scenes) its mIoU is ``None`` (not
available), never a figure from a substitute. Group values are means over images; the mean row
averages the groups (mIoU over the groups that have one).

``by_sigma`` breaks the SR error down by the ground-truth blur of each HR pixel: PSNR-Y over all pixels of
all groups whose sigma lies in a bin (edges at 0, .1, .2, .4, .6, .8 and 1 times sigma_max), with each
bin's share of the pixels. It shows where a method gains and where the blur leaves little to restore.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from cmosx.errors import UsageError
from cmosx.models.model import Model
from cmosx.ops.grid import grid_downsample, grid_upsample
from cmosx.train.eval_engine import engine_model
from cmosx.train.metrics import (
    IGNORE_INDEX,
    ConfusionMatrix,
    blur_psnr_ssim,
    crop_border,
    rgb_to_y,
    sr_psnr_ssim_y,
)
from cmosx.train.registration import register
from cmosx.train.spline import grid_cubic_upsample

METRIC_KEYS = ("psnr_y", "ssim_y", "blur_psnr", "blur_ssim", "miou", "reg_dx", "reg_dy", "reg_gain")
SIGMA_BIN_FRACTIONS = (0.0, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0)
NOT_USED = "not used (fed as zeros)"


@dataclass
class EvalReport:
    """``rows[row_name][group_key][metric]`` with group keys ``str(group)`` and ``"mean"``.

    ``maps[row]``: what the row's network was fed (``{"blur": ..., "semantics": ...}``); ``engine``: the
    device and, per network row, the precision and SR tile the engine chose; ``labelled_per_group``:
    images with at least one label (0: mIoU not available for that group).
    """

    dataset: str
    groups: list[Any]
    border: int
    images_per_group: dict[str, int]
    rows: dict[str, dict[str, dict[str, float | None]]] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    maps: dict[str, dict[str, str]] = field(default_factory=dict)
    engine: dict[str, Any] = field(default_factory=dict)
    labelled_per_group: dict[str, int] = field(default_factory=dict)
    by_sigma: dict[str, Any] = field(default_factory=dict)  # {"edges", "share", "psnr_y": {row: [per bin]}}
    notes: list[str] = field(default_factory=list)  # what the figures do not cover (shown under the table)
    data: dict[str, Any] = field(default_factory=dict)  # what the evaluated set is (photo-bsr: folder, split, photos)

    def to_dict(self) -> dict[str, Any]:
        def clean(v: float | None) -> float | None:
            return None if v is None or (isinstance(v, float) and math.isnan(v)) else round(float(v), 6)

        return {
            "dataset": self.dataset,
            "groups": self.groups,
            "border": self.border,
            "images_per_group": self.images_per_group,
            "labelled_per_group": self.labelled_per_group,
            "sources": self.sources,
            "maps": self.maps,
            "engine": self.engine,
            "notes": self.notes,
            "data": self.data,
            "rows": {r: {g: {k: clean(v) for k, v in m.items()} for g, m in gs.items()} for r, gs in self.rows.items()},
            "by_sigma": {
                "edges": self.by_sigma.get("edges", []),
                "share": [clean(v) for v in self.by_sigma.get("share", [])],
                "psnr_y": {r: [clean(v) for v in vs] for r, vs in self.by_sigma.get("psnr_y", {}).items()},
            },
        }


def bicubic_upscale(lr: Tensor, scale: int) -> Tensor:
    """``B x 3 x h x w`` -> ``B x 3 x sh x sw`` pixel-centre bicubic (not antialiased), clamped to [0, 1]."""
    return F.interpolate(lr, scale_factor=scale, mode="bicubic", align_corners=False).clamp(0.0, 1.0)


def aligned_cubic_upscale(lr: Tensor, scale: int) -> Tensor:
    """``B x 3 x h x w`` -> ``B x 3 x sh x sw`` cubic spline on the subsampling grid, clamped to [0, 1]."""
    return grid_cubic_upsample(lr, scale).clamp(0.0, 1.0)


class _Accumulator:
    def __init__(self, num_classes: int) -> None:
        self.values: dict[str, list[float]] = {}
        self.confusion = ConfusionMatrix(num_classes)
        self.scores_semantics = False  # the row estimates semantic maps
        self.labelled = 0

    def add(self, key: str, value: float) -> None:
        self.values.setdefault(key, []).append(value)

    def result(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {k: sum(v) / len(v) for k, v in self.values.items()}
        if self.scores_semantics:
            out["miou"] = self.confusion.miou() if self.labelled else None
        return out


class _SigmaBins:
    """Squared Y error summed per ground-truth sigma bin, over every image evaluated."""

    def __init__(self, sigma_max: float, border: int) -> None:
        self.edges = [round(f * sigma_max, 4) for f in SIGMA_BIN_FRACTIONS]
        self.border = border
        self.pixels = torch.zeros(len(self.edges) - 1, dtype=torch.float64)
        self.sse: dict[str, Tensor] = {}
        self._bins: Tensor | None = None
        self._hr_y: Tensor | None = None

    def set_image(self, blur_gt: Tensor, hr: Tensor) -> None:
        """The next image: ``1 x H x W`` ground-truth sigma of its HR pixels and the ``3 x H x W`` HR image."""
        self._hr_y = crop_border(rgb_to_y(hr), self.border).double()
        sigma = crop_border(blur_gt.double(), self.border).flatten()
        inner = torch.tensor(self.edges[1:-1], dtype=torch.float64)
        self._bins = torch.bucketize(sigma, inner, right=True)  # the top edge is inclusive
        self.pixels += torch.bincount(self._bins, minlength=len(self.pixels)).double()

    def add(self, name: str, sr: Tensor) -> None:
        err = crop_border(rgb_to_y(sr.clamp(0.0, 1.0)), self.border).double() - self._hr_y
        sums = torch.bincount(self._bins, weights=err.square().flatten(), minlength=len(self.pixels))
        self.sse[name] = self.sse.get(name, torch.zeros_like(self.pixels)) + sums

    def result(self) -> dict[str, Any]:
        def db(sse: float, n: float) -> float:
            return math.nan if n == 0 else (math.inf if sse == 0 else 10.0 * math.log10(n / sse))

        total = float(self.pixels.sum())
        return {
            "edges": self.edges,
            "share": [float(n) / total if total else math.nan for n in self.pixels],
            "psnr_y": {
                name: [db(float(e), float(n)) for e, n in zip(sse, self.pixels, strict=True)]
                for name, sse in self.sse.items()
            },
        }


@dataclass
class _RowOutput:
    """What a network row produced for one image (on the CPU): the x``s`` image and/or its LR maps."""

    image: Tensor | None  # 3 x H x W in [0, 1]
    blur_lr: Tensor | None = None  # 1 x h x w sigma (HR px) the row estimated
    semantic_lr: Tensor | None = None  # C x h x w probabilities it estimated


class _EngineRow:
    """A network row as ``cmosx upscale`` runs it: the engine's ``Upscaler``, given the ground-truth blur
    (``truth_blur``) or the estimates of ``estimator``."""

    def __init__(self, name, nets, estimator, estimator_source, truth_blur, device, precision) -> None:
        from cmosx.engine.pipeline import Upscaler

        if nets.sr is None:
            raise UsageError(f"{nets.source}: the {name} row needs an SR network and this holds none")
        reads = nets.conditioning
        if not (reads.semantics or (reads.blur and not truth_blur)):
            estimator = None  # the row reads no estimate: the engine estimates nothing
        estimated = f"estimated by {estimator_source}"
        blur = ("ground truth" if truth_blur else estimated) if reads.blur else NOT_USED
        semantics = estimated if estimator is not None else "uniform (no estimator)"
        semantics = semantics if reads.semantics else NOT_USED
        self.name, self.truth_blur, self.scores_maps = name, truth_blur, name == "model"
        self.maps = {"blur": blur, "semantics": semantics}
        self.upscaler = Upscaler(engine_model(nets, estimator, name), device=device, precision=precision)
        self.engine = {"precision": str(self.upscaler.precision).replace("torch.", ""), "tile": int(self.upscaler.tile)}

    def run(self, lr: Tensor, truth_blur_lr: Tensor, labels: Tensor) -> _RowOutput:
        result = self.upscaler.upscale(lr, blur_override=truth_blur_lr if self.truth_blur else None)
        return _RowOutput(result.image, result.blur_lr, result.semantic_lr)


class _DirectRow:
    """A run's network called directly, untiled, in float32, where the engine cannot serve the row:

    - an SR network evaluated without an estimator (an sr-stage run alone) on the ground-truth maps it
      was trained with, semantics included (the engine takes no semantic map from outside);
    - an estimator run (no SR network): its maps only, scored in the model row.
    """

    def __init__(self, name: str, nets: Model, device: str | torch.device) -> None:
        from cmosx.engine.device import resolve_device

        self.name, self.nets, self.truth_blur, self.scores_maps = name, nets, True, name == "model"
        self.device = resolve_device(device)
        for net in (nets.cmos, nets.sr):
            if net is not None:
                net.to(self.device).eval()
        if nets.sr is None:
            self.maps = {"blur": f"estimated by {nets.source}", "semantics": f"estimated by {nets.source}"}
        else:
            truth = "ground truth (network run directly: the engine takes no semantic map)"
            self.maps = {
                "blur": truth if nets.conditioning.blur else NOT_USED,
                "semantics": truth if nets.conditioning.semantics else NOT_USED,
            }
        self.engine = {"precision": "float32", "tile": None}

    def run(self, lr: Tensor, truth_blur_lr: Tensor, labels: Tensor) -> _RowOutput:
        from cmosx.models.cmos import conditions
        from cmosx.models.rrdb_sft import labels_to_probabilities
        from cmosx.train.stages import condition

        nets, card, x = self.nets, self.nets.card, lr[None].to(self.device)
        if nets.sr is None:
            maps = nets.cmos(x)
            blur, semantic = conditions(maps.blur_lr.float(), maps.logits_lr.float(), card.sigma_max)
            return _RowOutput(None, blur[0].cpu(), semantic[0].cpu())
        probs = labels_to_probabilities(labels[None], card.num_classes)
        blur = truth_blur_lr[None].to(self.device)
        semantic = grid_downsample(probs, card.spec.scale).to(self.device)
        blur, semantic = condition(blur, semantic, nets.conditioning.blur, nets.conditioning.semantics)
        return _RowOutput(nets.sr(x, blur, semantic)[0].float().clamp(0.0, 1.0).cpu())


def _rows(model: Model, upper: Model | None, baseline: Model | None, device, precision) -> list:
    """The network rows, in table order: baseline, model, upper bound."""
    rows: list[_EngineRow | _DirectRow] = []
    if baseline is not None:
        own = baseline.cmos is not None  # a blind model: its own estimates; an SR network: the ground-truth blur
        if not own and model.cmos is None and baseline.conditioning.semantics:
            rows.append(_DirectRow("baseline", baseline, device))
        else:
            estimator, source = (baseline.cmos, baseline.source) if own else (model.cmos, model.source)
            rows.append(_EngineRow("baseline", baseline, estimator, source, not own, device, precision))
    if model.cmos is not None and model.sr is None:
        rows.append(_DirectRow("model", model, device))
    elif model.cmos is not None:
        rows.append(_EngineRow("model", model, model.cmos, model.source, False, device, precision))
    if upper is not None and upper.sr is not None:
        if model.cmos is None and upper.conditioning.semantics:
            rows.append(_DirectRow("upper bound", upper, device))
        else:
            rows.append(_EngineRow("upper bound", upper, model.cmos, model.source, True, device, precision))
    return rows


def _score(name: str, out: Tensor, hr: Tensor, border: int, acc: _Accumulator, bins: _SigmaBins) -> None:
    """SR PSNR/SSIM-Y and registration of one ``3 x H x W`` output."""
    p, s = sr_psnr_ssim_y(out, hr, border)
    acc.add("psnr_y", p)
    acc.add("ssim_y", s)
    reg = register(out, hr, border)
    acc.add("reg_dx", reg.dx)
    acc.add("reg_dy", reg.dy)
    acc.add("reg_gain", reg.gain_db)
    bins.add(name, out)


def _score_maps(out: _RowOutput, blur_gt: Tensor, labels: Tensor, sigma_max: float, scale: int, acc: _Accumulator):
    """Blur-map PSNR/SSIM and the confusion matrix of a row's LR maps, placed on the HR grid."""
    blur_hr = grid_upsample(out.blur_lr[None].float(), scale)[0]
    bp, bs = blur_psnr_ssim(blur_hr, blur_gt, sigma_max)
    acc.add("blur_psnr", bp)
    acc.add("blur_ssim", bs)
    acc.scores_semantics = True
    if bool((labels != IGNORE_INDEX).any()):
        acc.labelled += 1
        acc.confusion.update(grid_upsample(out.semantic_lr[None].float(), scale)[0].argmax(0), labels)


def _evaluate_sample(
    sample: dict[str, Any],
    rows: list,
    scale: int,
    sigma_max: float,
    border: int,
    accs: dict[str, _Accumulator],
    bins: _SigmaBins,
) -> None:
    lr, hr, blur_gt, labels = sample["lr"].float(), sample["hr"].float(), sample["blur"].float(), sample["labels"]
    truth_lr = grid_downsample(blur_gt[None], scale)[0]  # the ground-truth blur on the LR grid
    bins.set_image(blur_gt, hr)
    _score("bicubic", bicubic_upscale(lr[None], scale)[0], hr, border, accs["bicubic"], bins)
    _score("aligned cubic", aligned_cubic_upscale(lr[None], scale)[0], hr, border, accs["aligned cubic"], bins)
    for row in rows:
        out = row.run(lr, truth_lr, labels)
        if out.image is not None:
            _score(row.name, out.image, hr, border, accs[row.name], bins)
        if row.scores_maps:
            _score_maps(out, blur_gt, labels, sigma_max, scale, accs[row.name])


def _mean_over_groups(per_group: list[dict[str, float | None]]) -> dict[str, float | None]:
    mean: dict[str, float | None] = {}
    for key in METRIC_KEYS:
        if key not in per_group[0]:
            continue
        values = [g[key] for g in per_group if g.get(key) is not None]
        mean[key] = sum(values) / len(values) if values else None
    return mean


def evaluate(
    model: Model,
    groups: dict[Any, Any],
    *,
    dataset_name: str,
    baseline: Model | None = None,
    upper: Model | None = None,
    border: int | None = None,
    limit: int | None = None,
    device: str | torch.device = "auto",
    precision: str = "auto",
    progress: Callable[[int, int], None] | None = None,
) -> EvalReport:
    """Evaluate on ``groups`` (group key -> map-style dataset of samples); ``limit`` caps images per group.

    A sample is a dict with ``hr`` (3 x H x W in [0, 1]), ``lr`` (3 x H/s x W/s), ``blur`` (1 x H x W
    sigma in HR px) and ``labels`` (H x W int64, 255 = ignore; all 255 = no labels). ``upper``: the
    networks of the upper-bound row (None: the model's own SR network); ``baseline``: another model or SR
    network.
    """
    card = model.card
    border = card.spec.scale if border is None else border
    scale = card.spec.scale
    upper = upper or model
    engine_rows = _rows(model, upper, baseline, device, precision)
    keys = sorted(groups)
    report = EvalReport(dataset=dataset_name, groups=keys, border=border, images_per_group={})
    names = ["bicubic", "aligned cubic"] + [row.name for row in engine_rows]
    for row in engine_rows:
        report.sources[row.name] = {"model": model, "upper bound": upper, "baseline": baseline}[row.name].source
        report.maps[row.name] = row.maps
    if engine_rows:
        from cmosx.engine.device import resolve_device

        report.engine = {
            "device": str(resolve_device(device)),
            "precision": {row.name: row.engine["precision"] for row in engine_rows},
            "tile": {row.name: row.engine["tile"] for row in engine_rows},
        }
    total = sum(min(len(groups[k]), limit or len(groups[k])) for k in keys)
    done = 0
    bins = _SigmaBins(card.sigma_max, border)
    for key in keys:
        ds = groups[key]
        count = min(len(ds), limit or len(ds))
        accs = {name: _Accumulator(card.num_classes) for name in names}
        with torch.inference_mode():
            for i in range(count):
                _evaluate_sample(ds[i], engine_rows, scale, card.sigma_max, border, accs, bins)
                done += 1
                if progress is not None:
                    progress(done, total)
        report.images_per_group[str(key)] = count
        if "model" in accs:
            report.labelled_per_group[str(key)] = accs["model"].labelled
        for name in names:
            report.rows.setdefault(name, {})[str(key)] = accs[name].result()
    for name in names:
        report.rows[name]["mean"] = _mean_over_groups([report.rows[name][str(k)] for k in keys])
    report.by_sigma = bins.result()
    unlabelled = [g for g, n in report.labelled_per_group.items() if n == 0]
    if unlabelled:
        report.notes.append(f"mIoU not available: no labels in group(s) {', '.join(unlabelled)}")
    return report


def format_table(report: EvalReport) -> str:
    """A plain-text table: one line per row and group, then the mean; registration in HR px."""
    header = (
        f"{'row':<12} {'group':>5}  {'PSNR-Y':>7} {'SSIM-Y':>7}  {'blurPSNR':>8} {'blurSSIM':>8}  {'mIoU':>6}"
        f"  {'reg dx':>6} {'reg dy':>6} {'gain':>5}"
    )
    lines = [
        f"dataset {report.dataset}; border crop {report.border} px; images per group "
        + ", ".join(f"{g}: {n}" for g, n in report.images_per_group.items()),
        "networks: " + "; ".join(f"{row} = {src}" for row, src in report.sources.items()),
    ]
    if report.data.get("photos") is not None:
        data = report.data
        lines.append(
            f"photos: {len(data['photos'])} of {data['photos_folder']} ({data['split']} split), "
            f"{data['scenes_per_photo']} scenes each: " + ", ".join(data["photos"])
        )
    lines += [f"maps fed to {row}: blur {m['blur']}; semantics {m['semantics']}" for row, m in report.maps.items()]
    if report.engine:
        engine = report.engine
        tiles = {row: "untiled" if t is None else f"tile {t}" for row, t in engine["tile"].items()}
        per_row = "; ".join(f"{row} {p}, {tiles[row]}" for row, p in engine["precision"].items())
        lines.append(f"engine: {engine['device']}; {per_row}")
    lines += [header, "-" * len(header)]

    def fmt(v: float | None, width: int, digits: int) -> str:
        return f"{'-':>{width}}" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:>{width}.{digits}f}"

    for key in [str(g) for g in report.groups] + ["mean"]:
        for name, per_group in report.rows.items():
            m = per_group[key]
            value = m.get("miou")
            miou = f"{'n/a':>6}" if "miou" in m and value is None else fmt(None if value is None else 100 * value, 6, 2)
            lines.append(
                f"{name:<13} {key:>4}  {fmt(m.get('psnr_y'), 7, 2)} {fmt(m.get('ssim_y'), 7, 4)}  "
                f"{fmt(m.get('blur_psnr'), 8, 2)} {fmt(m.get('blur_ssim'), 8, 4)}  {miou}  "
                f"{fmt(m.get('reg_dx'), 6, 2)} {fmt(m.get('reg_dy'), 6, 2)} {fmt(m.get('reg_gain'), 5, 2)}"
            )
    lines += report.notes
    lines.append("reg dx, dy: the HR px move that best aligns a row's output with the truth; gain: dB it adds")
    by_sigma = report.by_sigma
    if by_sigma.get("edges"):
        edges = by_sigma["edges"]
        labels = [f"{a:g}-{b:g}" for a, b in zip(edges[:-1], edges[1:], strict=True)]
        lines += ["", "PSNR-Y by ground-truth sigma (HR px), all groups:"]
        lines.append(f"{'row':<16} " + " ".join(f"{label:>8}" for label in labels))
        lines.append(f"{'share of pixels':<16} " + " ".join(fmt(100 * v, 7, 1) + "%" for v in by_sigma["share"]))
        for name, values in by_sigma["psnr_y"].items():
            lines.append(f"{name:<16} " + " ".join(fmt(v, 8, 2) for v in values))
    return "\n".join(lines)
