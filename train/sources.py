"""Where training and evaluation data come from, and what they say about themselves.

- ``synthetic-bsr`` without an on-disk copy: training streams :class:`~cmosx.train.data.SyntheticBSR`
  (train split code, a new scene for every sample number); evaluation renders the held-out test groups in
  memory with the same generator (test split code, so never seen in training) -- :class:`SyntheticTestGroup`.
- Any dataset folder written by ``cmosx dataset generate`` (``--root``): :func:`cmosx.train.data.storage.open_dataset`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from cmosx.errors import DatasetError, UsageError
from cmosx.train.config import TrainConfig

# Classes and largest sigma of the paper's sets (kernel 21 -> sigma_max 5; kernel 61 -> 15).
_SIGMA_MAX = {"synthetic-bsr": 5.0, "photo-bsr": 5.0, "nyuv2-bsr": 5.0, "cityscapes-bsr": 15.0}
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


def _has_dataset(root: str | Path | None) -> bool:
    return root is not None and (Path(root) / "dataset.json").is_file()


_REAL_KERNEL = {"nyuv2-bsr": 21, "cityscapes-bsr": 61}


def generated_folder(raw_root: str | Path) -> Path:
    """Where a BSR set generated from the raw data in ``raw_root`` lives: the sibling ``<raw_root>-bsr``."""
    raw_root = Path(raw_root).resolve()
    return raw_root.with_name(raw_root.name + "-bsr")


def ensure_dataset(name: str, root: str | Path | None, seed: int = 0, progress=None) -> Path | None:
    """The on-disk BSR folder to read for ``name``, generating it from raw data when it is not there yet.

    ``root`` is either a folder written by ``cmosx dataset generate`` (used as is) or, for nyuv2-bsr and
    cityscapes-bsr, the raw data folder: the BSR set is then generated (resumably, default settings:
    kernel 21 / 61, x4 direct subsampling, no noise) into ``<root>-bsr`` beside it, and that folder is
    returned. None for synthetic-bsr without a folder (it streams).
    """
    if _has_dataset(root):
        return Path(root)
    if name in ("synthetic-bsr", "photo-bsr") or root is None:
        if name not in ("synthetic-bsr", "photo-bsr"):
            raise DatasetError(
                f"no --root given for {name}: pass the raw data folder (generated into <root>-bsr on first use) "
                f"or a folder from 'cmosx dataset generate --dataset {name} --out DIR'"
            )
        return None
    target = generated_folder(root)
    if not _has_dataset(target) or not (target / ".complete").is_file():
        from cmosx.train.data.generate import generate_dataset

        if name == "nyuv2-bsr":
            from cmosx.train.data.nyuv2 import NYUv2Source

            source = NYUv2Source(root)
        else:
            from cmosx.train.data.cityscapes import CityscapesSource

            source = CityscapesSource(root)
        generate_dataset(source, target, seed=seed, kernel_size=_REAL_KERNEL[name], progress=progress)
        (target / ".complete").write_text("generation finished\n")
    return target


def _folder_info(name: str, ds: Any) -> DataInfo:
    info = getattr(ds, "info", {})
    sigma_max = float(info.get("sigma_max", _SIGMA_MAX[name]))
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
        return ds, DataInfo("photo-bsr", list(SYNTHETIC_CLASSES), _SIGMA_MAX["photo-bsr"], True, record)
    ds = SyntheticBSR(
        seed=config.seed,
        size=config.scene_size,
        kernel_size=21,
        space_invariant_fraction=fraction,
        length=STREAM_LENGTH,
        degradation=degradation,
    )
    return ds, DataInfo("synthetic-bsr", list(SYNTHETIC_CLASSES), _SIGMA_MAX["synthetic-bsr"], streaming=True)


class SyntheticTestGroup(Dataset):
    """Test group ``group`` (1-5) of synthetic-bsr rendered in memory: ``count`` held-out scenes.

    Group g blurs a different fifth of the images space-invariantly (the same rule as the on-disk sets).
    """

    def __init__(self, group: int, seed: int = 0, count: int = SYNTHETIC_TEST_COUNT, size=SYNTHETIC_TEST_SIZE):
        from cmosx.train.data.splits import space_invariant_mask

        self.group, self.seed, self.count, self.size = group, seed, count, tuple(size)
        self.mask = space_invariant_mask(count, seed, "test", group)

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> dict:
        from cmosx.train.data.synthetic import synthetic_sample

        sample, _ = synthetic_sample(self.seed, "test", i, self.size, 21, bool(self.mask[i]))
        return sample


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
    return ds, DataInfo(name, list(SYNTHETIC_CLASSES), _SIGMA_MAX[name], streaming=False)
