"""Where training and evaluation data come from, and what they say about themselves.

- ``synthetic-bsr`` without an on-disk copy: training streams :class:`~cmosx.train.data.SyntheticBSR`
  (train split code, a new scene for every sample number); evaluation renders the held-out test groups in
  memory with the same generator (test split code, so never seen in training) -- :class:`SyntheticTestGroup`.
- Any dataset folder written by ``cmosx dataset generate`` (``--root``): :func:`cmosx.train.data.storage.open_dataset`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from cmosx.catalog import DATASET_KERNEL, dataset_sigma_max
from cmosx.errors import DatasetError, UsageError
from cmosx.io.atomic import atomic_write_bytes
from cmosx.launch import launch_from_environment
from cmosx.train.config import TrainConfig

SYNTHETIC_TEST_SIZE = (480, 640)
SYNTHETIC_TEST_COUNT = 50  # images per synthetic test group rendered in memory (no --root)
STREAM_LENGTH = 1 << 40  # "infinite" streaming dataset: sample k is scene k


@dataclass
class DataInfo:
    """What a dataset tells the trainer and the evaluator."""

    name: str
    class_names: list[str]
    sigma_max: float
    streaming: bool  # a new sample for every index (no epochs, no shuffling needed)
    record: dict[str, Any] | None = None  # what a run keeps about its data (RUN/data.json), e.g. photo splits

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def is_dataset_folder(root: str | Path | None) -> bool:
    return root is not None and (Path(root) / "dataset.json").is_file()


DATA_ENV = "CMOSX_DATA"  # a folder holding the raw sets as DATA/cityscapes and DATA/nyuv2
RAW_FOLDER = {"cityscapes-bsr": "cityscapes", "nyuv2-bsr": "nyuv2"}
COMPLETE_MARK = ".complete"  # written into a generated BSR folder once every sample is there
FAILED_MARK = ".generation-failed"  # written by rank 0 when generation fails, so the other ranks stop waiting
WAIT_POLL_S = 2.0
FAILED_MARK_SLACK_S = 300.0  # a failure mark this much older than the wait is a previous run's, not rank 0's now


def cache_home() -> Path:
    """cmosx's folder under the user's cache: ``$XDG_CACHE_HOME/cmosx``, else ``~/.cache/cmosx``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cmosx"


def raw_data_root(name: str, root: str | Path | None) -> Path | None:
    """The folder holding ``name``'s raw data: ``root`` if given, else ``$CMOSX_DATA/cityscapes`` (``nyuv2``),
    else ``~/.cache/cmosx/data/cityscapes`` (``nyuv2``). None for synthetic-bsr without ``root``."""
    if root is not None:
        return Path(root)
    if name not in RAW_FOLDER:
        return None
    data = os.environ.get(DATA_ENV)
    return (Path(data) if data else cache_home() / "data") / RAW_FOLDER[name]


