"""``cmosx upscale``: upscale photos x4 (folders, files, globs; JPEG/PNG/TIFF/WebP/BMP/HEIC/AVIF/RAW)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import typer

from cmosx.cli.options import (
    DeviceOpt,
    DryRunOpt,
    InputsArg,
    JsonOpt,
    MaxMegapixelsOpt,
    ModelOpt,
    OutputDirOpt,
    OverlapOpt,
    OverwriteOpt,
    PrecisionOpt,
    QuietOpt,
    RecursiveOpt,
    SkipExistingOpt,
    TileOpt,
)
from cmosx.errors import InputImageError, UsageError

HELP = """Upscale photos x4 (files, folders, globs; JPEG/PNG/TIFF/WebP/BMP/HEIC/AVIF and camera RAW).

--scale 4 is the model's native factor. --scale 2 and 3 run the x4 model and then shrink the result with an
antialiased bicubic filter to the requested size.

Outputs go under -o OUT_DIR with the input's relative path and stem (folder trees mirrored with --recursive), or
beside each input as NAME_x4.EXT without -o. Folder and glob inputs skip hidden files, Thumbs.db/.DS_Store,
OUT_DIR itself, and earlier NAME_x4 outputs lying beside NAME.

--format same keeps the input's format; RAW inputs become 16-bit TIFF; HEIC/HEIF phone photos become JPEG (opens
everywhere, EXIF/ICC kept; cmosx does not encode HEVC); AVIF stays AVIF (where Pillow can write it, else PNG).
10-bit HEIC/AVIF keeps its depth with --format png or tiff. 16-bit inputs stay 16-bit in PNG and
TIFF; grayscale stays grayscale; alpha is kept; EXIF (orientation applied and reset to 1, sizes updated,
thumbnail dropped), XMP and the ICC profile are carried over.

What gets sharpened: --deblur S removes that share of the estimated defocus (0 = upscale only, the network is
told the photo is in focus; 1 = full restoration). --keep-bokeh keeps regions the estimator finds strongly out of
focus (blur sigma above --bokeh-sigma, default 3.75 px of the x4 output) as soft as they were: smoothly
interpolated, no invented texture; in-focus regions are restored as by default, with a smooth transition.
--blur-map FILE uses your own sigma map instead of the estimate: NAME_blur.tif or .npy as written by
cmosx blurmap (one value per input pixel, sigma in px of the x4 output), or an 8/16-bit grayscale image
painted in an editor with --blur-map-max SIGMA (the sigma that white stands for). For several inputs give a
folder: each input NAME takes NAME_blur.tif (.tiff, .npy; .png with --blur-map-max) from it.

