"""Run folders and the networks in them.

A run folder ``RUN/`` holds ``run.json`` (the :class:`TrainConfig`, the model spec with ablations applied,
classes, sigma_max, the command line), ``metrics.jsonl`` (one JSON object per logged step) and
``checkpoints/step-XXXXXXXX.safetensors``. The newest checkpoint's ``model`` entry holds the stage's
networks under ``cmos.*`` / ``sr.*``.

Blind training, evaluation and export take networks either from a run folder or from a model reference
(``cmosx.models.hub.resolve_model``: a bundled name, a folder with model.safetensors + config.json, ...),
as a :class:`~cmosx.models.model.Model` either way (a run folder's card is made from its ``run.json``).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from cmosx.errors import ModelError, UsageError
from cmosx.models.card import Conditioning, Metrics, ModelCard, Recipe, StageRecord
from cmosx.models.model import Model
from cmosx.models.specs import ModelSpec, get_spec, spec_from_dict, spec_to_dict
from cmosx.train.checkpoint import latest_checkpoint, load_checkpoint
from cmosx.train.config import TrainConfig

RUN_FILE = "run.json"
DATA_FILE = "data.json"  # what the dataset records about itself (photo-bsr: the photos of each split)
COMPANION_ROLES = ("upper", "baseline")  # a model's companion SR networks (cmosx.models.weights_io)


def split_companion_ref(ref: str) -> tuple[str, str | None]:
    """``"NAME:upper"`` -> ``("NAME", "upper")``: a model's companion; any other reference -> ``(ref, None)``."""
    base, sep, role = ref.rpartition(":")
    if sep and base and role in COMPANION_ROLES and not Path(ref).exists():
        return base, role
    return ref, None


def model_spec_for(config: TrainConfig) -> ModelSpec:
    """The named spec with the GIA ablation applied to both networks."""
    spec = get_spec(config.spec)
    if config.gia_mode is None:
        return spec
    cmos = dataclasses.replace(spec.cmos, gia=dataclasses.replace(spec.cmos.gia, mode=config.gia_mode))
    sr = dataclasses.replace(spec.sr, gia=dataclasses.replace(spec.sr.gia, mode=config.gia_mode))
    return dataclasses.replace(spec, cmos=cmos, sr=sr)


@dataclass
class RunInfo:
    """What ``run.json`` records about a run."""

    config: TrainConfig
    spec: ModelSpec
    num_classes: int
    class_names: list[str]
    sigma_max: float
    command: str = ""
    sessions: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # one per train() call

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "spec": spec_to_dict(self.spec),
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "sigma_max": self.sigma_max,
            "command": self.command,
            "sessions": self.sessions,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunInfo:
        return cls(
            config=TrainConfig.from_dict(data["config"]),
            spec=spec_from_dict(data["spec"]),
            num_classes=int(data["num_classes"]),
            class_names=list(data["class_names"]),
            sigma_max=float(data["sigma_max"]),
            command=data.get("command", ""),
            sessions=list(data.get("sessions", [])),
        )


def is_run_dir(path: str | Path) -> bool:
    return (Path(path) / RUN_FILE).is_file()


def read_run_info(run_dir: Path) -> RunInfo:
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        raise UsageError(f"{run_dir}: not a training run folder (no {RUN_FILE})")
    try:
        return RunInfo.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (KeyError, ValueError, TypeError) as error:
        raise ModelError(f"{path}: malformed run record ({error})") from error


def run_state(run_dir: Path) -> tuple[RunInfo, dict[str, Any]]:
    """The run's record and its newest checkpoint's model state (keys ``cmos.*`` / ``sr.*``)."""
    info = read_run_info(run_dir)
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        raise ModelError(f"{run_dir}: the run has no checkpoint yet")
    return info, load_checkpoint(ckpt)


