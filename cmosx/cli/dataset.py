"""``cmosx dataset``: generate and inspect BSR datasets."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from cmosx.catalog import DATASET_KERNEL, DATASET_NAMES
from cmosx.cli._common import parse_size, set_threads
from cmosx.cli.options import ThreadsOpt
from cmosx.errors import UsageError

group = typer.Typer(help="Generate and inspect BSR datasets.", no_args_is_help=True)

# The choices of --dataset, one per known dataset (members named by the part before "-bsr").
DatasetName = Enum("DatasetName", {name.removesuffix("-bsr"): name for name in DATASET_NAMES}, type=str)


class DownsamplerName(str, Enum):
    direct = "direct"
    bicubic = "bicubic"


def register(app: typer.Typer) -> None:
    app.add_typer(group, name="dataset")


@group.command(name="generate", short_help="Generate a BSR dataset (resumable).")
def generate_command(
    out: Annotated[
        Path, typer.Option("--out", help="Folder to write the dataset to (new, empty, or a run to resume).")
    ],
    dataset: Annotated[DatasetName, typer.Option("--dataset", help="Which BSR dataset.")] = DatasetName.synthetic,
    root: Annotated[
        Optional[Path],
        typer.Option(
            "--root",
            help="Raw data: for nyuv2-bsr a folder with nyu_depth_v2_labeled.mat, splits.mat and labels40.mat "
            "or classMapping40.mat; for cityscapes-bsr the Cityscapes root (leftImg8bit, disparity, camera, gtFine).",
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Base seed (scenes, lens settings, space-invariant picks).")] = 0,
    count: Annotated[
        Optional[int],
        typer.Option(
            "--count", help="synthetic-bsr: training scenes (default 800). Real sets: at most this many per split."
        ),
    ] = None,
    test_count: Annotated[int, typer.Option("--test-count", help="synthetic-bsr: test scenes per group.")] = 200,
    val_count: Annotated[int, typer.Option("--val-count", help="synthetic-bsr: validation scenes.")] = 0,
    kernel_size: Annotated[
        Optional[int], typer.Option("--kernel-size", help="21 (sigma <= 5) or 61 (sigma <= 15); default per dataset.")
    ] = None,
    size: Annotated[str, typer.Option("--size", help="synthetic-bsr HR size, HEIGHTxWIDTH.")] = "480x640",
    downsampler: Annotated[
        DownsamplerName, typer.Option("--downsampler", help="HR to LR x4.")
    ] = DownsamplerName.direct,
    noise: Annotated[float, typer.Option("--noise", help="Gaussian noise on LR, std in 8-bit levels (0 = off).")] = 0.0,
    jpeg: Annotated[Optional[int], typer.Option("--jpeg", help="JPEG quality for LR (off by default).")] = None,
    textures: Annotated[
        Optional[Path], typer.Option("--textures", help="synthetic-bsr: folder of photos to take textures from.")
    ] = None,
    photos: Annotated[
        Optional[Path],
        typer.Option("--photos", help="photo-bsr: folder of your photos (recursive; split by file name hash)."),
    ] = None,
) -> None:
    """Generate a BSR dataset (resumable: rerun the same command to continue)."""
    from tqdm import tqdm

    from cmosx.train.data.degrade import Degradation
    from cmosx.train.data.generate import generate_dataset

    name = dataset.value
    if count is not None and count < 1:
        raise UsageError(f"--count must be >= 1, got {count}")
    if test_count < 0 or val_count < 0:
        raise UsageError("--test-count and --val-count must be >= 0")
    kernel = kernel_size or DATASET_KERNEL[name]
    degradation = Degradation(scale=4, downsampler=downsampler.value, noise_sigma=noise, jpeg_quality=jpeg)
    if name == "synthetic-bsr":
        from cmosx.train.data.synthetic import SyntheticSource

        counts = {"train": 800 if count is None else count, "val": val_count, "test": test_count}
        source = SyntheticSource(seed, counts, parse_size(size, "--size", multiple=4), textures)
    elif name == "photo-bsr":
        from cmosx.train.data.photos import PhotoSource

        if photos is None:
            raise UsageError("photo-bsr needs --photos DIR (a folder of your own photos)")
        counts = {"train": 800 if count is None else count, "val": val_count, "test": test_count}
        source = PhotoSource(photos, seed, counts, parse_size(size, "--size", multiple=4))
    elif name == "nyuv2-bsr":
        from cmosx.train.data.nyuv2 import NYUv2Source

        source = NYUv2Source(root, limit=count)
    else:
        from cmosx.train.data.cityscapes import CityscapesSource

        source = CityscapesSource(root, limit=count)
    with tqdm(total=None, desc=name, unit="img") as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        info = generate_dataset(source, out, seed=seed, kernel_size=kernel, degradation=degradation, progress=progress)
    splits = ", ".join(
        f"{split} {v['count']}" + (f" x {len(v['groups'])} groups" if v["groups"] else "")
        for split, v in info["splits"].items()
    )
    typer.echo(f"{name}: {splits}; kernel {kernel} (sigma <= {info['sigma_max']:g}) -> {out}")


@group.command(name="bench", short_help="Time the synthetic-bsr renderer and samples.")
def bench_command(
    repeats: Annotated[int, typer.Option(metavar="N", min=1, help="Scenes (and samples) per measurement.")] = 6,
    threads: ThreadsOpt = 1,
    samples: Annotated[Optional[Path], typer.Option("--samples", help="Also write preview PNGs here.")] = None,
) -> None:
    """Time the synthetic-bsr renderer and samples on this machine; optionally write previews."""
    from cmosx.train.data.bench import render_speed, sample_speed, save_previews
    from cmosx.train.data.scenes import SYNTHETIC_CLASSES

    set_threads(threads)
    typer.echo(f"threads {threads}, {repeats} scenes of 640x480")
    for row in render_speed(repeats):
        typer.echo(
            f"render kernel {row['kernel']:2d} (sigma <= {row['sigma_max']:g}): {row['images_per_s']:5.2f} images/s, "
            f"{row['wall_s']:.3f} s/image wall, {row['cpu_s']:.3f} CPU-s/image, {row['layers']:.0f} layers/image"
        )
    for row in sample_speed(repeats):
        h, w = row["size"]
        rate = f"{row['samples_per_s']:5.2f} samples/s ({row['seconds']:.3f} s each)"
        typer.echo(f"synthetic-bsr sample {h}x{w} kernel 21: {rate}")
    if samples is not None:
        for path in save_previews(samples, 4, seed=0):
            typer.echo(f"wrote {path}")
    typer.echo(f"classes: {', '.join(SYNTHETIC_CLASSES)}")
