"""The model card: everything about a model except its tensors, stored as JSON beside the weights.

:meth:`ModelCard.from_dict` parses the JSON object once into typed fields; a field of the wrong type raises
:class:`ModelError` naming the file and the field (e.g. ``recipe.stages.blind.run``).
:meth:`ModelCard.to_dict` writes it back: a card the exporter wrote round-trips key for key, in order.

Layout (``name``, ``spec``, ``num_classes`` and ``class_names`` required, the rest optional)::

    name, spec, num_classes, class_names, scale, sigma_max, description
    recipe      {dataset, spec, conditioning {blur, semantics},
                 stages {estimator, sr, blind: a StageRecord or null},
                 models {NAME: {sha256, recipe, companions {role: sha256}}}}  -- models the runs started from
    metrics     a `cmosx eval` report {dataset, groups, rows {row: {group: {metric: value}}}, ...}
                or flat figures {name: value}
    companions  {role: {weights, sha256, size, conditioning, recipe: a StageRecord}}

A StageRecord says how one network was trained: a run folder (``run``, ``command``, ``config`` -- the
:class:`cmosx.train.config.TrainConfig` as a dict --, ``sessions``, and ``init``: what that run started
from) or a model it was taken from (``model``, ``sha256``).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from cmosx.errors import ModelError
from cmosx.models.specs import ModelSpec, spec_from_dict, spec_to_dict

CONFIG_FORMAT = "cmosx-model"
CONFIG_VERSION = 1


def _bad(where: str, path: str, expected: str, value: Any) -> ModelError:
    return ModelError(
        f"{where}: model card field {path}: expected {expected}, got {type(value).__name__} {value!r:.60}"
    )


def _object(value: Any, where: str, path: str, known: tuple[str, ...] | None = None) -> dict[str, Any]:
    """``value`` as a JSON object; with ``known``, one naming only those keys."""
    if not isinstance(value, dict):
        raise _bad(where, path, "an object", value)
    unknown = sorted(set(value) - set(known)) if known is not None else []
    if unknown:
        raise ModelError(f"{where}: model card field {path}: unknown key(s) {', '.join(unknown)}")
    return value


def _optional(data: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str, path: str) -> Any:
    """``data[key]`` checked to be a ``kind`` (bool is not a number here); None when absent or null."""
    value = data.get(key)
    path = f"{path}.{key}" if path else key
    if value is None:
        return None
    numeric = kind in (int, float, (int, float))
    if not isinstance(value, kind) or (numeric and isinstance(value, bool)):
        name = kind.__name__ if isinstance(kind, type) else "a number"
        expected = {"str": "a string", "list": "a list", "dict": "an object", "bool": "true or false"}.get(name, name)
        raise _bad(where, path, expected, value)
    return value


def _without_none(pairs: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in pairs.items() if v is not None}


@dataclass(frozen=True)
class Conditioning:
    """Which CMOS maps an SR network reads; a switched-off map is fed as zeros (training ablations)."""

    blur: bool = True
    semantics: bool = True

    def to_dict(self) -> dict[str, bool]:
        return {"blur": self.blur, "semantics": self.semantics}

    @classmethod
    def from_dict(cls, data: Any, where: str, path: str) -> Conditioning:
        data = _object(data, where, path, ("blur", "semantics"))
        blur, semantics = (_optional(data, k, bool, where, path) for k in ("blur", "semantics"))
        return cls(blur=True if blur is None else blur, semantics=True if semantics is None else semantics)


@dataclass(frozen=True)
class StageRecord:
    """How one network was trained: a run folder, or a model it was taken from (see the module docstring)."""

    run: str | None = None  # the run folder
    command: str | None = None  # the command line that started it
    config: dict[str, Any] | None = None  # its TrainConfig as a dict (cmosx.train owns these keys)
    sessions: list[dict[str, Any]] | None = None  # one entry per train() call
    init: StageRecord | None = None  # what the run was fine-tuned from (--init)
    model: str | None = None  # the model reference it was taken from
    sha256: str | None = None  # that model's (or companion's) weights

    @property
    def dataset(self) -> str | None:
        """The dataset the run trained on, where its config says."""
        dataset = (self.config or {}).get("dataset")
        return str(dataset) if dataset else None

    def to_dict(self) -> dict[str, Any]:
        return _without_none(
            {
                "run": self.run,
                "command": self.command,
                "config": self.config,
                "sessions": self.sessions,
                "init": self.init.to_dict() if self.init is not None else None,
                "model": self.model,
                "sha256": self.sha256,
            }
        )

    @classmethod
    def from_dict(cls, data: Any, where: str, path: str) -> StageRecord:
        keys = ("run", "command", "config", "sessions", "init", "model", "sha256")
        data = _object(data, where, path, keys)
        init = data.get("init")
        return cls(
            run=_optional(data, "run", str, where, path),
            command=_optional(data, "command", str, where, path),
            config=_optional(data, "config", dict, where, path),
            sessions=_optional(data, "sessions", list, where, path),
            init=None if init is None else cls.from_dict(init, where, f"{path}.init"),
            model=_optional(data, "model", str, where, path),
            sha256=_optional(data, "sha256", str, where, path),
        )


@dataclass(frozen=True)
class ModelHistory:
    """A model some run of the recipe started from: its weights' sha256, its own recipe, its companions'."""

    recipe: Recipe
    sha256: str | None = None
    companions: dict[str, str | None] | None = None  # role -> sha256

    def to_dict(self) -> dict[str, Any]:
        return _without_none({"sha256": self.sha256, "recipe": self.recipe.to_dict(), "companions": self.companions})

    @classmethod
    def from_dict(cls, data: Any, where: str, path: str) -> ModelHistory:
        data = _object(data, where, path, ("sha256", "recipe", "companions"))
        companions = _optional(data, "companions", dict, where, path)
        for role, sha in (companions or {}).items():
            if sha is not None and not isinstance(sha, str):
                raise _bad(where, f"{path}.companions.{role}", "a sha256 string", sha)
        return cls(
            recipe=Recipe.from_dict(data.get("recipe") or {}, where, f"{path}.recipe"),
            sha256=_optional(data, "sha256", str, where, path),
            companions=companions,
        )


@dataclass(frozen=True)
class Recipe:
    """How the model was trained (empty when the card does not say)."""

    dataset: str | None = None
    spec: str | None = None
    conditioning: Conditioning | None = None  # None: not recorded (both maps are read)
    stages: dict[str, StageRecord | None] = field(default_factory=dict)  # estimator, sr, blind
    models: dict[str, ModelHistory] = field(default_factory=dict)

    @property
    def reads(self) -> Conditioning:
        """The maps the SR network reads."""
        return self.conditioning or Conditioning()

    def stage(self, name: str) -> StageRecord | None:
        """The record of stage ``name`` (``estimator``, ``sr``, ``blind``), None where the card has none."""
        return self.stages.get(name)

    def to_dict(self) -> dict[str, Any]:
        return _without_none(
            {
                "dataset": self.dataset,
                "spec": self.spec,
                "conditioning": self.conditioning.to_dict() if self.conditioning is not None else None,
                "stages": {k: None if v is None else v.to_dict() for k, v in self.stages.items()} or None,
                "models": {k: v.to_dict() for k, v in self.models.items()} or None,
            }
        )

    @classmethod
    def from_dict(cls, data: Any, where: str = "config", path: str = "recipe") -> Recipe:
        data = _object(data, where, path, ("dataset", "spec", "conditioning", "stages", "models"))
        stages = _object(data.get("stages") or {}, where, f"{path}.stages")
        models = _object(data.get("models") or {}, where, f"{path}.models")
        conditioning = data.get("conditioning")
        return cls(
            dataset=_optional(data, "dataset", str, where, path),
            spec=_optional(data, "spec", str, where, path),
            conditioning=None
            if conditioning is None
            else Conditioning.from_dict(conditioning, where, f"{path}.conditioning"),
            stages={
                k: None if v is None else StageRecord.from_dict(v, where, f"{path}.stages.{k}")
                for k, v in stages.items()
            },
            models={k: ModelHistory.from_dict(v, where, f"{path}.models.{k}") for k, v in models.items()},
        )


@dataclass(frozen=True)
class Companion:
    """An SR network shipped beside the model for its evaluation (``upper``, ``baseline``)."""

    weights: str  # file name beside the model's weights
    sha256: str
    size: int = 0  # bytes
    conditioning: Conditioning = Conditioning()
    recipe: StageRecord | None = None  # how it was trained

    def to_dict(self) -> dict[str, Any]:
        return {
            "weights": self.weights,
            "sha256": self.sha256,
            "size": self.size,
            "conditioning": self.conditioning.to_dict(),
            "recipe": self.recipe.to_dict() if self.recipe is not None else None,
        }

    @classmethod
    def from_dict(cls, data: Any, where: str, path: str) -> Companion:
        data = _object(data, where, path, ("weights", "sha256", "size", "conditioning", "recipe"))
        for key in ("weights", "sha256"):
            if not isinstance(data.get(key), str):
                raise _bad(where, f"{path}.{key}", "a string", data.get(key))
        conditioning, recipe = data.get("conditioning"), data.get("recipe")
        return cls(
            weights=data["weights"],
            sha256=data["sha256"],
            size=_optional(data, "size", int, where, path) or 0,
            conditioning=Conditioning()
            if conditioning is None
            else Conditioning.from_dict(conditioning, where, f"{path}.conditioning"),
            recipe=None if recipe is None else StageRecord.from_dict(recipe, where, f"{path}.recipe"),
        )


@dataclass(frozen=True)
class Metrics:
    """Measured figures: a ``cmosx eval`` report and/or flat named figures, kept as stored (``entries``).

    Construction checks the parts code reads (``dataset``, ``groups``, ``rows``) and raises
    :class:`ModelError` naming the field when one has the wrong type.
    """

    entries: dict[str, Any] = field(default_factory=dict)  # the JSON object as stored
    where: str = field(default="metrics", compare=False, repr=False)  # for error messages

    def __post_init__(self) -> None:
        entries = _object(self.entries, self.where, "metrics")
        _optional(entries, "dataset", str, self.where, "metrics")
        _optional(entries, "groups", list, self.where, "metrics")
        for row, per_group in _object(entries.get("rows") or {}, self.where, "metrics.rows").items():
            for group, values in _object(per_group, self.where, f"metrics.rows.{row}").items():
                for key in _object(values, self.where, f"metrics.rows.{row}.{group}"):
                    _optional(values, key, (int, float), self.where, f"metrics.rows.{row}.{group}")

    @property
    def dataset(self) -> str | None:
        return self.entries.get("dataset")

    @property
    def groups(self) -> list[Any] | None:
        return self.entries.get("groups")

    @property
    def rows(self) -> dict[str, dict[str, dict[str, float | None]]]:
        """``rows[row][group][metric]`` of an eval report (group ``"mean"``: over the groups); {} if none."""
        return self.entries.get("rows") or {}

    def means(self) -> dict[str, dict[str, float | None]]:
        """Each row's mean over the test groups (rows without a mean are left out)."""
        return {row: per_group["mean"] for row, per_group in self.rows.items() if "mean" in per_group}

    def to_dict(self) -> dict[str, Any]:
        return dict(self.entries)


