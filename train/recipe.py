"""The whole training recipe in one call (``cmosx train`` without ``--stage``).

``OUT/`` receives one run folder per step of the recipe, then the exported model::

    OUT/recipe.json   the plan (one TrainConfig per step), the command, and per finished step its steps,
                      wall time and validation figures
    OUT/estimator/    stage 1: CMOS (blur + semantics)
    OUT/sr/           stage 2: RRDB-SFT on ground-truth maps -- the evaluation's upper bound; blind starts here
    OUT/baseline/     stage 2 with the maps zeroed (``unconditioned``): the blur-unaware baseline
    OUT/blind/        stage 3: the sr network fine-tuned on the frozen estimator's maps
    OUT/model/        model.safetensors + config.json + upper.safetensors + baseline.safetensors

Steps run in that order; a step whose final checkpoint exists is finished and kept, so ``resume=True``
continues where a killed run stopped (the running step from its newest checkpoint, with the trainer's
exact-resume guarantee) and ends with the same weights as an uninterrupted run.

Options: ``common`` applies to every step where it means something (estimator-only losses go to the
estimator, sr-only switches to the SR steps); ``per_stage["estimator" | "sr" | "blind"]`` (the trainer
stage: ``sr`` covers the upper bound and the baseline, which share their schedule so the two rows differ
only in the maps they see) overrides it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cmosx.errors import UsageError
from cmosx.io.atomic import atomic_write_json
from cmosx.launch import launch_from_environment
from cmosx.train.checkpoint import checkpoint_path
from cmosx.train.config import TrainConfig, make_config
from cmosx.train.runs import RUN_FILE, load_networks, read_run_info

RECIPE_FILE = "recipe.json"
MODEL_FOLDER = "model"
VALIDATION_IMAGES = 8  # images each finished step is validated on (its line in the progress output)


@dataclass(frozen=True)
class RecipeStep:
    name: str  # the subfolder of OUT
    stage: str  # the trainer stage
    title: str
    fixed: tuple[tuple[str, Any], ...] = ()  # settings this step always has


RECIPE = (
    RecipeStep("estimator", "estimator", "CMOS estimator"),
    RecipeStep("sr", "sr", "SR on ground-truth maps (upper bound)"),
    RecipeStep("baseline", "sr", "blur-unaware SR baseline", (("unconditioned", True),)),
    RecipeStep("blind", "blind", "blind SR on the frozen estimator"),
)
RECIPE_NAMES = tuple(step.name for step in RECIPE)
ESTIMATOR_ONLY = ("single_task", "no_aux", "blur_weight", "seg_weight", "aux_blur_weight", "aux_seg_weight")
SR_ONLY = ("semantics_in_sr", "pixel_loss")
RECIPE_SETS = ("estimator", "init", "unconditioned", "stage", "preset")  # the recipe sets these itself


@dataclass
class PlannedStep:
    step: RecipeStep
    config: TrainConfig
    run_dir: Path

    @property
    def finished(self) -> bool:
        """Its final checkpoint is written (the trainer writes it last)."""
        return (self.run_dir / RUN_FILE).is_file() and checkpoint_path(self.run_dir, self.config.steps).is_file()


@dataclass
class StepSummary:
    name: str
    title: str
    steps: int
    wall_s: float  # all sessions of the step
    validation: dict[str, Any]
    kept: bool = False  # finished by an earlier session


@dataclass
class RecipeResult:
    out: Path
    steps: list[StepSummary] = field(default_factory=list)
    model: Path | None = None  # None on torchrun ranks other than 0
    sha256: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)  # the model card's evaluation (EvalReport.to_dict())


class RecipeProgress:
    """What :func:`run_recipe` reports; the CLI draws bars and lines from it. No-ops by default."""

    def step_started(self, index: int, planned: PlannedStep, start_step: int) -> None: ...

    def trained(self, planned: PlannedStep, report) -> None: ...  # a StepReport after each optimizer step

    def step_finished(self, summary: StepSummary) -> None: ...

    def evaluating(self, done: int, total: int) -> None: ...


def _applies(key: str, stage: str) -> bool:
    if key in ESTIMATOR_ONLY:
        return stage == "estimator"
    if key in SR_ONLY:
        return stage != "estimator"
    return True


def step_overrides(step: RecipeStep, out: Path, common: dict[str, Any], per_stage: dict[str, dict[str, Any]]):
    """The options one step of the recipe is built with (``None`` values dropped)."""
    given = sorted(k for k, v in common.items() if v is not None and k in RECIPE_SETS)
    if given:
        raise UsageError(f"the whole recipe sets {', '.join(given)} itself; use --stage to run one stage")
    values = {k: v for k, v in common.items() if v is not None and _applies(k, step.stage)}
    values.update({k: v for k, v in per_stage.get(step.stage, {}).items() if v is not None})
    values.update(dict(step.fixed))
    if step.stage == "blind":
        values.update(estimator=str(out / "estimator"), init=str(out / "sr"))
    return values


def plan_recipe(
    out: str | Path,
    common: dict[str, Any],
    per_stage: dict[str, dict[str, Any]] | None = None,
    *,
    preset: str | None = None,
    resume: bool = False,
) -> list[PlannedStep]:
    """One :class:`PlannedStep` per recipe step. With ``resume`` and an ``OUT/recipe.json``, each step starts
    from its recorded config and the given options override it (``--resume --steps N`` extends every step)."""
    out = Path(out)
    per_stage = per_stage or {}
    saved = read_recipe(out) if resume and (out / RECIPE_FILE).is_file() else None
    if saved is not None and preset is not None and preset != saved["preset"]:
        raise UsageError(f"{out}: the recipe used --preset {saved['preset']}, not {preset}")
    plan = []
    for step in RECIPE:
        overrides = step_overrides(step, out, common, per_stage)
        if saved is None:
            config = make_config(step.stage, preset=preset or "cpu", **overrides)
        else:
            values = dict(saved["steps"][step.name]["config"])
            values.pop("stage")
            values.update(overrides)
            config = make_config(step.stage, **values)
        plan.append(PlannedStep(step, config, out / step.name))
    return plan


def read_recipe(out: Path) -> dict[str, Any]:
    path = Path(out) / RECIPE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        _ = [data["steps"][step.name]["config"] for step in RECIPE] + [data["preset"]]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UsageError(f"{path}: not a readable recipe record ({error})") from None
    return data


def _record(out: Path, plan: list[PlannedStep], command: str, done: dict[str, StepSummary], model: dict) -> None:
    atomic_write_json(
        out / RECIPE_FILE,
        {
            "dataset": plan[0].config.dataset,
            "spec": plan[0].config.spec,
            "preset": plan[0].config.preset,
            "command": command,
            "steps": {
                p.step.name: {
                    "title": p.step.title,
                    "config": p.config.to_dict(),
                    "finished": None
                    if p.step.name not in done
                    else {
                        "steps": done[p.step.name].steps,
                        "wall_s": done[p.step.name].wall_s,
                        "validation": done[p.step.name].validation,
                    },
                }
                for p in plan
            },
            "model": model,
        },
    )


def validate_step(planned: PlannedStep, device: str | torch.device = "cpu", images: int | None = None) -> dict:
    """The step's validation figure on held-out images (:func:`cmosx.train.sources.open_validation_set`):
    blur-map PSNR and mIoU for the estimator, PSNR-Y for the SR steps (with bicubic's beside it)."""
    from cmosx.train.evaluate import evaluate
    from cmosx.train.sources import open_validation_set

    count = images or VALIDATION_IMAGES
    data, where = open_validation_set(planned.config.dataset, planned.config.root, count, planned.config.photos)
    nets = load_networks(str(planned.run_dir))
    # fp32: a validation figure must not depend on which precision a timing probe picked this time
    report = evaluate(
        nets, {1: data}, dataset_name=planned.config.dataset, limit=count, device=device, precision="fp32"
    )
    figures: dict[str, Any] = {"on": where, "images": report.images_per_group["1"]}
    rows = {name: per_group["mean"] for name, per_group in report.rows.items()}
    if planned.step.stage == "estimator":
        figures.update(blur_psnr=rows["model"]["blur_psnr"], miou=rows["model"].get("miou"))
    else:
        row = "model" if planned.step.stage == "blind" else "upper bound"
        figures.update(psnr_y=rows[row]["psnr_y"], bicubic_psnr_y=rows["bicubic"]["psnr_y"])
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in figures.items()}