Existing outputs are refused unless --overwrite (replace) or --skip-existing (leave, do no work). A bad file
is reported in one line and the batch goes on. Exit codes: 0 all done, 1 some file failed, 2 usage error.
Under torchrun (RANK / WORLD_SIZE set), each process takes its share of the files and its own GPU."""


def register(app: typer.Typer) -> None:
    app.command(name="upscale", help=HELP, short_help="Upscale photos x4 (files, folders, globs; RAW too).")(
        upscale_command
    )


def upscale_command(
    inputs: InputsArg,
    output_dir: OutputDirOpt = None,
    scale: Annotated[int, typer.Option(help="4 native; 2 and 3 = x4 then antialiased downscale.")] = 4,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    tile: TileOpt = "auto",
    overlap: OverlapOpt = 16,
    output_format: Annotated[str, typer.Option("--format", help="same, png, jpeg, tiff, webp or avif.")] = "same",
    quality: Annotated[int, typer.Option(help="JPEG/WebP quality, 1-100.")] = 95,
    recursive: RecursiveOpt = False,
    overwrite: OverwriteOpt = False,
    skip_existing: SkipExistingOpt = False,
    dry_run: DryRunOpt = False,
    json_report: JsonOpt = False,
    deblur: Annotated[
        float, typer.Option("--deblur", help="Share of the estimated defocus removed: 0 (upscale only) to 1 (full).")
    ] = 1.0,
    keep_bokeh: Annotated[
        bool, typer.Option("--keep-bokeh", help="Keep strongly out-of-focus regions soft (smoothly upscaled).")
    ] = False,
    bokeh_sigma: Annotated[
        Optional[float],
        typer.Option("--bokeh-sigma", help="With --keep-bokeh: sigma (x4 px) from which a region is bokeh [3.75]."),
    ] = None,
    blur_map: Annotated[
        Optional[Path],
        typer.Option(
            "--blur-map", help="Sigma map to use instead of the estimate (file, or a folder of NAME_blur.tif)."
        ),
    ] = None,
    blur_map_max: Annotated[
        Optional[float],
        typer.Option("--blur-map-max", help="Sigma that white stands for in an 8/16-bit grayscale --blur-map."),
    ] = None,
    save_maps: Annotated[
        bool, typer.Option("--save-maps", help="Also write NAME_blur.tif and NAME_blur.png (see blurmap).")
    ] = False,
    quiet: QuietOpt = False,
    max_megapixels: MaxMegapixelsOpt = 100.0,
) -> None:
    from cmosx.cli import _batch
    from cmosx.cli._engine import EngineChoice, parse_tile, shard_device
    from cmosx.engine.bokeh import DEFAULT_BOKEH_SIGMA
    from cmosx.io.formats import output_extension

    if scale not in (2, 3, 4):
        raise UsageError(f"--scale must be 2, 3 or 4, got {scale}")
    if overwrite and skip_existing:
        raise UsageError("--overwrite and --skip-existing exclude each other")
    if not 1 <= quality <= 100:
        raise UsageError(f"--quality must be 1-100, got {quality}")
    if overlap < 0:
        raise UsageError(f"--overlap must be >= 0, got {overlap}")
    if max_megapixels <= 0:
        raise UsageError(f"--max-megapixels must be positive, got {max_megapixels}")
    if not 0.0 <= deblur <= 1.0:
        raise UsageError(f"--deblur must be between 0 and 1, got {deblur}")
    if bokeh_sigma is not None and not keep_bokeh:
        raise UsageError("--bokeh-sigma sets the threshold of --keep-bokeh; give --keep-bokeh too")
    if bokeh_sigma is not None and not bokeh_sigma > 0:
        raise UsageError(f"--bokeh-sigma must be positive, got {bokeh_sigma}")
    if blur_map_max is not None and (blur_map is None or not blur_map_max > 0):
        raise UsageError("--blur-map-max must be positive and goes with --blur-map")
    if blur_map is not None and not blur_map.exists():
        raise UsageError(f"--blur-map {blur_map}: no such file or folder")
    output_extension(Path("x.png"), output_format)  # validates --format
    rank, world, local_rank = _batch.shard_from_environment()
    threshold = (bokeh_sigma or DEFAULT_BOKEH_SIGMA) if keep_bokeh else None
    choice = EngineChoice(
        model, shard_device(device, local_rank, world), precision, parse_tile(tile), overlap, deblur, threshold
    )

    def name_outputs(found: _batch.Found) -> list[Path]:
        extension = output_extension(found.path, output_format)
        if output_dir is None:
            main = found.path.with_name(f"{found.path.stem}_x{scale}{extension}")
        else:
            main = output_dir / found.relative.parent / f"{found.relative.stem}{extension}"
        if not save_maps:
            return [main]
        return [main, main.with_name(f"{main.stem}_blur.tif"), main.with_name(f"{main.stem}_blur.png")]

    earlier = () if output_dir is not None else ("_x2", "_x3", "_x4")
    if blur_map is not None and blur_map.is_dir():
        earlier += ("_blur", "_semantic")  # maps written beside their photos are not inputs
    found = _batch.discover_inputs(inputs, recursive, output_dir, earlier)
    jobs = _batch.plan_jobs(found, name_outputs)
    map_for = None if blur_map is None else blur_maps_for(found, blur_map, blur_map_max is not None)
    options = _batch.BatchOptions(
        existing="overwrite" if overwrite else "skip" if skip_existing else "refuse",
        dry_run=dry_run,
        json=json_report,
        quiet=quiet,
    )
    settings = MapSettings(deblur, threshold, map_for, blur_map_max)
    make = lambda: make_upscale_processor(choice, scale, quality, save_maps, int(max_megapixels * 1e6), settings)  # noqa: E731
    code = _batch.run_batch(_batch.shard(jobs, rank, world), make, options, rank, world)
    raise typer.Exit(code)


@dataclass
class MapSettings:
    """What gets sharpened: --deblur, the --keep-bokeh threshold, and where --blur-map files come from."""

    deblur: float = 1.0
    keep_bokeh: float | None = None
    map_for: Callable[[Path], Path] | None = None  # input -> its blur map file (raises when there is none)
    painted_max: float | None = None  # --blur-map-max


BLUR_MAP_SUFFIXES = (".tif", ".tiff", ".npy")
PAINTED_MAP_SUFFIXES = (".png", ".tif", ".tiff")


def blur_maps_for(found: list, source: Path, painted: bool) -> Callable[[Path], Path]:
    """``--blur-map``: one file for one input, or a folder where input NAME takes ``NAME_blur.tif`` (or .tiff,
    .npy; with ``painted`` also .png), looked up under the input's relative folder first, then at the top."""
    if source.is_file():
        if len(found) != 1:
            raise UsageError(
                f"--blur-map {source} is one map for one input; {len(found)} inputs need a folder of NAME_blur.tif"
            )
        return lambda _input: source
    suffixes = BLUR_MAP_SUFFIXES + ((".png",) if painted else ())
    by_input = {}
    for item in found:
        folders = [source / item.relative.parent] + ([source] if item.relative.parent != Path(".") else [])
        names = [folder / f"{item.relative.stem}_blur{suffix}" for folder in folders for suffix in suffixes]
        by_input[item.path] = (next((name for name in names if name.is_file()), None), names[0])

    def map_for(path: Path) -> Path:
        chosen, expected = by_input[path]
        if chosen is None:
            raise InputImageError(f"{path}: no blur map {expected.name} (or {'/'.join(suffixes)}) in {source}")
        return chosen

    return map_for


