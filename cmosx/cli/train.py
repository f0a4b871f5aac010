"""``cmosx train``: the whole recipe into a usable model, or one stage (``--stage``), on a BSR dataset.

Without ``--stage``: estimator, upper-bound SR, blur-unaware baseline and blind stage into ``OUT/<step>``,
then the model in ``OUT/model`` and its evaluation (:mod:`cmosx.train.recipe`).
Multi-process: ``torchrun --nproc-per-node N -m cmosx train ...`` (DDP; gloo on CPU, NCCL on GPUs).
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from cmosx.catalog import DATASET_NAMES, PRESET_HARDWARE
from cmosx.cli._common import parse_size
from cmosx.cli.options import DeviceOpt, QuietOpt, SpecOpt, ThreadsOpt
from cmosx.errors import UsageError
from cmosx.launch import launch_from_environment


def register(app: typer.Typer) -> None:
    app.command(name="train", help=HELP, short_help="Train a model on a BSR dataset (whole recipe or one stage).")(
        train_command
    )


HELP = """Train a model on a BSR dataset: the whole recipe into OUT/model, or one --stage.

Without --stage: the CMOS estimator, the SR network on ground-truth maps (the upper bound), the blur-unaware
baseline and the blind stage on the frozen estimator, each in OUT/<step>; then the model in OUT/model
(model.safetensors, config.json, upper/baseline companions) and its evaluation. Use it with
'cmosx upscale --model OUT/model'. Interrupted? Run the same command with --resume.

