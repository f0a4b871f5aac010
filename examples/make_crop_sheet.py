"""Make docs/images/crop-sheet.png: what ``--deblur`` and ``--keep-bokeh`` do, on crops of the example photos.

One command regenerates the sheet (rerun it after the bundled model changes)::

    python examples/make_crop_sheet.py
    python examples/make_crop_sheet.py --model PATH_OR_NAME --out docs/images/crop-sheet.png
    python examples/make_crop_sheet.py --measure-only more/*.png   # keep-bokeh figures for other photos

Per photo it runs the engine three times, as ``cmosx upscale`` does (the Python API: ``Upscaler(...,
blur_scale=..., keep_bokeh=...)``): default, ``--keep-bokeh`` and ``--deblur 0.5``. Columns, all 1:1
pixels of the x4 output: grid-aligned bicubic (the LR photo interpolated on the project's pixel grid,
no restoration), default, --keep-bokeh, --deblur 0.5, and the estimated blur map (viridis, 0 to the
model's sigma_max; the dashed line is where --keep-bokeh starts keeping: weight > 0).

It also prints, per photo, the keep-bokeh measurements of docs/keep-bokeh.md: where the keep weight is
0 the largest difference to the default output (0 means equal), where it is 1 the PSNR of the default
and of the --keep-bokeh output against the grid-aligned bilinear interpolation, and the detail
(mean absolute Laplacian, 8-bit levels) of each there.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from cmosx.engine.bokeh import DEFAULT_BOKEH_SIGMA
from cmosx.engine.pipeline import Upscaler
from cmosx.io import read_image
from cmosx.io.maps import colorize
from cmosx.models.hub import resolve_model
from cmosx.ops.compare import psnr
from cmosx.ops.grid import grid_upsample

ROOT = Path(__file__).resolve().parent.parent
PHOTOS = ROOT / "examples" / "photos"
# The photos of the sheet and their crops: LR top-left (row, col) of a 64 x 64 window, or None for the
# window closest to half kept, half restored (on chelsea that is the eye, which the estimator reads as
# defocused: a limitation the sheet shows rather than hides).
SHEET_CROPS = {"chelsea.png": [(8, 330), None], "camera.png": [None]}
CROP = 64  # LR pixels; 256 x 256 at x4
COLUMNS = ("bicubic (grid-aligned)", "default", "--keep-bokeh", "--deblur 0.5", "blur map")


def upscale_variants(model, rgb: torch.Tensor, device: str, precision: str) -> dict:
    """The three engine runs of one photo (3 x H x W in [0, 1]) -> their UpscaleResults."""
    base = Upscaler(model, device=device, precision=precision)
    same = {"device": device, "precision": base.precision, "tile": base.tile, "cmos_tile": base.cmos_tile}
    return {
        "default": base.upscale(rgb),  # the other runs take its tile sizes and precision: same sums
        "keep": Upscaler(model, keep_bokeh=DEFAULT_BOKEH_SIGMA, **same).upscale(rgb),
        "half": Upscaler(model, blur_scale=0.5, **same).upscale(rgb),
    }


def laplacian_detail(hr: torch.Tensor) -> torch.Tensor:
    """3 x H x W -> H x W mean absolute 4-neighbour Laplacian over channels, in 8-bit levels."""
    kernel = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3).repeat(3, 1, 1, 1)
    padded = F.pad(hr[None], (1, 1, 1, 1), mode="replicate")
    return F.conv2d(padded, kernel, groups=3)[0].abs().mean(dim=0) * 255


def measure(rgb: torch.Tensor, results: dict) -> dict:
    """Keep-bokeh figures of one photo (see the module docstring)."""
    default, kept = results["default"].image, results["keep"].image
    weight = grid_upsample(results["keep"].bokeh_lr[None], 4)[0, 0]
    # The engine interpolates the last 3 HR rows/columns towards its replicated border frame, whose weight
    # this unframed map does not hold: leave them out of both regions.
    weight[-3:], weight[:, -3:] = float("nan"), float("nan")
    smooth = grid_upsample(rgb[None], 4)[0]
    focus, bokeh = weight == 0, weight >= 0.999
    detail = {
        name: laplacian_detail(x)[bokeh].mean().item()
        for name, x in (("smooth", smooth), ("default", default), ("keep", kept))
    }
    return {
        "focus_share": focus.float().mean().item(),
        "bokeh_share": bokeh.float().mean().item(),
        "focus_max_diff": (kept - default).abs()[:, focus].max().item() if focus.any() else float("nan"),
        "psnr_default_vs_smooth": psnr(default[:, bokeh], smooth[:, bokeh]) if bokeh.any() else float("nan"),
        "psnr_keep_vs_smooth": psnr(kept[:, bokeh], smooth[:, bokeh]) if bokeh.any() else float("nan"),
        **{f"detail_{name}": value for name, value in detail.items()},
    }


def auto_crop(weight_lr: torch.Tensor) -> tuple[int, int]:
    """LR top-left of the CROP x CROP window whose keep weight is closest to half kept, half restored."""
    mean = F.avg_pool2d(weight_lr[None], CROP, stride=8)[0, 0]
    row, col = divmod(int((mean - 0.5).abs().argmin()), mean.shape[1])
    return row * 8, col * 8


def panel(image: torch.Tensor, row: int, col: int) -> Image.Image:
    """A 3 x 4H x 4W result -> the 4*CROP square at LR (row, col), as a Pillow image."""
    crop = image[:, 4 * row : 4 * (row + CROP), 4 * col : 4 * (col + CROP)]
    return Image.fromarray((crop.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy())


def map_panel(blur_lr: torch.Tensor, weight_lr: torch.Tensor, row: int, col: int, sigma_max: float) -> Image.Image:
    """The blur map crop, nearest-upscaled x4, with the outline of the kept region (weight > 0) dashed."""
    blur = blur_lr[0, row : row + CROP, col : col + CROP].numpy()
    colours = colorize(np.kron(blur, np.ones((4, 4), np.float32)), sigma_max)
    kept = np.kron(weight_lr[0, row : row + CROP, col : col + CROP].numpy() > 0, np.ones((4, 4), bool))
    edge = kept ^ np.roll(kept, 1, 0) | kept ^ np.roll(kept, 1, 1)
    edge[0, :] = edge[:, 0] = False
    dashes = ((np.arange(edge.shape[0])[:, None] + np.arange(edge.shape[1])[None]) // 6) % 2 == 0
    colours[edge & dashes] = (255, 255, 255)
    return Image.fromarray(colours)


def make_sheet(rows: list[tuple[str, list[Image.Image]]], sigma_max: float, model_name: str) -> Image.Image:
    size, gap, label_h, name_w = 4 * CROP, 6, 18, 0
    font = ImageFont.load_default()
    width = name_w + len(COLUMNS) * (size + gap) - gap
    footer = 16
    sheet = Image.new("RGB", (width, label_h + len(rows) * (size + gap + label_h) + footer), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    y = 0
    for index, (name, panels) in enumerate(rows):
        for column, title in enumerate(COLUMNS):
            x = name_w + column * (size + gap)
            text = f"{name}: {title}" if column == 0 else title
            draw.text((x + 2, y + 3), text, (0, 0, 0), font)
            sheet.paste(panels[column], (x, y + label_h))
        y += label_h + size + gap
        del index
    note = (
        f"x4 crops, 1:1 pixels; model {model_name}; blur map: viridis 0-{sigma_max:g} px, "
        f"dashed = kept by --keep-bokeh (sigma > {DEFAULT_BOKEH_SIGMA - 0.5:g})"
    )
    draw.text((2, y + 2), note, (0, 0, 0), font)
    return sheet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "crop-sheet.png")
    parser.add_argument("--model", default=None, help="bundled name, local path or hf:// reference (default model)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="fp32", help="fp32 (default: the same sheet on every CPU), auto, bf16")
    parser.add_argument("--measure-only", nargs="*", type=Path, default=None, help="photos to measure, no sheet")
    args = parser.parse_args()

    model = resolve_model(args.model)
    sigma_max = float(model.card.sigma_max)
    paths = args.measure_only if args.measure_only is not None else [PHOTOS / name for name in SHEET_CROPS]
    rows = []
    machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    print(f"machine: {machine}; model {model.card.name}")
    print(
        "| photo | restored share | kept share | max diff where weight 0 "
        "| PSNR vs bilinear (default / keep) | detail (bilinear / default / keep) |"
    )
    print("|---|---|---|---|---|---|")
    for path in paths:
        start = time.perf_counter()
        rgb = read_image(path).rgb()
        results = upscale_variants(model, rgb, args.device, args.precision)
        m = measure(rgb, results)
        print(
            f"| {path.name} | {m['focus_share']:.0%} | {m['bokeh_share']:.0%} | {m['focus_max_diff']:.2g} "
            f"| {m['psnr_default_vs_smooth']:.1f} / {m['psnr_keep_vs_smooth']:.1f} dB "
            f"| {m['detail_smooth']:.2f} / {m['detail_default']:.2f} / {m['detail_keep']:.2f} |"
            f"  ({time.perf_counter() - start:.0f} s)",
            flush=True,
        )
        if args.measure_only is not None:
            continue
        weight = results["keep"].bokeh_lr
        bicubic = grid_upsample(rgb[None], 4, mode="bicubic")[0]
        for crop in SHEET_CROPS.get(path.name) or [None]:
            row, col = crop or auto_crop(weight)
            panels = [panel(bicubic, row, col)]
            panels += [panel(results[name].image, row, col) for name in ("default", "keep", "half")]
            panels.append(map_panel(results["default"].blur_lr, weight, row, col, sigma_max))
            rows.append((path.stem, panels))
    if rows:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        make_sheet(rows, sigma_max, model.card.name).save(args.out, optimize=True)
        print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