def _wall_s(run_dir: Path) -> float:
    return round(sum(float(s.get("wall_s") or 0.0) for s in read_run_info(run_dir).sessions), 1)


def run_recipe(
    plan: list[PlannedStep],
    out: str | Path,
    *,
    resume: bool = False,
    device: str = "auto",
    command: str = "",
    eval_images: int = 20,
    progress: RecipeProgress | None = None,
) -> RecipeResult:
    """Train every step of ``plan`` into ``out``, export ``OUT/model`` with its companions and evaluate it.

    Without ``resume`` an existing ``OUT/recipe.json`` is a UsageError (pass resume or another folder).
    ``eval_images``: images per test group for the model card's evaluation (0: none).
    """
    from cmosx.train import distributed as dist_utils
    from cmosx.train.trainer import check_resumable, run_training

    out = Path(out)
    progress = progress or RecipeProgress()
    if not resume and (out / RECIPE_FILE).is_file():
        raise UsageError(f"{out}: holds a recipe already; pass --resume to continue it, or another --out")
    main = launch_from_environment().is_main
    saved = read_recipe(out) if resume and (out / RECIPE_FILE).is_file() else None
    if resume:  # every step, before anything is written: a refused resume leaves the folder as it was
        for planned in plan:
            if (planned.run_dir / RUN_FILE).is_file():
                check_resumable(planned.run_dir, planned.config)
    done: dict[str, StepSummary] = {}
    if saved is not None:
        for planned in plan:
            record = saved["steps"][planned.step.name].get("finished")
            if record and planned.finished:
                done[planned.step.name] = StepSummary(
                    planned.step.name, planned.step.title, record["steps"], record["wall_s"], record["validation"],
                    kept=True,
                )  # fmt: skip
    if main:
        _record(out, plan, command, done, {})
    eval_device = dist_utils.pick_device(device, launch_from_environment().local_rank or 0)
    result = RecipeResult(out=out)
    try:
        for index, planned in enumerate(plan):
            name = planned.step.name
            if name in done:
                progress.step_finished(done[name])
                result.steps.append(done[name])
                continue
            if not planned.finished:
                start = _start_step(planned.run_dir) if resume else 0
                progress.step_started(index, planned, start)
                run_training(
                    planned.config,
                    planned.run_dir,
                    resume=resume,
                    progress=lambda report, planned=planned: progress.trained(planned, report),
                    device=device,
                    command=command,
                    keep_process_group=True,
                )
            if not main:
                continue
            summary = StepSummary(
                name, planned.step.title, planned.config.steps, _wall_s(planned.run_dir),
                validate_step(planned, eval_device),
            )  # fmt: skip
            done[name] = summary
            _record(out, plan, command, done, {})
            progress.step_finished(summary)
            result.steps.append(summary)
    finally:
        dist_utils.shutdown_env()
    if not main:
        return result
    return _export(plan, out, command, done, result, eval_images, eval_device, progress)


