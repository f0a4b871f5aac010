"""The one place the photo commands touch the model and the engine (imported inside commands only)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cmosx.errors import UsageError


@dataclass
class EngineChoice:
    """Command-line engine settings, validated before any model is loaded."""

    model: str | None
    device: str
    precision: str
    tile: str | int
    overlap: int
    blur_scale: float = 1.0  # --deblur
    keep_bokeh: float | None = None  # --keep-bokeh threshold (sigma), None = restore everything


def parse_tile(value: str) -> str | int:
    """``--tile``: "auto" or a positive number of LR pixels."""
    if value == "auto":
        return value
    try:
        tile = int(value)
    except ValueError:
        raise UsageError(f"--tile must be 'auto' or a positive integer, got '{value}'") from None
    if tile <= 0:
        raise UsageError(f"--tile must be positive, got {tile}")
    return tile


def shard_device(device: str, local_rank: int | None, world: int) -> str:
    """Under ``torchrun`` with several processes, "auto"/"cuda" mean this process's own GPU (``cuda:LOCAL_RANK``)."""
    if world <= 1 or local_rank is None or device not in ("auto", "cuda"):
        return device
    import torch

    if torch.cuda.is_available() and torch.cuda.device_count() > 0:
        return f"cuda:{local_rank % torch.cuda.device_count()}"
    return device


def resolve_model(ref: str | None) -> Any:
    """The :class:`~cmosx.models.model.Model` for ``--model`` (bundled name, path or Hub reference; None: default)."""
    from cmosx.models.hub import resolve_model as resolve

    return resolve(ref)


def load_upscaler(choice: EngineChoice) -> tuple[Any, Any]:
    """Resolve the model and build the engine's ``Upscaler``: returns (upscaler, loaded model).

    On the CPU the process keeps freed memory for the next tile and photo instead of page-faulting it
    in again (:func:`cmosx.engine.memory.retain_freed_memory`).
    """
    from cmosx.engine.memory import retain_freed_memory
    from cmosx.engine.pipeline import Upscaler

    model = resolve_model(choice.model)
    upscaler = Upscaler(
        model,
        device=choice.device,
        precision=choice.precision,
        tile=choice.tile,
        overlap=choice.overlap,
        blur_scale=choice.blur_scale,
        keep_bokeh=choice.keep_bokeh,
    )
    if upscaler.device.type == "cpu":
        retain_freed_memory()
    return upscaler, model


def model_label(model: Any) -> str:
    """How the report names a model: its card name and where it came from."""
    name = getattr(model.card, "name", None) or "model"
    source = getattr(model, "source", None)
    return f"{name} ({source})" if source and source != name else name
