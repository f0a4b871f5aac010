"""Save and load a model as ``model.safetensors`` + ``config.json`` (never pickle).

The weights file holds the state dicts of both networks under the prefixes ``cmos.`` and ``sr.``;
the config is a :class:`~cmosx.models.card.ModelCard` in JSON (spec, classes, scale, blur sigma range, training recipe,
measured metrics). A model may carry *companions*: SR networks of the same spec kept beside it (a file
holding only ``sr.`` tensors, listed in the card with its sha256) so that its evaluation can be re-run
from the files alone -- ``upper`` (trained on ground-truth maps) and ``baseline`` (blur-unaware).

Loading is strict: missing, unexpected or mis-shaped tensors raise :class:`ModelError` naming them; a
sha256 that differs from the expected one raises :class:`ChecksumError`. Writes are atomic
(:mod:`cmosx.io.atomic`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from cmosx.errors import ChecksumError, ModelError
from cmosx.io.atomic import atomic_write, atomic_write_text
from cmosx.models.card import ModelCard
from cmosx.models.cmos import CMOS
from cmosx.models.model import Model
from cmosx.models.rrdb_sft import RRDBSFT

PREFIXES = ("cmos.", "sr.")


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def build_networks(card: ModelCard) -> tuple[CMOS, RRDBSFT]:
    """Fresh (untrained) networks for a card."""
    return (
        CMOS(card.spec.cmos, card.num_classes, card.scale),
        RRDBSFT(card.spec.sr, card.num_classes, card.scale),
    )


def _state_tensors(net: torch.nn.Module, prefix: str, storage_dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    """``net``'s state dict on the CPU under ``prefix``, floating-point tensors in ``storage_dtype`` if given."""
    tensors = {}
    for key, value in net.state_dict().items():
        value = value.detach().to("cpu")
        if storage_dtype is not None and value.is_floating_point():
            value = value.to(storage_dtype)
        tensors[prefix + key] = value.contiguous()
    return tensors


def save_model(
    weights_path: Path,
    config_path: Path,
    cmos: CMOS,
    sr: RRDBSFT,
    card: ModelCard,
    storage_dtype: torch.dtype | None = None,
) -> str:
    """Write both networks' tensors (safetensors) and the card (JSON); return the weights' sha256.

    ``storage_dtype`` (e.g. ``torch.float16``) stores floating-point tensors in that type to halve the
    file; loading copies them back into the networks' float32 parameters.
    """
    tensors = {**_state_tensors(cmos, "cmos.", storage_dtype), **_state_tensors(sr, "sr.", storage_dtype)}
    metadata = {"format": "pt"}  # one key: safetensors writes several in no fixed order (sha256 would vary)
    atomic_write(Path(weights_path), lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
    atomic_write_text(Path(config_path), card.to_json())
    return sha256_file(Path(weights_path))


def save_sr_network(weights_path: Path, sr: RRDBSFT, storage_dtype: torch.dtype | None = None) -> str:
    """Write one SR network's tensors (prefix ``sr.``) as a companion file; return its sha256."""
    tensors = _state_tensors(sr, "sr.", storage_dtype)
    atomic_write(Path(weights_path), lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt"}))
    return sha256_file(Path(weights_path))


def _verified_tensors(weights_path: Path, expected_sha256: str | None) -> tuple[dict[str, torch.Tensor], str]:
    if not weights_path.is_file():
        raise ModelError(f"{weights_path}: weights file not found")
    digest = sha256_file(weights_path)
    if expected_sha256 is not None and digest != expected_sha256.lower():
        raise ChecksumError(f"{weights_path}: sha256 mismatch (expected {expected_sha256}, got {digest})")
    try:
        return load_file(str(weights_path), device="cpu"), digest
    except (SafetensorError, OSError, ValueError) as error:
        raise ModelError(f"{weights_path}: not a readable safetensors file: {error}") from None


def load_sr_network(weights_path: Path, card: ModelCard, expected_sha256: str | None = None) -> RRDBSFT:
    """A companion SR network written by :func:`save_sr_network`, for ``card``'s spec, in eval mode."""
    weights_path = Path(weights_path)
    tensors, _ = _verified_tensors(weights_path, expected_sha256)
    stray = sorted(k for k in tensors if not k.startswith("sr."))
    if stray:
        raise ModelError(f"{weights_path}: weights do not match the config: unexpected keys: {_listed(stray)}")
    sr = build_networks(card)[1]
    _load_into(sr, tensors, "sr.", str(weights_path))
    return sr.eval()


def read_card(config_path: Path) -> ModelCard:
    """The :class:`ModelCard` stored in ``config_path``."""
    config_path = Path(config_path)
    try:
        text = config_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ModelError(f"{config_path}: model config not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ModelError(f"{config_path}: cannot read model config: {error}") from None
    return ModelCard.from_json(text, str(config_path))


def _listed(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def _load_into(net: torch.nn.Module, tensors: dict[str, torch.Tensor], prefix: str, where: str) -> None:
    expected = net.state_dict()
    given = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    problems = []
    if missing:
        problems.append(f"missing keys: {_listed([prefix + k for k in missing])}")
    if unexpected:
        problems.append(f"unexpected keys: {_listed([prefix + k for k in unexpected])}")
    shapes = [
        f"{prefix}{k} {tuple(given[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in given and given[k].shape != v.shape
    ]
    if shapes:
        problems.append(f"shape mismatch: {_listed(shapes, 4)}")
    if problems:
        raise ModelError(f"{where}: weights do not match the config: {'; '.join(problems)}")
    net.load_state_dict(given, strict=True)


def load_model(
    weights_path: Path, config_path: Path, expected_sha256: str | None = None, source: str | None = None
) -> Model:
    """Load a model saved by :func:`save_model`; both networks are returned in eval mode on the CPU."""
    weights_path, config_path = Path(weights_path), Path(config_path)
    tensors, digest = _verified_tensors(weights_path, expected_sha256)
    card = read_card(config_path)
    stray = sorted(k for k in tensors if not k.startswith(PREFIXES))
    if stray:
        raise ModelError(f"{weights_path}: weights do not match the config: unexpected keys: {_listed(stray)}")
    cmos, sr = build_networks(card)
    _load_into(cmos, tensors, "cmos.", str(weights_path))
    _load_into(sr, tensors, "sr.", str(weights_path))
    return Model(
        card=card,
        cmos=cmos.eval(),
        sr=sr.eval(),
        source=source or str(weights_path),
        sha256=digest,
        weights_path=weights_path,
    )