def _start_step(run_dir: Path) -> int:
    from cmosx.train.checkpoint import list_checkpoints

    saved = list_checkpoints(run_dir)
    return max(step for step, _ in saved) if saved else 0


def _export(plan, out, command, done, result, eval_images, device, progress) -> RecipeResult:
    from cmosx.train.export import evaluate_for_card, export_run

    steps = {p.step.name: p for p in plan}
    blind, upper, baseline = steps["blind"], steps["sr"], steps["baseline"]
    metrics: dict[str, Any] = {}
    if eval_images > 0:
        report = evaluate_for_card(
            load_networks(str(blind.run_dir)),
            blind.config,
            upper=load_networks(str(upper.run_dir)),
            baseline=load_networks(str(baseline.run_dir)),
            eval_images=eval_images,
            device=device,
            progress=progress.evaluating,
        )
        metrics = report.to_dict()
    folder = out / MODEL_FOLDER
    written = export_run(
        blind.run_dir,
        str(folder),
        metrics=metrics,
        eval_images=0,
        companions={"upper": upper.run_dir, "baseline": baseline.run_dir},
        description=f"CMOS + RRDB-SFT ({blind.config.spec}) trained on {blind.config.dataset} by the whole "
        f"cmosx train recipe ({blind.config.preset} preset)",
    )
    _record(out, plan, command, done, {"folder": str(folder), "sha256": written.sha256})
    result.model, result.sha256, result.metrics = folder, written.sha256, metrics
    return result
