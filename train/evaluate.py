"""Evaluation in the shape of the paper's Tables 2-3: per test group and the mean.

Rows:

- ``bicubic``: the LR image upscaled x4 bicubically;
- ``aligned bilinear``: bilinear upsampling on the LR's own sampling grid (HR pixel ``s*i`` on LR pixel
  ``i``, as direct subsampling made it), which is what the lite SR network adds its output to; the gap
  between it and ``bicubic`` is registration alone (bicubic centres HR pixels 1.5 px off that grid);
- ``model``: blind SR -- the model's CMOS estimates the maps, its RRDB-SFT upscales (plus blur-map
  PSNR/SSIM and mIoU of those estimates);
- ``upper bound``: RRDB-SFT fed the ground-truth maps -- the paper's upper bound is the stage-2 network
  (trained on ground-truth maps), so pass that as ``upper`` (the CLI finds it from the model's recipe);
  without it the model's own (blind-fine-tuned) SR network is used, which is not the same thing;
- ``baseline`` (optional): another model or run, e.g. the blur-unaware SR network (``--unconditioned``).

Per image: SR PSNR/SSIM on BT.601 Y after cropping ``border`` pixels (default: the scale); blur maps
normalised by sigma_max; mIoU accumulated over the group. Group values are means over images (mIoU over
the group's confusion matrix); the mean row averages the groups.

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
from torch import Tensor, nn

from cmosx.errors import ModelError
from cmosx.train.metrics import ConfusionMatrix, blur_psnr_ssim, crop_border, rgb_to_y, sr_psnr_ssim_y
from cmosx.train.runs import Networks
from cmosx.train.stages import cmos_prior, condition

METRIC_KEYS = ("psnr_y", "ssim_y", "blur_psnr", "blur_ssim", "miou")
SIGMA_BIN_FRACTIONS = (0.0, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0)


@dataclass
class EvalReport:
    """``rows[row_name][group_key][metric]`` with group keys ``"1".."5"`` and ``"mean"``."""

    dataset: str
    groups: list[int]
    border: int
    images_per_group: dict[str, int]
    rows: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    by_sigma: dict[str, Any] = field(default_factory=dict)  # {"edges", "share", "psnr_y": {row: [per bin]}}

    def to_dict(self) -> dict[str, Any]:
        def clean(v: float) -> float | None:
            return None if v is None or (isinstance(v, float) and math.isnan(v)) else round(float(v), 6)

        return {
            "dataset": self.dataset,
            "groups": self.groups,
            "border": self.border,
            "images_per_group": self.images_per_group,
            "sources": self.sources,
            "rows": {r: {g: {k: clean(v) for k, v in m.items()} for g, m in gs.items()} for r, gs in self.rows.items()},
            "by_sigma": {
                "edges": self.by_sigma.get("edges", []),
                "share": [clean(v) for v in self.by_sigma.get("share", [])],
                "psnr_y": {r: [clean(v) for v in vs] for r, vs in self.by_sigma.get("psnr_y", {}).items()},
            },
        }


def bicubic_upscale(lr: Tensor, scale: int) -> Tensor:
    """``B x 3 x h x w`` -> ``B x 3 x sh x sw`` bicubic (not antialiased), clamped to [0, 1]."""
    return F.interpolate(lr, scale_factor=scale, mode="bicubic", align_corners=False).clamp(0.0, 1.0)


class _Accumulator:
    def __init__(self, num_classes: int) -> None:
        self.values: dict[str, list[float]] = {}
        self.confusion = ConfusionMatrix(num_classes)
        self.has_semantics = False

    def add(self, key: str, value: float) -> None:
        self.values.setdefault(key, []).append(value)

    def result(self) -> dict[str, float]:
        out = {k: sum(v) / len(v) for k, v in self.values.items()}
        if self.has_semantics:
            out["miou"] = self.confusion.miou()
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


def _sr_with_maps(sr: nn.Module, lr: Tensor, blur_lr: Tensor, semantic_lr: Tensor, nets: Networks) -> Tensor:
    blur_lr, semantic_lr = condition(blur_lr, semantic_lr, nets.use_blur, nets.use_semantics)
    return sr(lr, blur_lr, semantic_lr)


def _rows_for_sample(
    sample: dict[str, Any],
    model: Networks,
    upper: Networks,
    baseline: Networks | None,
    border: int,
    accs: dict[str, _Accumulator],
    bins: _SigmaBins,
    device: torch.device,
) -> None:
    from cmosx.models.rrdb_sft import labels_to_probabilities, maps_to_lr
    from cmosx.ops.grid import grid_upsample

    scale = model.spec.scale
    lr = sample["lr"].unsqueeze(0).to(device).contiguous(memory_format=torch.channels_last)
    hr = sample["hr"]
    blur_gt = sample["blur"]
    labels = sample["labels"]
    bins.set_image(blur_gt, hr)

    def score(name: str, out: Tensor) -> None:
        out = out[0].float().cpu()
        p, s = sr_psnr_ssim_y(out, hr, border)
        accs[name].add("psnr_y", p)
        accs[name].add("ssim_y", s)
        bins.add(name, out)

    score("bicubic", bicubic_upscale(lr, scale))
    score("aligned bilinear", grid_upsample(lr, scale))
    probs = labels_to_probabilities(labels.unsqueeze(0), upper.num_classes).to(device)
    gt_blur_lr, gt_sem_lr = maps_to_lr(blur_gt.unsqueeze(0).to(device), probs, scale)
    if upper.sr is not None:
        score("upper bound", _sr_with_maps(upper.sr, lr, gt_blur_lr, gt_sem_lr, upper))
    if model.cmos is not None:
        maps = model.cmos(lr)
        blur_hr = maps.blur_hr()[0].float().cpu()
        bp, bs = blur_psnr_ssim(blur_hr, blur_gt, model.sigma_max)
        acc = accs["model"]
        acc.add("blur_psnr", bp)
        acc.add("blur_ssim", bs)
        acc.has_semantics = True
        acc.confusion.update(maps.logits_hr()[0].argmax(0).cpu(), labels)
        if model.sr is not None:
            blur_lr, sem_lr = cmos_prior(maps, model.sigma_max)
            score("model", _sr_with_maps(model.sr, lr, blur_lr, sem_lr, model))
    if baseline is not None:
        if baseline.sr is None:
            raise ModelError(f"{baseline.source}: the baseline holds no SR network")
        if baseline.cmos is not None and (baseline.use_blur or baseline.use_semantics):
            blur_lr, sem_lr = cmos_prior(baseline.cmos(lr), baseline.sigma_max)
        else:  # blur-unaware (maps zeroed anyway) or an SR-only run evaluated on ground-truth maps
            b_probs = labels_to_probabilities(labels.unsqueeze(0), baseline.num_classes).to(device)
            blur_lr, sem_lr = maps_to_lr(blur_gt.unsqueeze(0).to(device), b_probs, scale)
        score("baseline", _sr_with_maps(baseline.sr, lr, blur_lr, sem_lr, baseline))


def evaluate(
    model: Networks,
    groups: dict[int, Any],
    *,
    dataset_name: str,
    baseline: Networks | None = None,
    upper: Networks | None = None,
    border: int | None = None,
    limit: int | None = None,
    device: str | torch.device = "cpu",
    progress: Callable[[int, int], None] | None = None,
) -> EvalReport:
    """Evaluate on ``groups`` (group number -> dataset of sample dicts); ``limit`` caps images per group.

    ``upper``: the networks of the upper-bound row (default: ``model``).
    """
    device = torch.device(device)
    upper = upper or model
    border = model.spec.scale if border is None else border
    for nets in (model, upper, baseline):
        if nets is None:
            continue
        for net in (nets.cmos, nets.sr):
            if net is not None:
                net.to(device).to(memory_format=torch.channels_last).eval()
    report = EvalReport(dataset=dataset_name, groups=sorted(groups), border=border, images_per_group={})
    report.sources["model"] = model.source
    report.sources["upper bound"] = upper.source
    if baseline is not None:
        report.sources["baseline"] = baseline.source
    names = ["bicubic", "aligned bilinear"]
    names += ["model"] if model.cmos is not None else []
    names += ["upper bound"] if upper.sr is not None else []
    names += ["baseline"] if baseline is not None else []
    total = sum(min(len(ds), limit or len(ds)) for ds in groups.values())
    done = 0
    bins = _SigmaBins(model.sigma_max, border)
    for group in sorted(groups):
        ds = groups[group]
        count = min(len(ds), limit or len(ds))
        accs = {name: _Accumulator(model.num_classes) for name in names}
        with torch.inference_mode():
            for i in range(count):
                _rows_for_sample(ds[i], model, upper, baseline, border, accs, bins, device)
                done += 1
                if progress is not None:
                    progress(done, total)
        report.images_per_group[str(group)] = count
        for name in names:
            report.rows.setdefault(name, {})[str(group)] = accs[name].result()
    for name in names:
        per_group = [report.rows[name][str(g)] for g in sorted(groups)]
        keys = [k for k in METRIC_KEYS if k in per_group[0]]
        report.rows[name]["mean"] = {k: sum(g[k] for g in per_group) / len(per_group) for k in keys}
    report.by_sigma = bins.result()
    return report


def format_table(report: EvalReport) -> str:
    """A plain-text table: one line per row and group, then the mean."""
    header = f"{'row':<12} {'group':>5}  {'PSNR-Y':>7} {'SSIM-Y':>7}  {'blurPSNR':>8} {'blurSSIM':>8}  {'mIoU':>6}"
    lines = [
        f"dataset {report.dataset}; border crop {report.border} px; images per group "
        + ", ".join(f"{g}: {n}" for g, n in report.images_per_group.items()),
        "networks: " + "; ".join(f"{row} = {src}" for row, src in report.sources.items()),
        header,
        "-" * len(header),
    ]

    def fmt(v: float | None, width: int, digits: int) -> str:
        return f"{'-':>{width}}" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:>{width}.{digits}f}"

    for key in [str(g) for g in report.groups] + ["mean"]:
        for name, per_group in report.rows.items():
            m = per_group[key]
            miou = m.get("miou")
            lines.append(
                f"{name:<12} {key:>5}  {fmt(m.get('psnr_y'), 7, 2)} {fmt(m.get('ssim_y'), 7, 4)}  "
                f"{fmt(m.get('blur_psnr'), 8, 2)} {fmt(m.get('blur_ssim'), 8, 4)}  "
                f"{fmt(None if miou is None else 100 * miou, 6, 2)}"
            )
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