def make_upscale_processor(
    choice, scale: int, quality: int, save_maps: bool, max_pixels: int, settings: MapSettings | None = None
):
    """Load the model once and return the per-file work: read, upscale, write (and the maps with --save-maps)."""
    import torch

    from cmosx.cli._batch import Outcome, Processor
    from cmosx.cli._engine import load_upscaler, model_label
    from cmosx.cli._photos import upscale_photo
    from cmosx.io import read_image, write_image
    from cmosx.io.maps import read_blur_map, write_blur_map, write_blur_preview

    settings = settings or MapSettings()
    upscaler, model = load_upscaler(choice)
    label = model_label(model)
    sigma_max = float(model.card.sigma_max)

    def run(job, progress) -> Outcome:
        photo = read_image(job.input, max_pixels=max_pixels)
        map_path, override = None, None
        if settings.map_for is not None:
            map_path = settings.map_for(job.input)
            sigma = read_blur_map(map_path, (photo.height, photo.width), sigma_max, settings.painted_max)
            override = torch.from_numpy(sigma)[None]
        results = []

        def upscale_rgb(rgb):
            result = upscaler.upscale(rgb, progress=progress, blur_override=override)
            results.append(dataclasses.replace(result, image=None))  # the maps; the x4 image is not held
            return result.image

        upscaled = upscale_photo(photo, upscale_rgb, scale)
        notes = list(photo.notes) + write_image(upscaled, job.outputs[0], quality=quality)
        if save_maps:
            write_blur_map(results[0].blur_lr, job.outputs[1], "tiff", model=label)
            write_blur_preview(results[0].blur_lr, job.outputs[2], sigma_max, model=label)
        details = {
            "deblur": settings.deblur,
            "keep_bokeh": settings.keep_bokeh,
            "blur_map": None if map_path is None else str(map_path),
        }
        if results[0].bokeh_lr is not None:  # the share of the photo kept soft (mean weight)
            details["bokeh_share"] = round(float(results[0].bokeh_lr.mean()), 4)
        return Outcome(photo.size, upscaled.size, notes, details)

    return Processor(run=run, model=label)
