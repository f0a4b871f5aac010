"""Export a trained blind run as a model the CLI loads: safetensors weights + config.json model card.

The card carries the recipe (the blind run and, where they are run folders, the estimator and sr runs it
came from: configs, exact commands, steps, wall time) and the evaluation figures measured on the
dataset's test groups. ``dest`` is either a NAME -- written into the bundled folder (``weights/``) as
``NAME.safetensors`` + ``NAME.json`` and registered in ``weights/manifest.json`` -- or a folder path,
which receives ``model.safetensors`` + ``config.json``. A NAME works only where the bundled folder is a
source checkout's (an editable install); an installed package is never written into (a UsageError asks
for a folder path instead).

``companions`` ({"upper": RUN, "baseline": RUN}) stores the SR networks of the evaluation's other rows
beside the model (``NAME.upper.safetensors`` bundled, ``upper.safetensors`` in a folder), listed in the
card with their sha256 and recipe, so ``cmosx eval`` re-runs every row from the shipped files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cmosx.errors import ModelError, UsageError
from cmosx.models.card import Companion, Metrics, ModelHistory, Recipe, StageRecord
from cmosx.train.runs import (
    COMPANION_ROLES,
    conditioning_of,
    is_run_dir,
    load_networks,
    read_run_info,
    split_companion_ref,
    sr_stage_source,
)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass
class Exported:
    weights: Path
    config: Path
    sha256: str
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class _ModelsMet:
    """The models the runs of one export started from: name -> their history (sha256, recipe, companions)."""

    run_dir: str  # the blind run being exported
    found: dict[str, ModelHistory] = field(default_factory=dict)

    def record(self, ref: str) -> dict[str, Any]:
        """``{"model": ref, "sha256": ...}``; the model's card recipe (and its companions' sha256) goes once
        into :attr:`found`. ``ref`` may name a companion (``MODEL:upper``): its own sha256 is returned.

        If the model is an earlier export of this same run (a re-export over its own name), the history that
        export recorded for it is kept, not the export itself.
        """
        from cmosx.models.hub import resolve_model

        base, role = split_companion_ref(ref)
        if base not in self.found:
            try:
                loaded = resolve_model(base)
            except ModelError:
                return {"model": ref}
            recipe = loaded.card.recipe
            blind = recipe.stage("blind")
            earlier = recipe.models.get(base)
            companions = {r: e.sha256 for r, e in sorted(loaded.card.companions.items())} or None
            entry = ModelHistory(recipe=recipe, sha256=loaded.sha256, companions=companions)
            exported_from = blind.run if blind is not None else None
            self.found[base] = earlier if exported_from == self.run_dir and earlier else entry
        kept = self.found[base]
        sha = kept.sha256 if role is None else (kept.companions or {}).get(role)
        return {"model": ref, "sha256": sha}


def _run_record(ref: str | None, models: _ModelsMet) -> dict[str, Any] | None:
    """A run's config, command and sessions; a run or model it was fine-tuned from (``--init``) nests as
    ``init``. Models met on the way are described once in ``models``."""
    if not ref:
        return None
    if not is_run_dir(ref):
        return models.record(ref)
    info = read_run_info(Path(ref))
    record = {"run": str(ref), "command": info.command, "config": info.config.to_dict(), "sessions": info.sessions}
    if info.config.init and info.config.stage != "blind":
        record["init"] = _run_record(info.config.init, models)
    return record


def recipe_for(run_dir: Path, models: _ModelsMet | None = None) -> dict[str, Any]:
    """The training history of a blind run (and the runs and models it was built from).

    ``models``: collects the models met on the way; stored as the recipe's ``models`` entry when any.
    """
    info = read_run_info(run_dir)
    cfg = info.config
    models = _ModelsMet(str(run_dir)) if models is None else models
    recipe = {
        "dataset": cfg.dataset,
        "spec": cfg.spec,
        "conditioning": conditioning_of(cfg).to_dict(),
        "stages": {
            "estimator": _run_record(cfg.estimator, models),
            "sr": _run_record(cfg.init, models),
            "blind": {"run": str(run_dir), "command": info.command, "config": cfg.to_dict(), "sessions": info.sessions},
        },
    }
    if models.found:
        recipe["models"] = {name: history.to_dict() for name, history in models.found.items()}
    return recipe


def export_run(
    run_dir: str | Path,
    dest: str,
    *,
    eval_images: int = 20,
    metrics: dict[str, Any] | None = None,
    description: str = "",
    make_default: bool | None = None,
    storage_dtype: str | None = None,
    companions: dict[str, str | Path] | None = None,
) -> Exported:
    """Write the model of a blind run to ``dest`` (a bundled NAME or a folder path).

    ``metrics``: figures to store; if None and ``eval_images`` > 0, the run's dataset test groups are
    evaluated (``eval_images`` images per group) and stored. ``storage_dtype``: "float16" stores the
    weights at half size (they load back into float32). ``make_default``: for a bundled NAME, make it
    the default model (None: only when the manifest has no default yet). ``companions``: role ->
    run folder of an SR network to ship beside the model (see the module docstring).
    """
    from cmosx.models.card import ModelCard
    from cmosx.models.weights_io import save_model, save_sr_network

    run_dir = Path(run_dir)
    bundled = "/" not in dest and "\\" not in dest and not dest.startswith(".")
    if bundled:
        if not _NAME.match(dest):
            raise UsageError(f"model name {dest!r}: use letters, digits, '.', '_' and '-'")
        from cmosx.models.hub import bundled_models, register_bundled, writable_bundled_dir

        folder = writable_bundled_dir()  # before any work: an installed package is not written into
        weights, config = folder / f"{dest}.safetensors", folder / f"{dest}.json"
        name = dest
    else:
        folder = Path(dest)
        weights, config = folder / "model.safetensors", folder / "config.json"
        name = folder.name
    info = read_run_info(run_dir)
    if info.config.stage != "blind":
        raise UsageError(f"{run_dir}: only a blind-stage run holds a complete model (this is {info.config.stage!r})")
    nets = load_networks(str(run_dir))
    if nets.cmos is None or nets.sr is None:
        raise ModelError(f"{run_dir}: the checkpoint lacks the CMOS or the SR network")
    extra = {role: _companion_networks(role, ref, nets) for role, ref in (companions or {}).items()}
    if metrics is None and eval_images > 0:
        report = evaluate_for_card(
            nets, info.config, upper=extra.get("upper"), baseline=extra.get("baseline"), eval_images=eval_images
        )
        metrics = report.to_dict()
    dtypes = {None: None, "float32": None, "float16": torch.float16}
    if storage_dtype not in dtypes:
        raise UsageError(f"storage dtype {storage_dtype!r}: use float32 or float16")
    models = _ModelsMet(str(run_dir))
    recipe = recipe_for(run_dir, models)
    companion_entries = {}
    for role, companion in extra.items():
        path = folder / (f"{dest}.{role}.safetensors" if bundled else f"{role}.safetensors")
        sha = save_sr_network(path, companion.sr, storage_dtype=dtypes[storage_dtype])
        record = _run_record(str(companions[role]), models)
        companion_entries[role] = Companion(
            weights=path.name,
            sha256=sha,
            size=path.stat().st_size,
            conditioning=companion.conditioning,
            recipe=None if record is None else StageRecord.from_dict(record, str(config), f"companions.{role}.recipe"),
        )
    if models.found:
        recipe["models"] = {name: history.to_dict() for name, history in models.found.items()}
    card = ModelCard(
        name=name,
        spec=nets.card.spec,
        num_classes=nets.card.num_classes,
        class_names=list(nets.card.class_names),
        scale=nets.card.spec.scale,
        sigma_max=nets.card.sigma_max,
        recipe=Recipe.from_dict(recipe, str(config)),
        metrics=Metrics(metrics or {}, where=str(config)),
        description=description
        or f"CMOS + RRDB-SFT ({info.config.spec}) trained on {info.config.dataset} with cmosx train",
        companions=companion_entries,
    )
    sha = save_model(weights, config, nets.cmos, nets.sr, card, storage_dtype=dtypes[storage_dtype])
    if bundled:
        if make_default is None:
            make_default = not any(m.is_default for m in bundled_models())
        register_bundled(name, weights.name, config.name, default=make_default)
    return Exported(weights=weights, config=config, sha256=sha, metrics=metrics or {})


def evaluate_for_card(
    nets,
    config,
    *,
    upper=None,
    baseline=None,
    eval_images: int = 20,
    device: str | torch.device = "cpu",
    progress=None,
):
    """The model card's evaluation (an ``EvalReport``): ``eval_images`` images of each of the 5 test groups of
    the run's dataset (``config.dataset`` / ``config.root``). ``upper`` defaults to the sr run the blind
    stage was initialised from, when that is known, else the model's own SR network (on ground-truth blur)."""
    from cmosx.train.evaluate import evaluate
    from cmosx.train.sources import open_test_group

    groups = {g: open_test_group(config.dataset, config.root, g)[0] for g in (1, 2, 3, 4, 5)}
    source = sr_stage_source(nets)
    upper = upper or (load_networks(source) if source else nets)
    return evaluate(
        nets,
        groups,
        dataset_name=config.dataset,
        upper=upper,
        baseline=baseline,
        limit=eval_images,
        device=device,
        progress=progress,
    )


def _companion_networks(role: str, ref: str | Path, model):
    """The SR network of run folder ``ref`` to ship as companion ``role``, checked against the model."""
    if role not in COMPANION_ROLES:
        raise UsageError(f"companion {role!r}: use one of {', '.join(COMPANION_ROLES)}")
    if not is_run_dir(ref):
        raise UsageError(f"{ref}: the {role} companion must be a run folder (cmosx train --stage sr)")
    nets = load_networks(str(ref))
    if nets.sr is None:
        raise ModelError(f"{ref}: the run holds no SR network")
    if (nets.card.spec, nets.card.num_classes) != (model.card.spec, model.card.num_classes):
        raise UsageError(f"{ref}: its SR network's spec or classes differ from the model's")
    reads = nets.conditioning
    if role == "baseline" and (reads.blur or reads.semantics):
        raise UsageError(f"{ref}: a baseline companion must be blur-unaware (trained with --unconditioned)")
    if role == "upper" and not reads.blur:
        raise UsageError(f"{ref}: an upper companion must be conditioned on the blur map")
    return nets