@dataclass
class ModelCard:
    """Everything about a trained model except its tensors (see the module docstring)."""

    name: str
    spec: ModelSpec
    num_classes: int
    class_names: list[str]
    scale: int = 4
    sigma_max: float = 5.0  # blur sigma range [0, sigma_max] in HR pixels
    recipe: Recipe = field(default_factory=Recipe)
    metrics: Metrics = field(default_factory=Metrics)
    description: str = ""
    companions: dict[str, Companion] = field(default_factory=dict)  # role ("upper", "baseline") -> companion

    def __post_init__(self) -> None:
        if len(self.class_names) != self.num_classes:
            raise ModelError(
                f"model card {self.name!r}: {len(self.class_names)} class names for {self.num_classes} classes"
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": CONFIG_FORMAT,
            "format_version": CONFIG_VERSION,
            "name": self.name,
            "spec": spec_to_dict(self.spec),
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "scale": self.scale,
            "sigma_max": self.sigma_max,
            "recipe": self.recipe.to_dict(),
            "metrics": self.metrics.to_dict(),
            "description": self.description,
            "companions": {role: c.to_dict() for role, c in self.companions.items()},
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, data: Any, where: str = "config") -> ModelCard:
        if not isinstance(data, dict) or data.get("format") != CONFIG_FORMAT:
            raise ModelError(f'{where}: not a cmosx model config (no "format": "{CONFIG_FORMAT}")')
        if data.get("format_version") != CONFIG_VERSION:
            raise ModelError(f"{where}: unsupported config format_version {data.get('format_version')!r}")
        fields = {f.name for f in dataclasses.fields(cls)}
        body = {k: v for k, v in data.items() if k not in ("format", "format_version")}
        unknown = sorted(set(body) - fields)
        required = [
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        missing = sorted(name for name in required if name not in body)
        if unknown or missing:
            raise ModelError(f"{where}: missing field(s) {missing or '-'}, unknown field(s) {unknown or '-'}")
        body["recipe"] = Recipe.from_dict(body.get("recipe") or {}, where)
        body["metrics"] = Metrics(_object(body.get("metrics") or {}, where, "metrics"), where=where)
        body["companions"] = {
            role: Companion.from_dict(entry, where, f"companions.{role}")
            for role, entry in _object(body.get("companions") or {}, where, "companions").items()
        }
        for key, kind in (("name", str), ("description", str), ("class_names", list)):
            _optional(body, key, kind, where, "")
        for key in ("num_classes", "scale"):
            _optional(body, key, int, where, "")
        _optional(body, "sigma_max", (int, float), where, "")
        try:
            body["spec"] = spec_from_dict(body["spec"])
            return cls(**body)
        except ModelError as error:
            raise ModelError(f"{where}: {error}") from None
        except (TypeError, ValueError) as error:
            raise ModelError(f"{where}: malformed model config: {error}") from None

    @classmethod
    def from_json(cls, text: str, where: str = "config") -> ModelCard:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ModelError(f"{where}: invalid JSON: {error}") from None
        return cls.from_dict(data, where)
