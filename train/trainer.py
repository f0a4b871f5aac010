"""The training loop shared by the three stages (and every ablation).

``train(config, run_dir)`` builds the stage (:mod:`cmosx.train.stages`), Adam with the paper's betas, the
warm-up + cosine schedule, AMP where it applies, and runs optimizer steps ``start .. config.steps - 1``.
Every ``checkpoint_every`` steps (and at the end) the full state goes to an atomic checkpoint; with
``resume=True`` the newest checkpoint is loaded and training continues to the same result an
uninterrupted run gives (the data of step ``s`` depends only on the seed and ``s``:
:mod:`cmosx.train.samples`). Under ``torchrun`` the stage is wrapped in DDP and each rank draws its own
samples of every step.

Progress goes to a callback (the CLI draws a tqdm bar) and, every ``log_every`` steps, one JSON line in
``RUN/metrics.jsonl``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from cmosx.errors import DeviceError, ModelError, UsageError
from cmosx.io.atomic import atomic_write_json, atomic_write_text
from cmosx.launch import launch_from_environment
from cmosx.train import distributed as dist_utils
from cmosx.train.checkpoint import (
    capture_rng_state,
    checkpoint_path,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    restore_rng_state,
    save_checkpoint,
)
from cmosx.train.config import TrainConfig, resume_differences
from cmosx.train.runs import (
    DATA_FILE,
    RUN_FILE,
    RunInfo,
    build_cmos,
    build_sr,
    conditioning_of,
    load_networks,
    model_spec_for,
    read_run_info,
)
from cmosx.train.samples import StepBatches, TrainSamples, split_steps
from cmosx.train.stages import BlindStage, EstimatorStage, SRStage, part_names

METRICS_FILE = "metrics.jsonl"


@dataclass
class StepReport:
    """What the progress callback receives after each optimizer step (``step`` counts done steps)."""

    step: int
    total_steps: int
    loss: float
    parts: dict[str, float]
    lr: float
    steps_per_s: float
    samples_per_s: float


@dataclass
class TrainResult:
    run_dir: Path
    start_step: int
    final_step: int
    losses: list[float] = field(default_factory=list)  # loss of every step run by this call (this rank)
    wall_s: float = 0.0
    steps_per_s: float = 0.0
    stage: nn.Module | None = None  # the trained stage module (networks under .cmos / .sr)


def _amp_dtype(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    if config.amp == "off" or (config.amp == "auto" and device.type != "cuda"):
        return None
    if config.amp == "bf16":
        return torch.bfloat16
    if device.type != "cuda":
        raise DeviceError("fp16 AMP needs a CUDA device; use --amp bf16 or off on the CPU")
    return torch.float16


def _collate(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    return {
        key: torch.stack([item[key] for item in items]) for key in ("hr", "lr", "blur", "labels", "space_invariant")
    }


class _CollateSteps:
    """DataLoader collate of a :class:`StepBatches` chunk: one stacked batch per optimizer step (picklable)."""

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size

    def __call__(self, items: list[dict[str, Any]]) -> list[dict[str, torch.Tensor]]:
        return [_collate(step_items) for step_items in split_steps(items, self.batch_size)]


def _init_from(config: TrainConfig, network: str, num_classes: int):
    """The ``network`` ("cmos" or "sr") of the run or model named by ``--init``, and its spec."""
    init = load_networks(config.init)
    module = getattr(init, network)
    if module is None:
        what = "CMOS estimator" if network == "cmos" else "SR network"
        raise ModelError(f"{config.init}: holds no {what} to initialise from")
    if init.card.num_classes != num_classes:
        raise ModelError(
            f"{config.init}: {network} network has {init.card.num_classes} classes, the dataset {num_classes}"
        )
    return module, getattr(init.card.spec, network)


def build_stage(
    config: TrainConfig, num_classes: int, class_names: list[str], sigma_max: float
) -> tuple[nn.Module, RunInfo]:
    """The stage module with freshly initialised networks, or loaded ones (``--init``, blind's estimator).

    ``--init`` starts the trained network from another run or model: the estimator stage takes its CMOS,
    the sr and blind stages its SR network (the recorded spec is then the one of those weights).
    """
    spec = model_spec_for(config)
    reads = conditioning_of(config)
    if config.stage == "estimator":
        weights = config.estimator_loss_weights()
        cmos = build_cmos(spec, num_classes)
        if config.init:
            cmos, cmos_spec = _init_from(config, "cmos", num_classes)
            spec = dataclasses.replace(spec, cmos=cmos_spec)
        stage: nn.Module = EstimatorStage(cmos, weights)
    elif config.stage == "sr":
        sr = build_sr(spec, num_classes)
        if config.init:
            sr, sr_spec = _init_from(config, "sr", num_classes)
            spec = dataclasses.replace(spec, sr=sr_spec)
        stage = SRStage(sr, num_classes, spec.scale, reads.blur, reads.semantics, config.pixel_loss)
    else:
        if not config.estimator:
            raise UsageError("the blind stage needs --estimator (an estimator run folder or a model)")
        est = load_networks(config.estimator)
        if est.cmos is None:
            raise ModelError(f"{config.estimator}: holds no CMOS estimator")
        if est.card.num_classes != num_classes:
            raise ModelError(
                f"{config.estimator}: estimator has {est.card.num_classes} classes, the dataset {num_classes}"
            )
        sr_spec = spec.sr
        sr = build_sr(spec, num_classes)
        if config.init:
            sr, sr_spec = _init_from(config, "sr", num_classes)
        spec = dataclasses.replace(spec, cmos=est.card.spec.cmos, sr=sr_spec)
        stage = BlindStage(est.cmos, sr, sigma_max, reads.blur, reads.semantics, config.pixel_loss)
    info = RunInfo(config=config, spec=spec, num_classes=num_classes, class_names=class_names, sigma_max=sigma_max)
    return stage, info


def check_resumable(run_dir: Path, config: TrainConfig) -> None:
    """UsageError if ``config`` cannot continue the run in ``run_dir`` (other settings, or fewer steps than done)."""
    differing = resume_differences(config, read_run_info(run_dir).config)
    if differing:
        raise UsageError(f"{run_dir}: --resume with different settings ({', '.join(differing)}) than the run")
    done = max((step for step, _ in list_checkpoints(run_dir)), default=0)
    if done > config.steps:
        raise UsageError(f"{run_dir}: the run is at step {done} already; --steps {config.steps} would go back")


def _prepare_run_dir(run_dir: Path, config: TrainConfig, resume: bool) -> Path | None:
    """Checks before training; returns the checkpoint to resume from (None for a fresh run)."""
    ckpt = latest_checkpoint(run_dir)
    if resume:
        if ckpt is None:
            return None  # nothing saved yet: start from scratch
        check_resumable(run_dir, config)
        return ckpt
    if ckpt is not None:
        raise UsageError(f"{run_dir}: the run folder already has checkpoints; pass --resume or another --out")
    return None


def _truncate_log(path: Path, last_step: int) -> None:
    """Drop log lines written after the checkpoint we resume from (a killed run may have logged more)."""
    if not path.is_file():
        return
    kept = [
        line for line in path.read_text(encoding="utf-8").splitlines() if line and json.loads(line)["step"] <= last_step
    ]
    atomic_write_text(path, "".join(line + "\n" for line in kept))


def train(
    config: TrainConfig,
    run_dir: str | Path,
    *,
    dataset: Dataset,
    num_classes: int,
    class_names: list[str],
    sigma_max: float,
    resume: bool = False,
    streaming: bool = False,
    progress: Callable[[StepReport], None] | None = None,
    device: str = "auto",
    command: str = "",
    stop_after: int | None = None,
) -> TrainResult:
    """Train one stage into ``run_dir``.

    ``stop_after`` ends this call after that many steps without a final checkpoint, as a kill would
    (tests).

    dataset: map-style items as in ``docs/interfaces.md``. ``streaming``: the dataset renders a new sample
    for every index (synthetic-bsr), so sample ``k`` is item ``k`` and the zoom augmentation is skipped (each
    scene is drawn at a random scale already); otherwise items are shuffled per epoch and zoomed by a ratio
    from ``config.zoom_ratios`` (sigma multiplied by the ratio, the LR re-rendered with the dataset's
    ``degradation`` when it has one, else ``config.degradation()``).
    """
    if config.threads:
        torch.set_num_threads(config.threads)
    run_dir = Path(run_dir)
    ctx = dist_utils.init_from_env(device)
    amp_dtype = _amp_dtype(config, ctx.device)
    resume_from = _prepare_run_dir(run_dir, config, resume)

    torch.manual_seed(config.seed)  # the same initial weights on every rank
    stage, info = build_stage(config, num_classes, class_names, sigma_max)
    info.command = command
    if resume_from is not None:
        previous = read_run_info(run_dir)
        info.sessions = previous.sessions
        info.command = previous.command  # the command that started the run; resumes are in sessions
    stage.to(ctx.device)
    if config.channels_last:
        stage.to(memory_format=torch.channels_last)
    params = [p for p in stage.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
    from cmosx.train.schedule import WarmupCosine

    scheduler = WarmupCosine(optimizer, config.steps, config.warmup_steps, config.min_lr_ratio)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)

    start = 0
    if resume_from is not None:
        state = load_checkpoint(resume_from)
        stage.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scheduler.total_steps = config.steps  # --steps may extend a run
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        restore_rng_state(state["rng"])
        start = int(state["step"])
    session_slot = len(info.sessions)
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run_dir / RUN_FILE, info.to_dict())
        if resume_from is not None:
            _truncate_log(run_dir / METRICS_FILE, start)
    dist_utils.barrier(ctx)

    model = dist_utils.wrap(stage, ctx)
    model.train()
    keep = (lambda item: bool(item.get("space_invariant", False))) if config.space_invariant_only else None
    samples = TrainSamples(
        dataset,
        seed=config.seed,
        crop=config.crop,
        scale=info.spec.scale,
        flip=config.flip,
        zoom_ratios=(1.0,) if streaming else config.zoom_ratios,
        # zooms re-render the LR: with the degradation a stored set records, else the run's own settings
        degradation=getattr(dataset, "degradation", None) or config.degradation(),
        keep=keep,
        shuffle=not streaming,
        crops_per_item=config.crops_per_scene if streaming else 1,
        group=config.batch_size,
    )
    end = config.steps if stop_after is None else min(config.steps, start + stop_after)
    # streamed scenes serve `crops_per_scene` consecutive steps: one worker renders each scene once for them all
    steps_per_chunk = config.crops_per_scene if streaming else 1
    loader = DataLoader(
        samples,
        batch_sampler=StepBatches(start, end, config.batch_size, ctx.rank, ctx.world_size, steps_per_chunk),
        num_workers=config.num_workers,
        collate_fn=_CollateSteps(config.batch_size),
        persistent_workers=False,
    )
    names = part_names(config.stage, config.pixel_loss)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    result = TrainResult(run_dir=run_dir, start_step=start, final_step=start, stage=stage)
    log_handle = open(run_dir / METRICS_FILE, "a", encoding="utf-8") if ctx.is_main else None  # noqa: SIM115
    t_start = window_start = time.perf_counter()
    window: list[tuple[float, torch.Tensor]] = []
    step = start
    try:
        for batch in (step_batch for chunk in loader for step_batch in chunk):
            lr = batch["lr"].to(ctx.device, non_blocking=True).contiguous(memory_format=memory_format)
            hr = batch["hr"].to(ctx.device, non_blocking=True).contiguous(memory_format=memory_format)
            blur = batch["blur"].to(ctx.device, non_blocking=True).contiguous(memory_format=memory_format)
            labels = batch["labels"].to(ctx.device, non_blocking=True)
            autocast = (
                torch.autocast(ctx.device.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()
            )
            with autocast:
                loss, parts = model(lr, hr, blur, labels)
            if not torch.isfinite(loss):
                raise ModelError(f"{run_dir}: loss became {loss.item()} at step {step + 1}; lower --lr or check data")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if config.grad_clip:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            current_lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            step += 1
            loss_value = float(loss.detach())
            result.losses.append(loss_value)
            window.append((loss_value, parts))

            # every step (cheap): the same collective calls on every rank
            now = time.perf_counter()
            elapsed = max(now - window_start, 1e-9)
            mean_loss = float(dist_utils.all_reduce_mean(torch.tensor(sum(v for v, _ in window) / len(window)), ctx))
            mean_parts = torch.stack([p for _, p in window]).mean(0)
            report = StepReport(
                step=step,
                total_steps=config.steps,
                loss=mean_loss,
                parts={n: float(v) for n, v in zip(names, mean_parts, strict=True)},
                lr=current_lr,
                steps_per_s=len(window) / elapsed,
                samples_per_s=len(window) * config.batch_size * ctx.world_size / elapsed,
            )
            if step % config.log_every == 0 or step == end:
                if log_handle is not None:
                    record = {"step": step, "loss": report.loss, **report.parts, "lr": report.lr}
                    record.update(steps_per_s=round(report.steps_per_s, 4), time=round(time.time(), 3))
                    log_handle.write(json.dumps(record) + "\n")
                    log_handle.flush()
                window, window_start = [], now
            if progress is not None and ctx.is_main:
                progress(report)
            if step % config.checkpoint_every == 0 or step == config.steps:
                dist_utils.broadcast_buffers(stage, ctx)
                _save(run_dir, step, stage, optimizer, scheduler, scaler, config, ctx)
                if ctx.is_main:  # a session killed later still shows the steps its checkpoints hold
                    _record_session(info, session_slot, command, start, step, time.perf_counter() - t_start, ctx)
                    atomic_write_json(run_dir / RUN_FILE, info.to_dict())
    finally:
        if log_handle is not None:
            log_handle.close()
    dist_utils.broadcast_buffers(stage, ctx)
    result.final_step = step
    result.wall_s = time.perf_counter() - t_start
    result.steps_per_s = (step - start) / result.wall_s if result.wall_s > 0 else math.nan
    if ctx.is_main:
        _record_session(info, session_slot, command, start, step, result.wall_s, ctx, finished=True)
        atomic_write_json(run_dir / RUN_FILE, info.to_dict())
    return result


@functools.cache
def _device_name(device: torch.device) -> str:
    """What the run trained on, for the record: the GPU's name, or the CPU's model and core count.

    Cached: every checkpoint rewrites the session record, and the device does not change.
    """
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            model = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), model)
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} CPUs"


def _record_session(
    info: RunInfo, slot: int, command: str, start: int, end: int, wall_s: float, ctx, finished: bool = False
) -> None:
    """Write this train() call's entry into ``info.sessions[slot]``.

    Checkpoints update it as the run goes (``finished`` null); a killed session thus keeps the steps up
    to its last checkpoint, which is where a resume continues from.
    """
    entry = {
        "command": command,
        "start_step": start,
        "end_step": end,
        "wall_s": round(wall_s, 1),
        "device": str(ctx.device),
        "device_name": _device_name(ctx.device),
        "world_size": ctx.world_size,
        "threads": torch.get_num_threads(),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) if finished else None,
    }
    if slot < len(info.sessions):
        info.sessions[slot] = entry
    else:
        info.sessions.append(entry)


def run_training(
    config: TrainConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    progress: Callable[[StepReport], None] | None = None,
    device: str = "auto",
    command: str = "",
    keep_process_group: bool = False,
) -> TrainResult:
    """Open the config's dataset (streamed synthetic-bsr / photo-bsr or a folder from ``--root``) and
    :func:`train`; what the dataset records about itself (the photo splits) goes to ``RUN/data.json``.

    Under torchrun the process group is left at the end unless ``keep_process_group`` (more stages follow).
    """
    from cmosx.train.sources import open_train_data

    dataset, info = open_train_data(config)
    if info.record is not None and launch_from_environment().is_main:
        atomic_write_json(Path(run_dir) / DATA_FILE, info.record)  # e.g. which photos are train / val / test
    try:
        return train(
            config,
            run_dir,
            dataset=dataset,
            num_classes=info.num_classes,
            class_names=info.class_names,
            sigma_max=info.sigma_max,
            resume=resume,
            streaming=info.streaming,
            progress=progress,
            device=device,
            command=command,
        )
    finally:
        if not keep_process_group:
            dist_utils.shutdown_env()  # a clean exit under torchrun


def _save(run_dir, step, stage, optimizer, scheduler, scaler, config, ctx) -> None:
    if ctx.is_main:
        state = {
            "step": step,
            "model": stage.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler.is_enabled() else {},
            "rng": capture_rng_state(),
            "config": config.to_dict(),
        }
        save_checkpoint(checkpoint_path(run_dir, step), state)
        prune_checkpoints(run_dir, config.keep_checkpoints)
    dist_utils.barrier(ctx)