Raw data: --root, else $CMOSX_DATA/cityscapes (nyuv2), else ~/.cache/cmosx/data/cityscapes (nyuv2); the BSR
set is generated once into ROOT-bsr (or ~/.cache/cmosx/bsr when ROOT's folder is read-only).
synthetic-bsr needs no data (scenes are rendered on the fly)."""


def train_command(
    dataset: Annotated[str, typer.Option("--dataset", help=" | ".join(DATASET_NAMES))],
    stage: Annotated[
        Optional[str],
        typer.Option("--stage", help="Run one stage: estimator (CMOS) | sr (RRDB-SFT, GT maps) | blind. Default: all."),
    ] = None,
    spec: SpecOpt = None,
    root: Annotated[
        Optional[Path],
        typer.Option(
            "--root",
            help="Raw NYUv2/Cityscapes folder (default $CMOSX_DATA/nyuv2 or /cityscapes, else under"
            " ~/.cache/cmosx/data), generated into ROOT-bsr on first use; or a folder from 'cmosx dataset"
            " generate'. synthetic-bsr streams without one.",
        ),
    ] = None,
    out: Annotated[
        Optional[Path],
        typer.Option("--out", help="Output folder (default runs/DATASET-SPEC; with --stage runs/DATASET-SPEC-STAGE)."),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume", help="Continue: finished steps are kept, the running one resumes from its newest checkpoint."
        ),
    ] = False,
    preset: Annotated[
        Optional[str],
        typer.Option(
            "--preset",
            help=f"Per-stage schedules. cpu (default): for {PRESET_HARDWARE['cpu']}."
            f" paper: for {PRESET_HARDWARE['paper']}.",
        ),
    ] = None,
    steps: Annotated[Optional[int], typer.Option("--steps", help="Optimizer steps of every stage.")] = None,
    batch_size: Annotated[
        Optional[int], typer.Option("--batch-size", help="Batch size per process, every stage.")
    ] = None,
    crop: Annotated[Optional[str], typer.Option("--crop", help="HR crop: N or HxW (multiples of 4).")] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Peak learning rate of every stage.")] = None,
    estimator_steps: Annotated[Optional[int], typer.Option("--estimator-steps", help="Steps of the estimator.")] = None,
    sr_steps: Annotated[
        Optional[int], typer.Option("--sr-steps", help="Steps of the SR stage (upper bound and baseline alike).")
    ] = None,
    blind_steps: Annotated[Optional[int], typer.Option("--blind-steps", help="Steps of the blind stage.")] = None,
    estimator_batch_size: Annotated[Optional[int], typer.Option("--estimator-batch-size", help="Batch.")] = None,
    sr_batch_size: Annotated[Optional[int], typer.Option("--sr-batch-size", help="Batch.")] = None,
    blind_batch_size: Annotated[Optional[int], typer.Option("--blind-batch-size", help="Batch.")] = None,
    estimator_lr: Annotated[Optional[float], typer.Option("--estimator-lr", help="Its peak learning rate.")] = None,
    sr_lr: Annotated[Optional[float], typer.Option("--sr-lr", help="Its peak learning rate.")] = None,
    blind_lr: Annotated[Optional[float], typer.Option("--blind-lr", help="Its peak learning rate.")] = None,
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
        typer.Option(
            "--export",
            help="After training, export the model: a folder path, or a NAME (into weights/, source checkouts only).",
        ),
    ] = None,
    export_eval: Annotated[
        int, typer.Option("--export-eval", help="Images per test group evaluated for the model card (0: none).")
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
    threads: ThreadsOpt = None,
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
    device: DeviceOpt = "auto",
    quiet: QuietOpt = False,
) -> None:
    from cmosx.train.config import make_config, parse_quality_range
    from cmosx.train.runs import RUN_FILE, read_run_info
    from cmosx.train.sources import raw_data_root

    raw_root = raw_data_root(dataset, root)
    jpeg_range = parse_quality_range(lr_jpeg) if lr_jpeg else (None, None)
    overrides = dict(
        dataset=dataset,
        spec=spec,
        root=str(raw_root) if raw_root else None,
        steps=steps,
        batch_size=batch_size,
        crop=parse_size(crop, "--crop", square_ok=True) if crop else None,
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
        scene_size=parse_size(scene_size, "--scene-size", square_ok=True) if scene_size else None,
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
    per_stage = {
        "estimator": dict(steps=estimator_steps, batch_size=estimator_batch_size, lr=estimator_lr),
        "sr": dict(steps=sr_steps, batch_size=sr_batch_size, lr=sr_lr),
        "blind": dict(steps=blind_steps, batch_size=blind_batch_size, lr=blind_lr),
    }
    command = "cmosx " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    if stage is None:
        if export:
            raise UsageError("the whole recipe exports to OUT/model itself; --export goes with --stage blind")
        _run_recipe(dataset, spec, out, overrides, per_stage, preset, resume, device, command, export_eval, quiet)
        return
    for other, values in per_stage.items():
        given = [f"--{other}-{k.replace('_', '-')}" for k, v in values.items() if v is not None]
        if given and other != stage:
            raise UsageError(f"{', '.join(given)}: for the {other} stage, not --stage {stage}")
        overrides.update({k: v for k, v in values.items() if v is not None and other == stage})
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
    _prepare_data(config.dataset, config.root, quiet)

    from cmosx.train.trainer import run_training

    bar = None

    def progress(report) -> None:
        nonlocal bar
        if quiet:
            return
        if bar is None:
            bar = _step_bar(report.total_steps, report.step - 1, stage)
        _advance(bar, report)

    try:
        result = run_training(config, run_dir, resume=resume, progress=progress, device=device, command=command)
    finally:
        if bar is not None:
            bar.close()
    if not launch_from_environment().is_main:
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


def _step_bar(total: int, initial: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="step", desc=desc, dynamic_ncols=True)


def _advance(bar, report) -> None:
    bar.update(1)
    bar.set_postfix(loss=f"{report.loss:.4f}", lr=f"{report.lr:.2e}", img_s=f"{report.samples_per_s:.1f}")


def _prepare_data(dataset: str, root: str | None, quiet: bool) -> None:
    """Generate the BSR set from the raw data if it is not there yet (saying where it goes), with a bar."""
    from cmosx.train.sources import ensure_dataset, generated_folder, generation_needed, is_dataset_folder

    if root is None or is_dataset_folder(root) or dataset in ("synthetic-bsr", "photo-bsr"):
        ensure_dataset(dataset, root)  # a folder's name and layout are checked here
        return
    target = generated_folder(root)
    bar = None
    if generation_needed(target) and launch_from_environment().is_main and not quiet:
        typer.echo(f"generating the {dataset} BSR set from {root} into {target} (once; resumable)", err=True)

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if quiet:
            return
        if bar is None:
            from tqdm import tqdm

            bar = tqdm(total=total, initial=done - 1, unit="img", desc="BSR set", dynamic_ncols=True)
        bar.update(1)

    try:
        ensure_dataset(dataset, root, progress=progress)
    finally:
        if bar is not None:
            bar.close()


def _run_recipe(dataset, spec, out, overrides, per_stage, preset, resume, device, command, eval_images, quiet):
    """The whole recipe (:mod:`cmosx.train.recipe`) with a bar per step and a line per finished step."""
    from cmosx.train.evaluate import EvalReport, format_table
    from cmosx.train.recipe import RECIPE, RecipeProgress, plan_recipe, run_recipe

    out = out or Path("runs") / f"{dataset}-{spec or 'lite'}"
    plan = plan_recipe(out, overrides, per_stage, preset=preset, resume=resume)
    _prepare_data(dataset, overrides["root"], quiet)

    class Lines(RecipeProgress):
        bar = None

        def close(self) -> None:
            if self.bar is not None:
                self.bar.close()
                self.bar = None

        def step_started(self, index, planned, start_step) -> None:
            self.close()
            if not quiet:
                desc = f"{index + 1}/{len(RECIPE)} {planned.step.name}"
                self.bar = _step_bar(planned.config.steps, start_step, desc)

        def trained(self, planned, report) -> None:
            if self.bar is not None:
                _advance(self.bar, report)

        def step_finished(self, summary) -> None:
            self.close()
            if not quiet:
                typer.echo(_finished_line(summary))

        def evaluating(self, done: int, total: int) -> None:
            if quiet:
                return
            if self.bar is None:
                from tqdm import tqdm

                self.bar = tqdm(total=total, unit="img", desc="evaluation", dynamic_ncols=True)
            self.bar.update(1)

    lines = Lines()
    try:
        result = run_recipe(
            plan, out, resume=resume, device=device, command=command, eval_images=eval_images, progress=lines
        )
    finally:
        lines.close()
    if not launch_from_environment().is_main:
        return
    typer.echo(f"model: {result.model} (sha256 {result.sha256}); use it: cmosx upscale --model {result.model} PHOTO")
    if result.metrics:
        typer.echo(format_table(EvalReport(**result.metrics)))


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def _finished_line(summary) -> str:
    """``sr  3000 steps in 1 h 02 min; validation (synthetic-bsr val, 8 images): PSNR-Y 27.10 dB (bicubic 25.4)``."""
    v = summary.validation
    if "blur_psnr" in v:
        figure = f"blur-map PSNR {v['blur_psnr']:.2f} dB"
        figure += f", mIoU {100 * v['miou']:.1f} %" if v.get("miou") is not None else ""
    else:
        figure = f"PSNR-Y {v['psnr_y']:.2f} dB (bicubic {v['bicubic_psnr_y']:.2f})"
    kept = " (finished earlier, kept)" if summary.kept else ""
    return (
        f"{summary.name:<9} {summary.title}: {summary.steps} steps in {_duration(summary.wall_s)}{kept}; "
        f"validation ({v['on']}, {v['images']} images): {figure}"
    )
