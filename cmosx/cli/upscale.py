"""``cmosx upscale``: upscale photos x4 (folders, files, globs; JPEG/PNG/TIFF/WebP/BMP/RAW)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cmosx.cli._common import (
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
    report_errors,
)
from cmosx.errors import UsageError

HELP = """Upscale photos x4 (files, folders, globs; JPEG/PNG/TIFF/WebP/BMP and camera RAW).

--scale 4 is the model's native factor. --scale 2 and 3 run the x4 model and then shrink the result with an
antialiased bicubic filter to the requested size.

Outputs go under -o OUT_DIR with the input's relative path and stem (folder trees mirrored with --recursive), or
beside each input as NAME_x4.EXT without -o. Folder and glob inputs skip hidden files, Thumbs.db/.DS_Store,
OUT_DIR itself, and earlier NAME_x4 outputs lying beside NAME.

--format same keeps the input's format; RAW inputs become 16-bit TIFF. 16-bit inputs stay 16-bit in PNG and
TIFF; grayscale stays grayscale; alpha is kept; EXIF (orientation applied and reset to 1, sizes updated,
thumbnail dropped), XMP and the ICC profile are carried over.

Existing outputs are refused unless --overwrite (replace) or --skip-existing (leave, do no work). A bad file
is reported in one line and the batch goes on. Exit codes: 0 all done, 1 some file failed, 2 usage error.
Under torchrun (RANK / WORLD_SIZE set), each process takes its share of the files and its own GPU."""


def register(app: typer.Typer) -> None:
    app.command(name="upscale", help=HELP, short_help="Upscale photos x4 (files, folders, globs; RAW too).")(
        upscale_command
    )


@report_errors
def upscale_command(
    inputs: InputsArg,
    output_dir: OutputDirOpt = None,
    scale: Annotated[int, typer.Option(help="4 native; 2 and 3 = x4 then antialiased downscale.")] = 4,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    tile: TileOpt = "auto",
    overlap: OverlapOpt = 16,
    output_format: Annotated[str, typer.Option("--format", help="same, png, jpeg, tiff or webp.")] = "same",
    quality: Annotated[int, typer.Option(help="JPEG/WebP quality, 1-100.")] = 95,
    recursive: RecursiveOpt = False,
    overwrite: OverwriteOpt = False,
    skip_existing: SkipExistingOpt = False,
    dry_run: DryRunOpt = False,
    json_report: JsonOpt = False,
    save_maps: Annotated[
        bool, typer.Option("--save-maps", help="Also write NAME_blur.tif and NAME_blur.png (see blurmap).")
    ] = False,
    quiet: QuietOpt = False,
    max_megapixels: MaxMegapixelsOpt = 100.0,
) -> None:
    from cmosx.cli import _batch
    from cmosx.cli._engine import EngineChoice, parse_tile, shard_device
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
    output_extension(Path("x.png"), output_format)  # validates --format
    rank, world, local_rank = _batch.shard_from_environment()
    choice = EngineChoice(model, shard_device(device, local_rank, world), precision, parse_tile(tile), overlap)

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
    found = _batch.discover_inputs(inputs, recursive, output_dir, earlier)
    jobs = _batch.plan_jobs(found, name_outputs)
    options = _batch.BatchOptions(
        existing="overwrite" if overwrite else "skip" if skip_existing else "refuse",
        dry_run=dry_run,
        json=json_report,
        quiet=quiet,
    )
    make = lambda: make_upscale_processor(choice, scale, quality, save_maps, int(max_megapixels * 1e6))  # noqa: E731
    code = _batch.run_batch(_batch.shard(jobs, rank, world), make, options, rank, world)
    raise typer.Exit(code)


def make_upscale_processor(choice, scale: int, quality: int, save_maps: bool, max_pixels: int):
    """Load the model once and return the per-file work: read, upscale, write (and the maps with --save-maps)."""
    from cmosx.cli._batch import Outcome, Processor
    from cmosx.cli._engine import load_upscaler, model_label
    from cmosx.cli._photos import upscale_photo
    from cmosx.io import read_image, write_image
    from cmosx.io.maps import write_blur_map, write_blur_preview

    upscaler, model = load_upscaler(choice)
    label = model_label(model)

    def run(job, progress) -> Outcome:
        photo = read_image(job.input, max_pixels=max_pixels)
        results = []

        def upscale_rgb(rgb):
            result = upscaler.upscale(rgb, progress=progress)
            results.append(result)
            return result.image

        upscaled = upscale_photo(photo, upscale_rgb, scale)
        notes = list(photo.notes) + write_image(upscaled, job.outputs[0], quality=quality)
        if save_maps:
            write_blur_map(results[0].blur_lr, job.outputs[1], "tiff", model=label)
            write_blur_preview(results[0].blur_lr, job.outputs[2], float(model.card.sigma_max), model=label)
        return Outcome(photo.size, upscaled.size, notes)

    return Processor(run=run, model=label)
