"""Resolve a model reference to a :class:`~cmosx.models.model.Model`: bundled name, local path or Hugging Face Hub.

References:

- ``None``: the bundled default (``default`` in ``weights/manifest.json``, else ``cmosx-lite``);
- a bundled name listed in ``weights/manifest.json`` (checked against its sha256);
- a local path: a folder with ``model.safetensors`` + ``config.json``, or a ``.safetensors`` file with
  ``<stem>.json`` or ``config.json`` beside it;
- ``hf://owner/repo[@revision][/path/in/repo.safetensors]`` fetched with
  ``huggingface_hub.hf_hub_download`` (default file ``model.safetensors``, its config ``config.json``
  in the same repo folder). Pin a revision (a commit hash) for reproducible results. The cache folder
  (``HF_HUB_CACHE``) and offline mode (``HF_HUB_OFFLINE=1``: cache only) are read at call time. Files
  stored with Git LFS sit in the cache under their sha256, which is verified.

A model's companions (SR networks for its evaluation, see :mod:`cmosx.models.weights_io`) are files
beside its weights -- in the same folder, or the same Hub repo folder -- checked against the sha256 its
card records (:func:`load_companion`).

The bundled folder is the package ``cmosx._weights`` (``weights/`` in the source tree), found with
``importlib.resources`` so it works from a wheel install. Its manifest::

    {"default": "cmosx-lite",
     "models": {"cmosx-lite": {"weights": "cmosx-lite.safetensors",
                               "config": "cmosx-lite.json", "sha256": "...", "size": 123}}}
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from cmosx.errors import ChecksumError, ModelError, UsageError
from cmosx.io.atomic import atomic_write_json
from cmosx.models.card import Companion, ModelCard
from cmosx.models.model import Model
from cmosx.models.rrdb_sft import RRDBSFT
from cmosx.models.weights_io import load_model, load_sr_network, read_card, sha256_file

DEFAULT_MODEL_NAME = "cmosx-lite"
HUB_PREFIX = "hf://"
_HUB_REF = re.compile(r"^(?P<repo>[\w.-]+/[\w.-]+)(?:@(?P<rev>[\w.-]+))?(?:/(?P<file>[^@]+))?$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class BundledModel:
    """One entry of ``weights/manifest.json`` with absolute paths."""

    name: str
    weights_path: Path
    config_path: Path
    sha256: str
    size: int  # bytes of the weights file as recorded in the manifest
    is_default: bool = False

    def card(self) -> ModelCard:
        return read_card(self.config_path)

    def verify(self) -> str:
        """Recompute the sha256; :class:`ChecksumError` on a mismatch, :class:`ModelError` if missing."""
        if not self.weights_path.is_file():
            raise ModelError(f"{self.weights_path}: bundled weights file not found")
        digest = sha256_file(self.weights_path)
        if digest != self.sha256:
            raise ChecksumError(f"{self.weights_path}: sha256 mismatch (expected {self.sha256}, got {digest})")
        return digest

    def verify_companions(self) -> dict[str, str]:
        """Recompute each companion's sha256 against the card: ``{role: sha256}``; raises like :meth:`verify`."""
        checked = {}
        for role, entry in sorted(self.card().companions.items()):
            path = self.weights_path.parent / _companion_file_name(entry, str(self.config_path))
            if not path.is_file():
                raise ModelError(f"{path}: {self.name}'s {role} companion weights file not found")
            digest = sha256_file(path)
            if digest != entry.sha256.lower():
                raise ChecksumError(f"{path}: sha256 mismatch (expected {entry.sha256}, got {digest})")
            checked[role] = digest
        return checked


def _companion_file_name(entry: Companion, where: str) -> str:
    """The companion's file name from its card entry: a plain name in the model's own folder."""
    name = entry.weights
    if not name.endswith(".safetensors") or Path(name).name != name or name[0] == ".":
        raise ModelError(f"{where}: bad companion entry {name!r} (expected a .safetensors file name)")
    return name


def bundled_dir() -> Path:
    """The folder holding bundled weights and ``manifest.json`` (package ``cmosx._weights``).

    Installed, that is the package ``cmosx._weights``; run from a source checkout without an install
    (``python -m cmosx`` in the repository), it is the checkout's ``weights/`` folder.
    """
    try:
        return Path(str(resources.files("cmosx._weights")))
    except ModuleNotFoundError:
        checkout = Path(__file__).resolve().parents[2] / "weights"
        if (checkout / "manifest.json").is_file():
            return checkout
        raise ModelError("no bundled weights folder: cmosx is not installed (pip install .)") from None


