"""``cmosx eval``: evaluate a model through the engine on BSR test groups with the paper's metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from cmosx.cli._common import set_threads
from cmosx.cli.options import DeviceOpt, JsonOpt, PrecisionOpt, QuietOpt, ThreadsOpt
from cmosx.errors import UsageError


def register(app: typer.Typer) -> None:
    app.command(
        name="eval",
        help="Evaluate a model as cmosx upscale runs it, on BSR test groups, with the paper's metrics.",
        short_help="Evaluate a model on BSR test groups (paper's metrics).",
    )(evaluate_command)


def parse_groups(text: str) -> list[int]:
    """``"1-5"`` -> [1, 2, 3, 4, 5]; ``"1,3"`` -> [1, 3]."""
    groups: set[int] = set()
    try:
        for part in text.split(","):
            if "-" in part:
                a, b = (int(x) for x in part.split("-", 1))
                groups.update(range(a, b + 1))
            else:
                groups.add(int(part))
    except ValueError:
        raise UsageError(f"--groups must look like 1-5 or 1,3; got {text!r}") from None
    if not groups or not groups <= {1, 2, 3, 4, 5}:
        raise UsageError(f"--groups must name test groups among 1-5; got {text!r}")
    return sorted(groups)


def evaluate_command(
    dataset: Annotated[
        Optional[str],
        typer.Option("--dataset", help="synthetic-bsr | nyuv2-bsr | cityscapes-bsr (photo-bsr: see --photos)."),
    ] = None,
    model: Annotated[
        Optional[str], typer.Option("--model", help="Run folder, model folder/file, bundled name or hf:// reference.")
    ] = None,
    baseline: Annotated[
        Optional[str],
        typer.Option(
            "--baseline",
            help="A second model/run, e.g. a blur-unaware SR baseline (default: the model's baseline companion).",
        ),
    ] = None,
    upper: Annotated[
        Optional[str],
        typer.Option(
            "--upper",
            help="SR network of the upper-bound row (default: the model's upper companion, else its sr-stage run,"
            " else the model's own SR network), fed the ground-truth blur map.",
        ),
    ] = None,
    root: Annotated[
        Optional[Path],
        typer.Option(
            "--root",
            help="Dataset folder (synthetic-bsr renders its test groups without)."
            " A raw NYUv2/Cityscapes folder is generated into ROOT-bsr on first use.",
        ),
    ] = None,
    photos: Annotated[
        Optional[Path],
        typer.Option(
            "--photos",
            help="Evaluate photo-bsr scenes built from this folder's held-out photos (the --photo-split of its"
            " photos, split by a hash of each file's path) instead of --dataset's test groups.",
        ),
    ] = None,
    photo_split: Annotated[str, typer.Option("--photo-split", help="With --photos: test or val.")] = "test",
    per_photo: Annotated[int, typer.Option("--per-photo", help="With --photos: 480 x 640 scenes per photo.")] = 3,
    by_photo: Annotated[
        bool, typer.Option("--by-photo", help="With --photos: one column per photo (the mean stays the same).")
    ] = False,
    groups: Annotated[str, typer.Option("--groups", help="Test groups, e.g. 1-5 or 1,3.")] = "1-5",
    limit: Annotated[Optional[int], typer.Option("--limit", help="At most N images per group.")] = None,
    border: Annotated[Optional[int], typer.Option("--border", help="Pixels cropped per side (default: scale).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="synthetic-bsr without --root, --photos: scene seed.")] = 0,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    threads: ThreadsOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    import json

    from cmosx.train.evaluate import evaluate, format_table
    from cmosx.train.runs import load_companion_networks, load_networks, sr_stage_source
    from cmosx.train.sources import open_photo_split, open_test_group

    set_threads(threads)
    if photos is not None and dataset not in (None, "photo-bsr"):
        raise UsageError(f"--photos evaluates photo-bsr scenes; it does not combine with --dataset {dataset}")
    if photos is None and dataset in (None, "photo-bsr"):
        raise UsageError("give --dataset (synthetic-bsr, nyuv2-bsr, cityscapes-bsr) or --photos DIR (photo-bsr)")
    wanted = parse_groups(groups)
    if limit is not None and limit < 1:
        raise UsageError("--limit must be >= 1")
    nets = load_networks(model)  # None: the bundled default model
    base = load_networks(baseline) if baseline else load_companion_networks(nets, "baseline")
    upper_nets = load_networks(upper) if upper else load_companion_networks(nets, "upper")
    if upper_nets is None and sr_stage_source(nets):
        upper_nets = load_networks(sr_stage_source(nets))
    upper_nets = upper_nets or nets
    data: dict = {}
    if photos is not None:
        dataset = "photo-bsr"
        split_set, data = open_photo_split(photos, photo_split, seed=seed, per_photo=per_photo)
        sets = {photo_split: split_set}
        if by_photo:
            from pathlib import PurePosixPath

            from torch.utils.data import Subset

            sets = {
                PurePosixPath(name).stem: Subset(split_set, range(i * per_photo, (i + 1) * per_photo))
                for i, name in enumerate(data["photos"])
            }
    else:
        sets = {g: open_test_group(dataset, root, g, seed=seed)[0] for g in wanted}
    bar = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if quiet:
            return
        if bar is None:
            from tqdm import tqdm

            bar = tqdm(total=total, unit="img", dynamic_ncols=True, leave=False)
        bar.update(1)

    try:
        report = evaluate(
            nets,
            sets,
            dataset_name=dataset,
            baseline=base,
            upper=upper_nets,
            border=border,
            limit=limit,
            device=device,
            precision=precision,
            progress=progress,
        )
        report.data = data
    finally:
        if bar is not None:
            bar.close()
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        typer.echo(format_table(report))