def sub_state(state: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Entries of ``state`` under ``prefix.``, with the prefix removed."""
    cut = len(prefix) + 1
    return {k[cut:]: v for k, v in state.items() if k.startswith(prefix + ".")}


def build_cmos(spec: ModelSpec, num_classes: int) -> nn.Module:
    from cmosx.models.cmos import CMOS

    return CMOS(spec.cmos, num_classes=num_classes, scale=spec.scale)


def build_sr(spec: ModelSpec, num_classes: int) -> nn.Module:
    from cmosx.models.rrdb_sft import RRDBSFT

    return RRDBSFT(spec.sr, num_classes=num_classes, scale=spec.scale)


def conditioning_of(config: TrainConfig) -> Conditioning:
    """The maps a run's SR network reads: none with ``--unconditioned``, no semantics with ``--no-semantics-in-sr``."""
    return Conditioning(blur=not config.unconditioned, semantics=config.semantics_in_sr and not config.unconditioned)


def _source_record(ref: str) -> StageRecord:
    """What a run started from: a run folder or a model reference."""
    return StageRecord(run=ref) if is_run_dir(ref) else StageRecord(model=ref)


def _run_model(ref: str) -> Model:
    """The networks of a run folder's newest checkpoint (None for those the stage does not hold)."""
    info, ckpt = run_state(Path(ref))
    model_state = ckpt["model"]
    cmos = sr = None
    cmos_state, sr_state = sub_state(model_state, "cmos"), sub_state(model_state, "sr")
    if cmos_state:
        cmos = build_cmos(info.spec, info.num_classes)
        cmos.load_state_dict(cmos_state)
    if sr_state:
        sr = build_sr(info.spec, info.num_classes)
        sr.load_state_dict(sr_state)
    cfg = info.config
    stages = {cfg.stage: StageRecord(run=str(ref), command=info.command, config=cfg.to_dict())}
    if cfg.stage == "blind" and cfg.init:
        stages["sr"] = _source_record(cfg.init)  # the SR network it was fine-tuned from
    card = ModelCard(
        name=str(ref),
        spec=info.spec,
        num_classes=info.num_classes,
        class_names=list(info.class_names),
        scale=info.spec.scale,
        sigma_max=info.sigma_max,
        recipe=Recipe(dataset=cfg.dataset, spec=cfg.spec, conditioning=conditioning_of(cfg), stages=stages),
    )
    return Model(card=card, cmos=cmos, sr=sr, source=str(ref))


def load_networks(ref: str | None) -> Model:
    """The networks of a run folder (its newest checkpoint) or of a model reference (``resolve_model``).

    ``None`` is the bundled default model; ``MODEL:upper`` / ``MODEL:baseline`` a model's companion SR
    network (:func:`load_companion_networks`).
    """
    if ref is not None and is_run_dir(ref):
        return _run_model(ref)
    if ref is not None:
        base, role = split_companion_ref(ref)
        if role is not None:
            companion = load_companion_networks(load_networks(base), role)
            if companion is None:
                raise ModelError(f"{ref}: model {base} has no {role} companion")
            return companion
    from cmosx.models.hub import resolve_model

    return resolve_model(ref)


def sr_stage_source(model: Model) -> str | None:
    """The run (or, for a run folder, the run or model) its SR network was fine-tuned from, if known.

    A model card's ``sr`` stage counts only when it names a run folder that exists here.
    """
    record = model.card.recipe.stage("sr")
    if record is None:
        return None
    if record.run and is_run_dir(record.run):
        return record.run
    return record.model if is_run_dir(model.source) else None


def load_companion_networks(model: Model, role: str) -> Model | None:
    """The companion SR network ``role`` of a model (its card's ``companions``), without CMOS.

    None when ``model`` has no such companion (a run folder has none). ``upper``: trained on ground-truth
    maps; ``baseline``: blur-unaware (its maps are zeroed, as its card entry's conditioning says).
    """
    entry = model.card.companions.get(role)
    if entry is None:
        return None
    from cmosx.models.hub import load_companion

    card = dataclasses.replace(
        model.card,
        name=f"{model.card.name}:{role}",
        recipe=Recipe(conditioning=entry.conditioning),
        metrics=Metrics(),
        companions={},
    )
    return Model(card=card, cmos=None, sr=load_companion(model, role), source=f"{model.source}:{role}")