def writable_bundled_dir() -> Path:
    """:func:`bundled_dir` when an export may write into it: a source checkout or an editable install.

    Raises :class:`UsageError` when the folder lies inside an installed package (``site-packages`` or
    ``dist-packages``) or is not writable: an export there would change an installed package and vanish
    with its next upgrade, so the user names a folder instead.
    """
    folder = bundled_dir()
    installed = any(part in ("site-packages", "dist-packages") for part in folder.resolve().parts)
    if installed or not os.access(folder, os.W_OK):
        why = "is part of an installed package" if installed else "is not writable"
        raise UsageError(
            f"the bundled weights folder {folder} {why}: export to a folder you name instead "
            "(e.g. `cmosx weights export RUN ./my-model`) and use it with --model ./my-model"
        )
    return folder


def _read_manifest(folder: Path) -> dict:
    path = folder / "manifest.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {"models": {}}
    except (OSError, json.JSONDecodeError) as error:
        raise ModelError(f"{path}: cannot read the weights manifest: {error}") from None
    if not isinstance(data, dict) or not isinstance(data.get("models", {}), dict):
        raise ModelError(f'{path}: malformed weights manifest (expected {{"models": {{...}}}})')
    return data


def bundled_models() -> list[BundledModel]:
    """Every model listed in the bundled manifest (empty while none is shipped)."""
    folder = bundled_dir()
    manifest = _read_manifest(folder)
    default = manifest.get("default", DEFAULT_MODEL_NAME)
    models = []
    for name, entry in sorted(manifest.get("models", {}).items()):
        try:
            models.append(
                BundledModel(
                    name=name,
                    weights_path=folder / entry["weights"],
                    config_path=folder / entry["config"],
                    sha256=str(entry["sha256"]).lower(),
                    size=int(entry.get("size", 0)),
                    is_default=name == default,
                )
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ModelError(f"{folder / 'manifest.json'}: bad entry for {name!r}: {error}") from None
    return models


def register_bundled(name: str, weights_file: str, config_file: str, default: bool = True) -> BundledModel:
    """Add (or replace) a model already copied into the bundled folder to the manifest (atomic write)."""
    folder = writable_bundled_dir()
    weights_path = folder / weights_file
    if not weights_path.is_file() or not (folder / config_file).is_file():
        raise ModelError(f"{folder}: {weights_file} and {config_file} must be in the bundled folder first")
    manifest = _read_manifest(folder)
    entry = {
        "weights": weights_file,
        "config": config_file,
        "sha256": sha256_file(weights_path),
        "size": weights_path.stat().st_size,
    }
    manifest.setdefault("models", {})[name] = entry
    if default:
        manifest["default"] = name
    path = folder / "manifest.json"
    atomic_write_json(path, manifest, sort_keys=True)
    return next(m for m in bundled_models() if m.name == name)


def _load_bundled(name: str | None) -> Model:
    models = bundled_models()
    if name is None:
        default = [m for m in models if m.is_default]
        if not default:
            raise ModelError(
                "no bundled model is installed (weights/manifest.json lists none); "
                "pass --model with a local path or an hf://owner/repo reference"
            )
        model = default[0]
    else:
        model = next(m for m in models if m.name == name)
    model.verify()
    return load_model(model.weights_path, model.config_path, expected_sha256=model.sha256, source=model.name)


def _local_config_for(weights: Path) -> Path:
    for candidate in (weights.with_suffix(".json"), weights.parent / "config.json"):
        if candidate.is_file():
            return candidate
    raise ModelError(f"{weights}: no model config beside it ({weights.stem}.json or config.json)")


def _load_local(path: Path) -> Model:
    if path.is_dir():
        weights, config = path / "model.safetensors", path / "config.json"
        if not weights.is_file():
            raise ModelError(f"{path}: folder has no model.safetensors")
        return load_model(weights, config, source=str(path))
    if path.suffix != ".safetensors":
        raise ModelError(f"{path}: not a .safetensors weights file or a model folder")
    return load_model(path, _local_config_for(path), source=str(path))


def _repo_folder(path_in_repo: str) -> str:
    """``"a/b/model.safetensors"`` -> ``"a/b/"``; a file at the repo root -> ``""``."""
    return path_in_repo.rsplit("/", 1)[0] + "/" if "/" in path_in_repo else ""


def parse_hub_reference(ref: str) -> tuple[str, str | None, str]:
    """``hf://owner/repo[@revision][/file]`` -> (repo_id, revision or None, file in repo)."""
    match = _HUB_REF.match(ref[len(HUB_PREFIX) :]) if ref.startswith(HUB_PREFIX) else None
    if match is None:
        raise ModelError(f"bad Hub reference {ref!r}: expected hf://owner/repo[@revision][/file.safetensors]")
    filename = match.group("file") or "model.safetensors"
    if not filename.endswith(".safetensors"):
        raise ModelError(f"bad Hub reference {ref!r}: the file must be a .safetensors file")
    return match.group("repo"), match.group("rev"), filename


def _hub_download(repo: str, filename: str, revision: str | None, ref: str) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
    )

    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "on", "yes", "true")
    cache_dir = os.environ.get("HF_HUB_CACHE") or None
    try:
        path = hf_hub_download(
            repo_id=repo,
            filename=filename,
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=offline,
            library_name="cmosx",
        )
    except LocalEntryNotFoundError:
        where = "the local Hub cache (offline mode)" if offline else "the Hub or the local cache"
        raise ModelError(f"{ref}: {filename} not found in {where}") from None
    except EntryNotFoundError:
        raise ModelError(f"{ref}: the repository has no file {filename}") from None
    except (HfHubHTTPError, HFValidationError, OSError, ValueError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelError(f"{ref}: cannot download {filename}: {first_line}") from None
    return Path(path)


def _verify_lfs_blob(path: Path, ref: str) -> str:
    """Files stored with Git LFS are cached as ``blobs/<sha256>``: check the content against that name."""
    blob = path.resolve()
    digest = sha256_file(blob)
    if _SHA256.match(blob.name) and digest != blob.name:
        raise ChecksumError(f"{ref}: {path.name} sha256 mismatch (expected {blob.name}, got {digest})")
    return digest


def _load_hub(ref: str) -> Model:
    repo, revision, filename = parse_hub_reference(ref)
    weights = _hub_download(repo, filename, revision, ref)
    config = _hub_download(repo, _repo_folder(filename) + "config.json", revision, ref)
    digest = _verify_lfs_blob(weights, ref)
    return load_model(weights, config, expected_sha256=digest, source=ref)


def load_companion(loaded: Model, role: str) -> RRDBSFT | None:
    """The companion SR network ``role`` ("upper", "baseline") of a loaded model; None if it has none.

    Read from beside the model's weights (downloaded from the same Hub repo folder for ``hf://`` models)
    and checked against the sha256 in the card.
    """
    entry = loaded.card.companions.get(role)
    if entry is None:
        return None
    name = _companion_file_name(entry, f"{loaded.source}: model card")
    if loaded.source.startswith(HUB_PREFIX):
        repo, revision, filename = parse_hub_reference(loaded.source)
        path = _hub_download(repo, _repo_folder(filename) + name, revision, loaded.source)
    elif loaded.weights_path is not None:
        path = loaded.weights_path.parent / name
    else:
        raise ModelError(f"{loaded.source}: cannot locate its {role} companion ({name})")
    return load_sr_network(path, loaded.card, expected_sha256=entry.sha256)


@dataclass(frozen=True)
class CachedHubModel:
    """A cmosx model found in the local Hugging Face cache: a weights file with a cmosx config beside it."""

    reference: str  # hf://owner/repo@commit/file.safetensors, usable as --model
    weights_path: Path
    config_path: Path
    size: int  # bytes of the weights file
    refs: tuple[str, ...]  # branch or tag names pointing at this revision ("main", ...)

    def card(self) -> ModelCard:
        return read_card(self.config_path)


def hub_cache_dir() -> Path:
    """The Hub cache folder in use: ``HF_HUB_CACHE`` if set, else huggingface_hub's default."""
    from huggingface_hub import constants

    return Path(os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE)


def cached_hub_models() -> list[CachedHubModel]:
    """Every cmosx model in the local Hub cache (one per weights file and cached revision), sorted.

    A weights file counts when a ``config.json`` in its repo folder is a cmosx model card that does not
    list it as a companion. Nothing is downloaded; a missing cache is an empty list.
    """
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        info = scan_cache_dir(hub_cache_dir())
    except CacheNotFound:
        return []
    found = []
    for repo in sorted(info.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model":
            continue
        for revision in sorted(repo.revisions, key=lambda r: r.commit_hash):
            files = {f.file_path.relative_to(revision.snapshot_path).as_posix(): f for f in revision.files}
            for name, file in sorted(files.items()):
                config = files.get(_repo_folder(name) + "config.json")
                if not name.endswith(".safetensors") or config is None:
                    continue
                try:
                    card = read_card(config.file_path)
                except ModelError:
                    continue  # another library's config.json
                companions = {entry.weights for entry in card.companions.values()}
                if Path(name).name in companions:
                    continue
                found.append(
                    CachedHubModel(
                        reference=f"{HUB_PREFIX}{repo.repo_id}@{revision.commit_hash}/{name}",
                        weights_path=file.file_path,
                        config_path=config.file_path,
                        size=file.size_on_disk,
                        refs=tuple(sorted(revision.refs)),
                    )
                )
    return found


def resolve_model(ref: str | None) -> Model:
    """Load the model ``ref`` names (see the module docstring); :class:`ModelError` if it cannot."""
    if ref is None:
        return _load_bundled(None)
    if ref.startswith(HUB_PREFIX):
        return _load_hub(ref)
    names = [m.name for m in bundled_models()]
    if ref in names:
        return _load_bundled(ref)
    path = Path(ref).expanduser()
    if path.exists():
        return _load_local(path)
    known = ", ".join(names) if names else "none installed"
    raise ModelError(
        f"unknown model {ref!r}: not a bundled name (bundled: {known}), not an existing path, "
        "and not an hf://owner/repo reference"
    )
