"""The on-disk cache of what the engine measures about a machine and model, once, not per process.

Two kinds of entries: the ``--precision auto`` decision (:func:`load`, :func:`store`) and the fitted
memory models that size ``auto`` tiles (:func:`load_entry`, :func:`store_entry` with ``kind: memory``).

Where: ``$CMOSX_PROBE_CACHE`` (or its older name ``$CMOSX_PRECISION_CACHE``) when set (a file path;
``off`` disables the cache, so every process measures), else ``$XDG_CACHE_HOME/cmosx/probes.json``
(``~/.cache/cmosx/probes.json``). Clear it with ``cmosx bench clear-cache`` (or delete the file).

The file is JSON: ``{"version": 1, "entries": {KEY: {"precision": "bf16", "machine": ..., "model": ...,
"measured": {...}}, KEY2: {"kind": "memory", "fixed": ..., "per_pixel": ..., "machine": ..., "model":
...}}}`` where KEY is a hash of the machine and the model (see :func:`cache_key`). A missing, unreadable
or malformed file (or entry) reads as empty; a failed write is ignored (the answer is then measured again
by the next process). Writes are atomic (``cmosx.io.atomic``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
from pathlib import Path

import torch

from cmosx.errors import OutputError

ENV_VAR = "CMOSX_PROBE_CACHE"
OLD_ENV_VAR = "CMOSX_PRECISION_CACHE"  # the name from when the cache held only precisions; still honoured
VERSION = 1


def cache_path() -> Path | None:
    """The cache file in use, or None when ``CMOSX_PROBE_CACHE=off`` (or ``CMOSX_PRECISION_CACHE=off``)."""
    value = os.environ.get(ENV_VAR, "").strip() or os.environ.get(OLD_ENV_VAR, "").strip()
    if value.lower() in ("off", "0", "none"):
        return None
    if value:
        return Path(value).expanduser()
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or str(Path.home() / ".cache")
    return Path(base) / "cmosx" / "probes.json"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_id(device: torch.device) -> str:
    """What makes a timing comparable: the processor (or GPU), its threads, and the torch build."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(index)
        hardware = f"cuda {torch.cuda.get_device_name(index)} sm{major}{minor} cuda{torch.version.cuda}"
    elif device.type == "mps":
        hardware = f"mps {platform.machine()} {platform.mac_ver()[0]}"
    else:
        hardware = f"cpu {_cpu_model()} x{os.cpu_count()} threads {torch.get_num_threads()}"
    return f"{hardware} torch {torch.__version__}"


def cache_key(device: torch.device, model_id: str) -> tuple[str, str, str]:
    """(key, machine, model): the key hashes the machine description and the model's identity."""
    machine = machine_id(device)
    digest = hashlib.sha256(f"{machine}\n{model_id}".encode()).hexdigest()[:24]
    return digest, machine, model_id


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    entries = data.get("entries") if isinstance(data, dict) and data.get("version") == VERSION else None
    return entries if isinstance(entries, dict) else {}


def load_entry(key: str) -> dict | None:
    """The cached entry (a dict) for ``key``, or None (cache off, no such entry, damaged file)."""
    path = cache_path()
    if path is None:
        return None
    entry = _read(path).get(key)
    return entry if isinstance(entry, dict) else None


def store_entry(key: str, entry: dict) -> bool:
    """Record one entry (atomic rewrite of the file); False when the cache is off or not writable."""
    from cmosx.io.atomic import atomic_write_bytes  # only when writing: keeps the engine's imports light

    path = cache_path()
    if path is None:
        return False
    entries = _read(path)
    entries[key] = entry
    payload = json.dumps({"version": VERSION, "entries": entries}, indent=1, sort_keys=True).encode()
    try:
        atomic_write_bytes(path, payload)
    except OutputError:
        return False
    return True


def load(key: str) -> str | None:
    """The cached precision name (``fp32``, ``bf16``, ``fp16``) for ``key``, or None."""
    value = (load_entry(key) or {}).get("precision")
    return value if value in ("fp32", "bf16", "fp16") else None


def store(key: str, precision: str, machine: str, model: str, measured: dict[str, float]) -> bool:
    """Record a precision decision; False when the cache is off or not writable."""
    return store_entry(key, {"precision": precision, "machine": machine, "model": model, "measured": measured})


def clear() -> tuple[Path | None, int]:
    """Delete the cache file; returns (its path, how many entries it held)."""
    path = cache_path()
    if path is None:
        return None, 0
    count = len(_read(path))
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    return path, count
