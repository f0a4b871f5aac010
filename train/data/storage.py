"""On-disk BSR datasets: layout, atomic writers and the readers training / evaluation use.

Layout of a dataset folder (``cmosx dataset generate --out DIR``)::

    DIR/dataset.json                  dataset name, format and generator version, seed, kernel size,
                                      sigma_max, degradation (scale, downsampler, noise, JPEG), class
                                      names, HR size, source notes, and per split / group the count
    DIR/train/ , DIR/val/ , DIR/test/group1/ ... DIR/test/group5/
        hr/NAME.png      sharp HR, RGB 8-bit
        lr/NAME.png      degraded LR (x4 smaller), RGB 8-bit
        blur/NAME.png    sigma map in HR pixels, 16-bit grey PNG of round(sigma * 100) (0.01 steps)
        labels/NAME.png  semantic labels, 8-bit grey (255 = ignore)
        meta/NAME.json   per-image record (space_invariant, lens or sigma, source); written last, so
                         its presence marks a complete sample (generation resumes from there)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from cmosx.catalog import DATASET_NAMES
from cmosx.errors import DatasetError, UsageError
from cmosx.io.atomic import atomic_write, atomic_write_json
from cmosx.train.data.degrade import Degradation
from cmosx.train.data.splits import TEST_GROUPS, split_folder

FORMAT_VERSION = 1
GENERATOR_VERSION = "cmosx-bsr-1"
BLUR_SCALE = 100.0  # stored value = round(sigma * 100)


# ------------------------------------------------------------------------------------------- writing


def write_json(path: Path, data: dict) -> None:
    atomic_write_json(path, data, sort_keys=True, durable=False)


def _png(path: Path, array: np.ndarray) -> None:
    atomic_write(path, lambda temp: Image.fromarray(array).save(temp, format="PNG"), durable=False)


def rgb_to_uint8(image: torch.Tensor) -> np.ndarray:
    """3 x H x W [0, 1] -> H x W x 3 uint8."""
    return (image.clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()


def blur_to_uint16(blur: torch.Tensor) -> np.ndarray:
    """1 x H x W sigma -> H x W uint16 of round(sigma * 100)."""
    return (blur[0].clamp(0, 655.35) * BLUR_SCALE).round().to(torch.int32).numpy().astype(np.uint16)


def sample_done(folder: Path, name: str) -> bool:
    return (folder / "meta" / f"{name}.json").is_file()


def write_sample(folder: Path, sample: dict, record: dict) -> None:
    """Write one sample (the dataset dict) into a split folder; the meta file goes last."""
    name = sample["name"]
    labels = sample["labels"]
    if int(labels.min()) < 0 or int(labels.max()) > 255:
        raise DatasetError(f"{name}: labels outside 0..255")
    _png(folder / "hr" / f"{name}.png", rgb_to_uint8(sample["hr"]))
    _png(folder / "lr" / f"{name}.png", rgb_to_uint8(sample["lr"]))
    _png(folder / "blur" / f"{name}.png", blur_to_uint16(sample["blur"]))
    _png(folder / "labels" / f"{name}.png", labels.to(torch.uint8).numpy())
    write_json(
        folder / "meta" / f"{name}.json", {"name": name, "space_invariant": bool(sample["space_invariant"]), **record}
    )


# ------------------------------------------------------------------------------------------- reading


def read_rgb(path: Path) -> torch.Tensor:
    """PNG -> 3 x H x W float [0, 1]."""
    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError) as error:
        raise DatasetError(f"{path}: cannot read image ({error})") from error
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 255.0


def read_blur(path: Path) -> torch.Tensor:
    """16-bit PNG -> 1 x H x W float sigma."""
    try:
        with Image.open(path) as im:
            if im.mode not in ("I;16", "I;16B", "I"):
                raise DatasetError(f"{path}: blur map must be a 16-bit grey PNG, found mode {im.mode}")
            arr = np.asarray(im).astype(np.float32)
    except OSError as error:
        raise DatasetError(f"{path}: cannot read blur map ({error})") from error
    return torch.from_numpy(arr / BLUR_SCALE).unsqueeze(0)


def read_labels(path: Path) -> torch.Tensor:
    """8-bit PNG -> H x W int64."""
    try:
        with Image.open(path) as im:
            if im.mode != "L":
                raise DatasetError(f"{path}: labels must be an 8-bit grey PNG, found mode {im.mode}")
            arr = np.asarray(im, dtype=np.uint8)
    except OSError as error:
        raise DatasetError(f"{path}: cannot read labels ({error})") from error
    return torch.from_numpy(arr.astype(np.int64))


def read_dataset_info(root: Path) -> dict:
    path = Path(root) / "dataset.json"
    if not path.is_file():
        raise DatasetError(
            f"{root}: not a BSR dataset folder (no dataset.json); create one with 'cmosx dataset generate'"
        )
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise DatasetError(f"{path}: unreadable dataset description ({error})") from error
    if info.get("format_version") != FORMAT_VERSION:
        raise DatasetError(f"{path}: format version {info.get('format_version')!r}, expected {FORMAT_VERSION}")
    return info


class BSRFolder(Dataset):
    """A split (or test group) of an on-disk BSR dataset; items are the dicts of docs/interfaces.md.

    Only complete samples (with their meta file) are listed, sorted by name. ``info`` holds
    dataset.json (``info["classes"]``, ``info["kernel_size"]``, ``info["sigma_max"]``...).
    """

    def __init__(self, root: Path, split: str, group: int | None, info: dict):
        self.root, self.split, self.group, self.info = Path(root), split, group, info
        self.folder = self.root / split_folder(split, group)
        if not self.folder.is_dir():
            raise DatasetError(f"{self.folder}: split folder missing (was this split generated?)")
        self.names = sorted(p.stem for p in (self.folder / "meta").glob("*.json"))
        if not self.names:
            raise DatasetError(f"{self.folder}: no complete samples")
        self.classes: list[str] = list(info["classes"])
        self.num_classes = len(self.classes)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def degradation(self) -> Degradation:
        """How this set's LR images were made (re-applied by the zoom augmentation)."""
        return Degradation(**self.info["degradation"])

    def meta(self, i: int) -> dict:
        path = self.folder / "meta" / f"{self.names[i]}.json"
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise DatasetError(f"{path}: unreadable sample record ({error})") from error

    def __getitem__(self, i: int) -> dict:
        name = self.names[i]
        hr = read_rgb(self.folder / "hr" / f"{name}.png")
        lr = read_rgb(self.folder / "lr" / f"{name}.png")
        blur = read_blur(self.folder / "blur" / f"{name}.png")
        labels = read_labels(self.folder / "labels" / f"{name}.png")
        scale = int(self.info["degradation"]["scale"])
        if hr.shape[1:] != blur.shape[1:] or hr.shape[1:] != labels.shape or lr.shape[1] * scale != hr.shape[1]:
            raise DatasetError(f"{self.folder}: sample {name} has mismatched sizes")
        return {
            "hr": hr,
            "lr": lr,
            "blur": blur,
            "labels": labels,
            "space_invariant": torch.tensor(bool(self.meta(i)["space_invariant"])),
            "name": name,
        }


def open_dataset(name: str, root: str | Path, split: str, group: int | None = None) -> BSRFolder:
    """Open a split of a dataset written by ``cmosx dataset generate``.

    ``name``: one of :data:`~cmosx.catalog.DATASET_NAMES` (must match dataset.json); ``split``: train,
    val or test; ``group``: 1..5 for test (required there), None otherwise.
    """
    if name not in DATASET_NAMES:
        raise UsageError(f"unknown dataset {name!r} (expected one of {', '.join(DATASET_NAMES)})")
    info = read_dataset_info(Path(root))
    if info.get("dataset") != name:
        raise DatasetError(f"{root}: holds {info.get('dataset')!r}, not {name!r}")
    if split == "test" and group not in TEST_GROUPS:
        raise UsageError(f"the test split of {name} has groups 1-5; pass group=1..5 (got {group!r})")
    if split != "test" and group is not None:
        raise UsageError(f"only the test split has groups (got group {group} for {split!r})")
    return BSRFolder(Path(root), split, group, info)
