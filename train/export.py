"""Export a trained blind run as a model the CLI loads: safetensors weights + config.json model card.

The card carries the recipe (the blind run and, where they are run folders, the estimator and sr runs it
came from: configs, exact commands, steps, wall time) and the evaluation figures measured on the
dataset's test groups. ``dest`` is either a NAME -- written into the bundled folder (``weights/``) as
``NAME.safetensors`` + ``NAME.json`` and registered in ``weights/manifest.json`` -- or a folder path,
which receives ``model.safetensors`` + ``config.json``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cmosx.errors import ModelError, UsageError
from cmosx.train.runs import is_run_dir, load_networks, read_run_info

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass
class Exported:
    weights: Path
    config: Path
    sha256: str
    metrics: dict[str, Any] = field(default_factory=dict)


def _run_record(ref: str | None) -> dict[str, Any] | None:
    """A run's config, command and sessions; a run it was fine-tuned from (``--init``) nests as ``init``."""
    if not ref:
        return None
    if not is_run_dir(ref):
        return {"model": ref}
    info = read_run_info(Path(ref))
    record = {"run": str(ref), "command": info.command, "config": info.config.to_dict(), "sessions": info.sessions}
    if info.config.init and info.config.stage != "blind":
        record["init"] = _run_record(info.config.init)
    return record


def recipe_for(run_dir: Path) -> dict[str, Any]:
    """The training history of a blind run (and the runs it was built from)."""
    info = read_run_info(run_dir)
    cfg = info.config
    return {
        "dataset": cfg.dataset,
        "spec": cfg.spec,
        "conditioning": {"blur": not cfg.unconditioned, "semantics": cfg.semantics_in_sr and not cfg.unconditioned},
        "stages": {
            "estimator": _run_record(cfg.estimator),
            "sr": _run_record(cfg.init),
            "blind": {"run": str(run_dir), "command": info.command, "config": cfg.to_dict(), "sessions": info.sessions},
        },
    }


def export_run(
    run_dir: str | Path,
    dest: str,
    *,
    eval_images: int = 20,
    metrics: dict[str, Any] | None = None,
    description: str = "",
    make_default: bool | None = None,
    storage_dtype: str | None = None,
) -> Exported:
    """Write the model of a blind run to ``dest`` (a bundled NAME or a folder path).

    ``metrics``: figures to store; if None and ``eval_images`` > 0, the run's dataset test groups are
    evaluated (``eval_images`` images per group) and stored. ``storage_dtype``: "float16" stores the
    weights at half size (they load back into float32). ``make_default``: for a bundled NAME, make it
    the default model (None: only when the manifest has no default yet).
    """
    from cmosx.models.weights_io import ModelCard, save_model

    run_dir = Path(run_dir)
    info = read_run_info(run_dir)
    if info.config.stage != "blind":
        raise UsageError(f"{run_dir}: only a blind-stage run holds a complete model (this is {info.config.stage!r})")
    nets = load_networks(str(run_dir))
    if nets.cmos is None or nets.sr is None:
        raise ModelError(f"{run_dir}: the checkpoint lacks the CMOS or the SR network")
    if metrics is None and eval_images > 0:
        from cmosx.train.evaluate import evaluate
        from cmosx.train.sources import open_test_group

        groups = {g: open_test_group(info.config.dataset, info.config.root, g)[0] for g in (1, 2, 3, 4, 5)}
        upper = load_networks(nets.sr_stage_source) if nets.sr_stage_source else None
        report = evaluate(nets, groups, dataset_name=info.config.dataset, upper=upper, limit=eval_images)
        metrics = report.to_dict()
    bundled = "/" not in dest and "\\" not in dest and not dest.startswith(".")
    if bundled:
        if not _NAME.match(dest):
            raise UsageError(f"model name {dest!r}: use letters, digits, '.', '_' and '-'")
        from cmosx.models.hub import bundled_dir, bundled_models, register_bundled

        folder = bundled_dir()
        weights, config = folder / f"{dest}.safetensors", folder / f"{dest}.json"
        name = dest
    else:
        folder = Path(dest)
        weights, config = folder / "model.safetensors", folder / "config.json"
        name = folder.name
    card = ModelCard(
        name=name,
        spec=nets.spec,
        num_classes=nets.num_classes,
        class_names=nets.class_names,
        scale=nets.spec.scale,
        sigma_max=nets.sigma_max,
        recipe=recipe_for(run_dir),
        metrics=metrics or {},
        description=description
        or f"CMOS + RRDB-SFT ({info.config.spec}) trained on {info.config.dataset} with cmosx train",
    )
    dtypes = {None: None, "float32": None, "float16": torch.float16}
    if storage_dtype not in dtypes:
        raise UsageError(f"storage dtype {storage_dtype!r}: use float32 or float16")
    sha = save_model(weights, config, nets.cmos, nets.sr, card, storage_dtype=dtypes[storage_dtype])
    if bundled:
        if make_default is None:
            make_default = not any(m.is_default for m in bundled_models())
        register_bundled(name, weights.name, config.name, default=make_default)
    return Exported(weights=weights, config=config, sha256=sha, metrics=metrics or {})
