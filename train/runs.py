"""Run folders and the networks in them.

A run folder ``RUN/`` holds ``run.json`` (the :class:`TrainConfig`, the model spec with ablations applied,
classes, sigma_max, the command line), ``metrics.jsonl`` (one JSON object per logged step) and
``checkpoints/step-XXXXXXXX.safetensors``. The newest checkpoint's ``model`` entry holds the stage's
networks under ``cmos.*`` / ``sr.*``.

Blind training, evaluation and export take networks either from a run folder or from a model reference
(``cmosx.models.hub.resolve_model``: a bundled name, a folder with model.safetensors + config.json, ...).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from cmosx.errors import ModelError, UsageError
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


@dataclass
class Networks:
    """Networks taken from a run folder or a model; ``None`` where the source has none."""

    spec: ModelSpec
    num_classes: int
    class_names: list[str]
    sigma_max: float
    cmos: nn.Module | None
    sr: nn.Module | None
    use_blur: bool = True
    use_semantics: bool = True
    source: str = ""
    recipe: dict[str, Any] = dataclasses.field(default_factory=dict)
    sr_stage_source: str | None = None  # the sr-stage run this SR network was fine-tuned from, if known
    loaded_model: Any = None  # the LoadedModel of a model reference (None for a run folder)


def load_networks(ref: str | None) -> Networks:
    """Networks of a run folder (its newest checkpoint) or of a model reference (``resolve_model``).

    ``None`` is the bundled default model; ``MODEL:upper`` / ``MODEL:baseline`` a model's companion SR
    network (:func:`load_companion_networks`).
    """
    if ref is not None and not is_run_dir(ref):
        base, role = split_companion_ref(ref)
        if role is not None:
            companion = load_companion_networks(load_networks(base), role)
            if companion is None:
                raise ModelError(f"{ref}: model {base} has no {role} companion")
            return companion
    if ref is not None and is_run_dir(ref):
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
        return Networks(
            spec=info.spec,
            num_classes=info.num_classes,
            class_names=info.class_names,
            sigma_max=info.sigma_max,
            cmos=cmos,
            sr=sr,
            use_blur=not cfg.unconditioned,
            use_semantics=cfg.semantics_in_sr and not cfg.unconditioned,
            source=str(ref),
            recipe={"stage": cfg.stage, "step": int(ckpt["step"]), "config": cfg.to_dict(), "command": info.command},
            sr_stage_source=cfg.init if cfg.stage == "blind" else None,
        )
    from cmosx.models.hub import resolve_model

    loaded = resolve_model(ref)
    card = loaded.card
    recipe = card.recipe if isinstance(card.recipe, dict) else {}
    conditioning = recipe.get("conditioning", {})
    sr_run = ((recipe.get("stages") or {}).get("sr") or {}).get("run")
    return Networks(
        spec=card.spec,
        num_classes=card.num_classes,
        class_names=list(card.class_names),
        sigma_max=float(card.sigma_max),
        cmos=loaded.cmos,
        sr=loaded.sr,
        use_blur=bool(conditioning.get("blur", True)),
        use_semantics=bool(conditioning.get("semantics", True)),
        source=loaded.source,
        recipe=dict(recipe),
        sr_stage_source=sr_run if sr_run and is_run_dir(sr_run) else None,
        loaded_model=loaded,
    )


def load_companion_networks(nets: Networks, role: str) -> Networks | None:
    """The companion SR network ``role`` of a model (its card's ``companions``) as :class:`Networks`.

    None when ``nets`` is not a model or has no such companion. ``upper``: trained on ground-truth maps;
    ``baseline``: blur-unaware (its maps are zeroed, as its card's conditioning says).
    """
    entry = nets.loaded_model.card.companions.get(role) if nets.loaded_model is not None else None
    if not entry:
        return None
    from cmosx.models.hub import load_companion

    sr = load_companion(nets.loaded_model, role)
    conditioning = entry.get("conditioning", {})
    return Networks(
        spec=nets.spec,
        num_classes=nets.num_classes,
        class_names=list(nets.class_names),
        sigma_max=nets.sigma_max,
        cmos=None,
        sr=sr,
        use_blur=bool(conditioning.get("blur", True)),
        use_semantics=bool(conditioning.get("semantics", True)),
        source=f"{nets.source}:{role}",
        recipe=dict(entry.get("recipe") or {}),
    )