def _writable(folder: Path) -> bool:
    """Whether new files can go into ``folder`` (or into its nearest existing parent, created on demand)."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return os.access(folder, os.W_OK | os.X_OK)


def generated_folder(raw_root: str | Path) -> Path:
    """Where a BSR set generated from the raw data in ``raw_root`` lives: the sibling ``<raw_root>-bsr``,
    or, when that is not there and cannot be written (read-only data), ``~/.cache/cmosx/bsr/NAME-HASH-bsr``."""
    raw_root = Path(raw_root).resolve()
    sibling = raw_root.with_name(raw_root.name + "-bsr")
    if is_dataset_folder(sibling) or _writable(sibling.parent):
        return sibling
    digest = hashlib.sha256(str(raw_root).encode()).hexdigest()[:8]
    return cache_home() / "bsr" / f"{raw_root.name}-{digest}-bsr"


def generation_needed(target: Path) -> bool:
    return not (is_dataset_folder(target) and (target / COMPLETE_MARK).is_file())


def check_raw_data(name: str, raw_root: Path) -> None:
    """UsageError naming every expected file and folder (and where they come from) when ``raw_root`` lacks any."""
    if name == "nyuv2-bsr":
        from cmosx.train.data.nyuv2 import LAYOUT, missing_raw
    else:
        from cmosx.train.data.cityscapes import LAYOUT, missing_raw
    missing = missing_raw(raw_root)
    if not missing:
        return
    shown = missing[:8] + ([f"... and {len(missing) - 8} more"] if len(missing) > 8 else [])
    raise UsageError(
        f"{name}: the raw data in {raw_root} is missing or incomplete; not found:\n  "
        + "\n  ".join(shown)
        + f"\n{LAYOUT}\nPass the folder with --root, or set ${DATA_ENV} to a folder holding "
        f"{RAW_FOLDER['cityscapes-bsr']}/ and {RAW_FOLDER['nyuv2-bsr']}/ "
        f"(default {cache_home() / 'data'}). The BSR set is generated once into ROOT-bsr beside it "
        f"(or under {cache_home() / 'bsr'} when ROOT's folder is read-only)."
    )


def _wait_for_rank0(target: Path) -> None:
    """Under torchrun, ranks other than 0 wait here while rank 0 generates ``target``."""
    started = time.time()
    failed = target / FAILED_MARK
    while generation_needed(target):
        if failed.is_file() and failed.stat().st_mtime >= started - FAILED_MARK_SLACK_S:
            raise DatasetError(f"{target}: rank 0 failed to generate the BSR set: {failed.read_text().strip()}")
        time.sleep(WAIT_POLL_S)


def ensure_dataset(name: str, root: str | Path | None, seed: int = 0, progress=None) -> Path | None:
    """The on-disk BSR folder to read for ``name``, generating it from raw data when it is not there yet.

    ``root`` is either a folder written by ``cmosx dataset generate`` (used as is) or, for nyuv2-bsr and
    cityscapes-bsr, the raw data folder (None: :func:`raw_data_root`'s default): the BSR set is then generated
    (resumably, default settings: kernel 21 / 61, x4 direct subsampling, no noise) into
    :func:`generated_folder`, and that folder is returned. Missing raw data is a UsageError
    (:func:`check_raw_data`). Under torchrun only rank 0 generates; the other ranks wait for it. None for
    synthetic-bsr without a folder (it streams).
    """
    if is_dataset_folder(root):
        return Path(root)
    raw_root = raw_data_root(name, root)
    if raw_root is None:
        return None
    if name not in RAW_FOLDER:
        raise DatasetError(f"{raw_root}: holds no dataset.json (write one with 'cmosx dataset generate')")
    target = generated_folder(raw_root)
    if not generation_needed(target):
        return target
    check_raw_data(name, raw_root)
    if not launch_from_environment().is_main:
        _wait_for_rank0(target)
        return target
    from cmosx.train.data.generate import generate_dataset

    if name == "nyuv2-bsr":
        from cmosx.train.data.nyuv2 import NYUv2Source

        source = NYUv2Source(raw_root)
    else:
        from cmosx.train.data.cityscapes import CityscapesSource

        source = CityscapesSource(raw_root)
    (target / FAILED_MARK).unlink(missing_ok=True)
    try:
        generate_dataset(source, target, seed=seed, kernel_size=DATASET_KERNEL[name], progress=progress)
    except BaseException as error:
        if target.is_dir():
            with contextlib.suppress(OSError):
                atomic_write_bytes(target / FAILED_MARK, f"{type(error).__name__}: {error}\n".encode())
        raise
    atomic_write_bytes(target / COMPLETE_MARK, b"generation finished\n")
    return target


def _folder_info(name: str, ds: Any) -> DataInfo:
    info = getattr(ds, "info", {})
    sigma_max = float(info.get("sigma_max", dataset_sigma_max(name)))
    return DataInfo(name=name, class_names=list(ds.classes), sigma_max=sigma_max, streaming=False)


def open_train_data(config: TrainConfig) -> tuple[Dataset, DataInfo]:
    """The training dataset of a run and its description."""
    from cmosx.train.data.storage import open_dataset

    folder = ensure_dataset(config.dataset, config.root)
    if folder is not None:
        ds = open_dataset(config.dataset, folder, "train")
        return ds, _folder_info(config.dataset, ds)
    from cmosx.train.data import SYNTHETIC_CLASSES, SyntheticBSR

    degradation = config.degradation()
    fraction = 1.0 if config.space_invariant_only else config.space_invariant_fraction
    if config.dataset == "photo-bsr":
        from cmosx.train.data.photos import PhotoBSR

        ds = PhotoBSR(
            config.photos,
            "train",
            seed=config.seed,
            size=config.scene_size,
            length=STREAM_LENGTH,
            space_invariant_fraction=fraction,
            procedural_share=config.procedural_share,
            degradation=degradation,
        )
        from cmosx.train.data.photos import describe_split

        record = {"photos_folder": str(config.photos), "photos_by_split": describe_split(config.photos)}
        return ds, DataInfo("photo-bsr", list(SYNTHETIC_CLASSES), dataset_sigma_max("photo-bsr"), True, record)
    ds = SyntheticBSR(
        seed=config.seed,
        size=config.scene_size,
        kernel_size=21,
        space_invariant_fraction=fraction,
        length=STREAM_LENGTH,
        degradation=degradation,
    )
    return ds, DataInfo("synthetic-bsr", list(SYNTHETIC_CLASSES), dataset_sigma_max("synthetic-bsr"), streaming=True)


class SyntheticTestGroup(Dataset):
    """Test group ``group`` (1-5) of synthetic-bsr rendered in memory: ``count`` held-out scenes.

    Group g blurs a different fifth of the images space-invariantly (the same rule as the on-disk sets).
    ``split="val"`` (``group`` None) renders the validation split instead, also never drawn in training.
    """

    def __init__(
        self, group: int | None, seed: int = 0, count: int = SYNTHETIC_TEST_COUNT, size=SYNTHETIC_TEST_SIZE,
        split: str = "test",
    ):  # fmt: skip
        from cmosx.train.data.splits import space_invariant_mask

        self.group, self.seed, self.count, self.size, self.split = group, seed, count, tuple(size), split
        self.mask = space_invariant_mask(count, seed, split, group)

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> dict:
        from cmosx.train.data.synthetic import synthetic_sample

        sample, _ = synthetic_sample(self.seed, self.split, i, self.size, 21, bool(self.mask[i]))
        return sample


def open_validation_set(
    name: str, root: str | Path | None, count: int, photos: str | Path | None = None
) -> tuple[Dataset, str]:
    """Held-out images to validate a training run on, and what they are: the dataset's val split (synthetic-bsr
    without a folder: ``count`` val scenes rendered in memory; photo-bsr: scenes of the val photos of
    ``photos``); a set without one (NYUv2) gives test group 1."""
    folder = ensure_dataset(name, root)
    if folder is None and name == "photo-bsr" and photos is not None:
        from cmosx.train.data.photos import PhotoFolder, PhotoTestSet

        per_photo = max(1, -(-count // len(PhotoFolder(photos, "val"))))
        return PhotoTestSet(photos, per_photo=per_photo, split="val"), f"{name} val photos"
    if folder is None:
        return SyntheticTestGroup(None, count=count, size=SYNTHETIC_TEST_SIZE, split="val"), f"{name} val"
    from cmosx.train.data.storage import open_dataset, read_dataset_info

    if (read_dataset_info(folder).get("splits") or {}).get("val"):
        return open_dataset(name, folder, "val"), f"{name} val"
    return open_dataset(name, folder, "test", 1), f"{name} test group 1 (no val split)"


def open_test_group(
    name: str, root: str | Path | None, group: int, seed: int = 0, count: int | None = None, size=None
) -> tuple[Dataset, DataInfo]:
    """Test group ``group`` of a dataset (on disk under ``root``, or synthetic-bsr rendered in memory)."""
    if group not in (1, 2, 3, 4, 5):
        raise UsageError(f"test groups are 1-5, got {group}")
    folder = ensure_dataset(name, root)
    if folder is not None:
        from cmosx.train.data.storage import open_dataset

        ds = open_dataset(name, folder, "test", group)
        return ds, _folder_info(name, ds)
    from cmosx.train.data import SYNTHETIC_CLASSES

    ds = SyntheticTestGroup(group, seed, count or SYNTHETIC_TEST_COUNT, size or SYNTHETIC_TEST_SIZE)
    return ds, DataInfo(name, list(SYNTHETIC_CLASSES), dataset_sigma_max(name), streaming=False)


PHOTO_SPLITS = ("test", "val")
PHOTO_EVAL_SIZE = (480, 640)  # HR size of the evaluation scenes of a photo folder


def open_photo_split(
    photos: str | Path, split: str = "test", seed: int = 0, per_photo: int = 3
) -> tuple[Dataset, dict[str, Any]]:
    """photo-bsr scenes of one split of a photo folder for evaluation (``per_photo`` scenes of
    ``PHOTO_EVAL_SIZE`` per photo of the split, :class:`~cmosx.train.data.photos.PhotoTestSet`) and what
    they are: the folder, the split, its photos and the scenes per photo (for the report)."""
    if split not in PHOTO_SPLITS:
        raise UsageError(f"photo split must be one of {', '.join(PHOTO_SPLITS)}; got {split!r}")
    if per_photo < 1:
        raise UsageError(f"scenes per photo must be >= 1, got {per_photo}")
    from cmosx.train.data.photos import PhotoTestSet

    ds = PhotoTestSet(photos, seed=seed, per_photo=per_photo, size=PHOTO_EVAL_SIZE, split=split)
    record = {
        "photos_folder": str(photos),
        "split": split,
        "photos": list(ds.photos.paths),
        "scenes_per_photo": per_photo,
    }
    return ds, record
