"""``cmosx train``: train CMOS, RRDB-SFT or the blind pipeline on a BSR dataset.

Multi-process: ``torchrun --nproc-per-node N -m cmosx train ...`` (DDP; gloo on CPU, NCCL on GPUs).
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from cmosx.cli._common import report_errors
from cmosx.errors import UsageError


def register(app: typer.Typer) -> None:
    app.command(name="train", help="Train CMOS, RRDB-SFT or the blind pipeline on a BSR dataset.")(train_command)


@report_errors
def train_command(
    dataset: Annotated[str, typer.Option("--dataset", help="synthetic-bsr | photo-bsr | nyuv2-bsr | cityscapes-bsr")],
    stage: Annotated[str, typer.Option("--stage", help="estimator (CMOS) | sr (RRDB-SFT, GT maps) | blind")],
    spec: Annotated[Optional[str], typer.Option("--spec", help="Model size: tiny | lite | paper.")] = None,
    root: Annotated[
        Optional[Path],
        typer.Option(
            "--root",
            help="Dataset folder (synthetic-bsr streams without one)."
            " A raw NYUv2/Cityscapes folder is generated into ROOT-bsr on first use.",
        ),
    ] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Run folder (default runs/DATASET-SPEC-STAGE).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the run folder's newest checkpoint.")] = False,
    preset: Annotated[Optional[str], typer.Option("--preset", help="Recipe: cpu (default) | paper.")] = None,
    steps: Annotated[Optional[int], typer.Option("--steps", help="Total optimizer steps.")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Batch size per process.")] = None,
    crop: Annotated[Optional[str], typer.Option("--crop", help="HR crop: N or HxW (multiples of 4).")] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Peak learning rate.")] = None,
    warmup: Annotated[Optional[int], typer.Option("--warmup", help="Warm-up steps.")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Seed of weights, data and augmentation.")] = None,
    estimator: Annotated[
        Optional[str], typer.Option("--estimator", help="blind: estimator run folder or model to freeze.")
    ] = None,
    init: Annotated[
        Optional[str], typer.Option("--init", help="Run folder or model whose network starts this stage (fine-tuning).")
    ] = None,
    export: Annotated[
        Optional[str],
        typer.Option("--export", help="After training, export the model: a NAME (into weights/) or a folder path."),
    ] = None,
    export_eval: Annotated[
        int, typer.Option("--export-eval", help="Images per test group evaluated for the exported card (0: none).")
    ] = 20,
    gia: Annotated[Optional[str], typer.Option("--gia", help="GIA ablation: none | F | FC | FCS.")] = None,
    single_task: Annotated[bool, typer.Option("--single-task", help="estimator: blur loss only.")] = False,
    no_aux: Annotated[bool, typer.Option("--no-aux", help="estimator: no auxiliary supervision.")] = False,
    no_semantics_in_sr: Annotated[
        bool, typer.Option("--no-semantics-in-sr", help="sr/blind: all-zero semantic input.")
    ] = False,
    space_invariant_only: Annotated[
        bool, typer.Option("--space-invariant-only", help="Train on space-invariant blur only.")
    ] = False,
    unconditioned: Annotated[
        bool, typer.Option("--unconditioned", help="sr/blind: blur-unaware baseline (prior inputs zeroed).")
    ] = False,
    amp: Annotated[Optional[str], typer.Option("--amp", help="auto (fp16 on CUDA) | off | bf16 | fp16.")] = None,
    threads: Annotated[Optional[int], typer.Option("--threads", help="torch CPU threads.")] = None,
    workers: Annotated[Optional[int], typer.Option("--workers", help="DataLoader worker processes.")] = None,
    checkpoint_every: Annotated[
        Optional[int], typer.Option("--checkpoint-every", help="Steps between checkpoints.")
    ] = None,
    photos: Annotated[
        Optional[Path],
        typer.Option("--photos", help="photo-bsr: a folder of your photos (recursive); its train split is used."),
    ] = None,
    procedural_share: Annotated[
        Optional[float],
        typer.Option("--procedural-share", help="photo-bsr: share of procedural scenes mixed in (0.25)."),
    ] = None,
    scene_size: Annotated[
        Optional[str], typer.Option("--scene-size", help="synthetic-bsr: HxW each scene is rendered at.")
    ] = None,
    crops_per_scene: Annotated[
        Optional[int], typer.Option("--crops-per-scene", help="synthetic-bsr: steps sharing one rendered scene.")
    ] = None,
    lr_noise: Annotated[
        Optional[float], typer.Option("--lr-noise", help="synthetic-bsr: LR noise std (8-bit levels).")
    ] = None,
    lr_jpeg: Annotated[
        Optional[str], typer.Option("--lr-jpeg", help="synthetic-bsr: LR JPEG quality Q, or a range QMIN-QMAX.")
    ] = None,
    lr_jpeg_probability: Annotated[
        Optional[float], typer.Option("--lr-jpeg-probability", help="synthetic-bsr: share of LR images made JPEG.")
    ] = None,
    blur_weight: Annotated[
        Optional[float],
        typer.Option("--blur-weight", help="estimator: weight of the blur L1 (1); the auxiliary one gets half."),
    ] = None,
    seg_weight: Annotated[
        Optional[float],
        typer.Option("--seg-weight", help="estimator: weight of the semantic CE (1); the auxiliary one gets half."),
    ] = None,
    pixel_loss: Annotated[
        Optional[str], typer.Option("--pixel-loss", help="sr/blind: l1 (the paper's, default) or l2 (MSE).")
    ] = None,
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda[:N].")] = "auto",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    from cmosx.train.config import make_config, parse_crop, parse_quality_range
    from cmosx.train.runs import RUN_FILE, read_run_info

    jpeg_range = parse_quality_range(lr_jpeg) if lr_jpeg else (None, None)
    overrides = dict(
        dataset=dataset,
        spec=spec,
        root=str(root) if root else None,
        steps=steps,
        batch_size=batch_size,
        crop=parse_crop(crop) if crop else None,
        lr=lr,
        warmup_steps=warmup,
        seed=seed,
        estimator=estimator,
        init=init,
        gia_mode=gia,
        single_task=single_task or None,
        no_aux=no_aux or None,
        semantics_in_sr=False if no_semantics_in_sr else None,
        space_invariant_only=space_invariant_only or None,
        unconditioned=unconditioned or None,
        amp=amp,
        threads=threads,
        num_workers=workers,
        checkpoint_every=checkpoint_every,
        photos=str(photos) if photos else None,
        procedural_share=procedural_share,
        scene_size=parse_crop(scene_size) if scene_size else None,
        crops_per_scene=crops_per_scene,
        lr_noise=lr_noise,
        lr_jpeg=jpeg_range[0],
        lr_jpeg_max=jpeg_range[1],
        lr_jpeg_probability=lr_jpeg_probability,
        blur_weight=blur_weight,
        aux_blur_weight=None if blur_weight is None else blur_weight / 2,
        seg_weight=seg_weight,
        aux_seg_weight=None if seg_weight is None else seg_weight / 2,
        pixel_loss=pixel_loss,
    )
    run_dir = out or Path("runs") / f"{dataset}-{spec or 'lite'}-{stage}"
    if resume and (run_dir / RUN_FILE).is_file():
        saved = read_run_info(run_dir).config.to_dict()
        saved.update({k: v for k, v in overrides.items() if v is not None})
        if preset is not None and preset != saved["preset"]:
            raise UsageError(f"{run_dir}: the run used --preset {saved['preset']}, not {preset}")
        saved.pop("stage")
        config = make_config(stage, **saved)
    else:
        config = make_config(stage, preset=preset or "cpu", **overrides)
    if export and config.stage != "blind":
        raise UsageError("--export needs the blind stage (a model is a CMOS estimator plus an SR network)")

    from cmosx.train.trainer import run_training

    bar = None

    def progress(report) -> None:
        nonlocal bar
        if quiet:
            return
        if bar is None:
            from tqdm import tqdm

            bar = tqdm(total=report.total_steps, initial=report.step - 1, unit="step", dynamic_ncols=True)
        bar.update(1)
        bar.set_postfix(loss=f"{report.loss:.4f}", lr=f"{report.lr:.2e}", img_s=f"{report.samples_per_s:.1f}")

    command = "cmosx " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    try:
        result = run_training(config, run_dir, resume=resume, progress=progress, device=device, command=command)
    finally:
        if bar is not None:
            bar.close()
    if int(os.environ.get("RANK", "0")) != 0:
        return
    typer.echo(
        f"{run_dir}: steps {result.start_step} -> {result.final_step} in {result.wall_s:.1f} s "
        f"({result.steps_per_s:.3f} steps/s); checkpoints in {run_dir / 'checkpoints'}"
    )
    if export:
        from cmosx.train.export import export_run

        written = export_run(run_dir, export, eval_images=export_eval)
        typer.echo(f"exported {written.weights} (sha256 {written.sha256}) and {written.config}")
        for row, per_group in written.metrics.get("rows", {}).items():
            mean = per_group.get("mean", {})
            typer.echo(f"  {row:<12} mean: " + ", ".join(f"{k} {v:.4f}" for k, v in mean.items() if v is not None))
