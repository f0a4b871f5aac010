"""Write a BSR dataset to disk from a source of sharp images with depth and labels.

A *source* (synthetic scenes, NYUv2, Cityscapes) says which splits it has, how many images each, and
loads image ``i`` of a split as (image 3 x H x W [0, 1], depth H x W metres, labels H x W int64, name).
:func:`generate_dataset` renders every split (the test split once per group 1-5), resumes where a
previous run stopped (complete samples are skipped), and reports progress through a callback. A test
image that is space-variant in group g and in group 1 is rendered identically (same seeds), so it is
hard-linked from group 1 instead of being rendered again.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import torch

from cmosx.errors import DatasetError, OutputError
from cmosx.io.atomic import atomic_link_or_copy
from cmosx.train.data.bsr import check_kernel_size, make_bsr_sample, one_torch_thread
from cmosx.train.data.defocus import sigma_max_for
from cmosx.train.data.degrade import Degradation
from cmosx.train.data.splits import (
    PURPOSE_BLUR,
    PURPOSE_NOISE,
    TEST_GROUPS,
    invariant_count,
    sample_rng,
    space_invariant_mask,
    split_folder,
)
from cmosx.train.data.storage import (
    FORMAT_VERSION,
    GENERATOR_VERSION,
    read_dataset_info,
    sample_done,
    write_json,
    write_sample,
)

Progress = Callable[[int, int], None]
_SETTINGS = (
    "dataset",
    "format_version",
    "generator_version",
    "seed",
    "kernel_size",
    "degradation",
    "hr_size",
    "splits",
)


class Source(Protocol):
    name: str  # dataset name written to dataset.json
    classes: list[str]
    hr_size: tuple[int, int]

    def split_counts(self) -> dict[str, int]: ...

    def sample_name(self, split: str, index: int) -> str: ...

    def load(self, split: str, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, str]: ...

    def describe(self) -> dict: ...


def _reuse_from_group1(out: Path, split_dir: Path, name: str) -> bool:
    """Hard-link a space-variant test sample already written for group 1; False if unavailable."""
    first = out / split_folder("test", 1)
    meta = first / "meta" / f"{name}.json"
    if not meta.is_file() or json.loads(meta.read_text(encoding="utf-8")).get("space_invariant", True):
        return False
    for kind in ("hr", "lr", "blur", "labels"):
        atomic_link_or_copy(first / kind / f"{name}.png", split_dir / kind / f"{name}.png")
    atomic_link_or_copy(meta, split_dir / "meta" / f"{name}.json")
    return True


def dataset_info(source: Source, seed: int, kernel_size: int, degradation: Degradation) -> dict:
    """The dataset.json content for a generation."""
    counts = source.split_counts()
    return {
        "dataset": source.name,
        "format_version": FORMAT_VERSION,
        "generator_version": GENERATOR_VERSION,
        "seed": int(seed),
        "kernel_size": int(kernel_size),
        "sigma_max": sigma_max_for(kernel_size),
        "degradation": degradation.to_dict(),
        "classes": list(source.classes),
        "hr_size": list(source.hr_size),
        "splits": {
            split: {
                "count": n,
                "space_invariant_per_group": invariant_count(n),
                "groups": list(TEST_GROUPS) if split == "test" else None,
            }
            for split, n in counts.items()
        },
        "blur_png": "uint16, sigma (HR px) = value / 100",
        "labels_png": "uint8 class index, 255 = ignore",
        "space_invariant_rule": "n // 5 per split (paper Table 1); test group g blurs the g-th fifth of a "
        "seeded permutation space-invariantly; train/val use the first fifth",
        "seed_scheme": "SeedSequence([seed, split_code (train 0, val 1, test 2), index, purpose])",
        "source": source.describe(),
    }


def generate_dataset(
    source: Source,
    out: str | Path,
    seed: int = 0,
    kernel_size: int = 21,
    degradation: Degradation | None = None,
    progress: Progress | None = None,
) -> dict:
    """Generate (or resume) a dataset in ``out``; returns the dataset.json content."""
    check_kernel_size(kernel_size)
    degradation = degradation or Degradation()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is not a folder")
    info = dataset_info(source, seed, kernel_size, degradation)
    if (out / "dataset.json").is_file():
        old = read_dataset_info(out)
        changed = [k for k in _SETTINGS if old.get(k) != info[k]]
        if changed:
            raise DatasetError(
                f"{out}: holds a dataset generated with other settings ({', '.join(changed)}); "
                "pass the same settings to resume, or choose another --out"
            )
    elif out.is_dir() and any(not p.name.startswith(".") for p in out.iterdir()):
        # hidden files are temp files of an interrupted write (dataset.json is written first): resume over them
        raise OutputError(f"{out}: folder is not empty and holds no dataset.json; choose an empty or new folder")
    write_json(out / "dataset.json", info)

    counts = source.split_counts()
    jobs = [(split, group, n) for split, n in counts.items() for group in (TEST_GROUPS if split == "test" else (None,))]
    total = sum(n for _, _, n in jobs)
    done = 0
    for split, group, n in jobs:
        split_dir = out / split_folder(split, group)
        invariant = space_invariant_mask(n, seed, split, group)
        for i in range(n):
            name = source.sample_name(split, i)
            if not sample_done(split_dir, name) and not (
                group not in (None, 1) and not invariant[i] and _reuse_from_group1(out, split_dir, name)
            ):
                with one_torch_thread():
                    image, depth, labels, origin = source.load(split, i)
                    sample, record = make_bsr_sample(
                        image,
                        depth,
                        labels,
                        kernel_size=kernel_size,
                        space_invariant=bool(invariant[i]),
                        blur_rng=sample_rng(seed, split, i, PURPOSE_BLUR),
                        noise_rng=sample_rng(seed, split, i, PURPOSE_NOISE),
                        degradation=degradation,
                        name=name,
                    )
                write_sample(split_dir, sample, {**record, "source": origin, "index": i})
            done += 1
            if progress is not None:
                progress(done, total)
    return info
