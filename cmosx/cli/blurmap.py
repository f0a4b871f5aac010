"""``cmosx blurmap``: write the estimated defocus (and semantic) maps of images."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

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
from cmosx.errors import UsageError

HELP = """Write the estimated defocus-blur map (and with --semantic the semantic map) of each image.

Per image NAME: NAME_blur.png, a colour preview (viridis, 0 to the model's sigma_max, legend bar with the sigma
values under the map); NAME_blur.tif (or NAME_blur.npy with --format npy), the float32 map: Gaussian blur sigma
in pixels of the x4 output, one value per input pixel. With --semantic: NAME_semantic.png (palette PNG, pixel
value = class id) and NAME_semantic.json (class names and colours from the model card, and the data the classes
were learnt from). The classes are the training data's: a model trained on synthetic scenes (the bundled one:
background, ground, wall, picture, plant, box, ball) marks texture/layout patches of a real photo, not its
objects; the JSON file and a note on each file then say so.

Same batch rules as upscale: files, folders, globs, --recursive, -o OUT_DIR (else beside each input),
--overwrite / --skip-existing, --dry-run, --json, torchrun sharding; exit 0 / 1 (a file failed) / 2 (usage)."""


def register(app: typer.Typer) -> None:
    app.command(name="blurmap", help=HELP, short_help="Write the estimated defocus (and semantic) maps of images.")(
        blurmap_command
    )


def blurmap_command(
    inputs: InputsArg,
    output_dir: OutputDirOpt = None,
    semantic: Annotated[
        bool, typer.Option("--semantic", help="Also write the semantic map (the training data's classes).")
    ] = False,
    map_format: Annotated[str, typer.Option("--format", help="Float map format: tiff or npy.")] = "tiff",
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    tile: TileOpt = "auto",
    overlap: OverlapOpt = 16,
    recursive: RecursiveOpt = False,
    overwrite: OverwriteOpt = False,
    skip_existing: SkipExistingOpt = False,
    dry_run: DryRunOpt = False,
    json_report: JsonOpt = False,
    quiet: QuietOpt = False,
    max_megapixels: MaxMegapixelsOpt = 100.0,
) -> None:
    from cmosx.cli import _batch
    from cmosx.cli._engine import EngineChoice, parse_tile, shard_device
    from cmosx.io.maps import MAP_FORMATS

    if map_format not in MAP_FORMATS:
        raise UsageError(f"--format must be tiff or npy for blurmap, got '{map_format}'")
    if overwrite and skip_existing:
        raise UsageError("--overwrite and --skip-existing exclude each other")
    if max_megapixels <= 0:
        raise UsageError(f"--max-megapixels must be positive, got {max_megapixels}")
    rank, world, local_rank = _batch.shard_from_environment()
    choice = EngineChoice(model, shard_device(device, local_rank, world), precision, parse_tile(tile), overlap)
    map_extension = ".tif" if map_format == "tiff" else ".npy"

    def name_outputs(found: _batch.Found) -> list[Path]:
        folder = found.path.parent if output_dir is None else output_dir / found.relative.parent
        stem = found.relative.stem
        names = [f"{stem}_blur.png", f"{stem}_blur{map_extension}"]
        if semantic:
            names += [f"{stem}_semantic.png", f"{stem}_semantic.json"]
        return [folder / name for name in names]

    found = _batch.discover_inputs(inputs, recursive, output_dir, ("_blur", "_semantic"))
    jobs = _batch.plan_jobs(found, name_outputs)
    options = _batch.BatchOptions(
        existing="overwrite" if overwrite else "skip" if skip_existing else "refuse",
        dry_run=dry_run,
        json=json_report,
        quiet=quiet,
    )
    make = lambda: make_blurmap_processor(choice, map_format, semantic, int(max_megapixels * 1e6))  # noqa: E731
    code = _batch.run_batch(_batch.shard(jobs, rank, world), make, options, rank, world)
    raise typer.Exit(code)


def make_blurmap_processor(choice, map_format: str, semantic: bool, max_pixels: int):
    """Load the model once and return the per-file work: read, estimate the maps, write them."""
    from cmosx.cli._batch import Outcome, Processor
    from cmosx.cli._engine import load_upscaler, model_label
    from cmosx.io import read_image
    from cmosx.io.maps import write_blur_map, write_blur_preview, write_semantic_map
    from cmosx.models.provenance import semantic_provenance

    upscaler, model = load_upscaler(choice)
    label = model_label(model)
    sigma_max = float(model.card.sigma_max)
    class_names = list(model.card.class_names)
    provenance = semantic_provenance(model.card)

    def run(job, progress) -> Outcome:
        photo = read_image(job.input, max_pixels=max_pixels)
        maps = upscaler.estimate_maps(photo.rgb(), progress=progress)
        write_blur_preview(maps.blur_lr, job.outputs[0], sigma_max, model=label)
        write_blur_map(maps.blur_lr, job.outputs[1], map_format, model=label)
        notes = list(photo.notes)
        if semantic:
            write_semantic_map(maps.semantic_lr, class_names, job.outputs[2], job.outputs[3], provenance)
            notes += [provenance["note"]] if provenance["note"] else []
        return Outcome(photo.size, photo.size, notes)

    return Processor(run=run, model=label)
