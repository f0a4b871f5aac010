"""``synthetic-bsr`` streamed for training: procedural scenes rendered on the fly.

``SyntheticBSR(seed, ...)[i]`` is a pure function of ``(seed, epoch, i)`` (see
:mod:`cmosx.train.data.splits` for the seed scheme), so it works with any number of DataLoader
workers and reruns give identical data. It streams the *train* split code, so it never reproduces the
held-out synthetic-bsr test scenes written by ``cmosx dataset generate``.
"""

from __future__ import annotations

from pathlib import Path

from torch.utils.data import Dataset

from cmosx.errors import UsageError
from cmosx.train.data.bsr import check_stream_settings, make_bsr_sample, one_torch_thread
from cmosx.train.data.degrade import Degradation
from cmosx.train.data.scenes import SYNTHETIC_CLASSES, make_scene
from cmosx.train.data.splits import (
    PURPOSE_BLUR,
    PURPOSE_INVARIANT,
    PURPOSE_NOISE,
    PURPOSE_SCENE,
    sample_rng,
)
from cmosx.train.data.textures import PhotoTextures

__all__ = ["SYNTHETIC_CLASSES", "SyntheticBSR", "synthetic_sample"]


def synthetic_sample(
    seed: int,
    split: str,
    index: int,
    size: tuple[int, int] = (480, 640),
    kernel_size: int = 21,
    space_invariant: bool = False,
    degradation: Degradation | None = None,
    photos: PhotoTextures | None = None,
) -> tuple[dict, dict]:
    """One synthetic-bsr sample (and its blur record) for ``(seed, split, index)``."""
    h, w = size
    scene = make_scene(h, w, sample_rng(seed, split, index, PURPOSE_SCENE), photos)
    return make_bsr_sample(
        scene.image,
        scene.depth,
        scene.labels,
        kernel_size=kernel_size,
        space_invariant=space_invariant,
        blur_rng=sample_rng(seed, split, index, PURPOSE_BLUR),
        noise_rng=sample_rng(seed, split, index, PURPOSE_NOISE),
        degradation=degradation or Degradation(),
        name=f"synthetic-{split}-{index:07d}",
    )


class SyntheticBSR(Dataset):
    """Streaming synthetic-bsr training data.

    Args:
        seed: base seed.
        size: HR scene size (H, W), multiples of 4 (480 x 640 like the real sets; smaller is faster).
        kernel_size: 21 (sigma <= 5) or 61 (sigma <= 15).
        space_invariant_fraction: share of samples blurred with one sigma (drawn per sample, seeded).
        length: samples per epoch.
        degradation: LR settings (default x4 direct subsampling, no noise / JPEG).
    Items are the dicts of docs/interfaces.md (whole scenes: training crops them in :mod:`~cmosx.train.data.augment`).
    Call :meth:`set_epoch` to draw new scenes each epoch.
    """

    def __init__(
        self,
        seed: int = 0,
        size: tuple[int, int] = (480, 640),
        kernel_size: int = 21,
        space_invariant_fraction: float = 0.25,
        length: int = 1000,
        degradation: Degradation | None = None,
    ):
        self.degradation = check_stream_settings(
            "synthetic", size, kernel_size, degradation, min_side=4, space_invariant_fraction=space_invariant_fraction
        )
        if length < 1:
            raise UsageError(f"length must be >= 1, got {length}")
        self.seed, self.size, self.kernel_size = int(seed), tuple(size), kernel_size
        self.space_invariant_fraction, self.length = space_invariant_fraction, length
        self.epoch = 0
        self.num_classes = len(SYNTHETIC_CLASSES)

    def set_epoch(self, epoch: int) -> None:
        """Use a fresh block of scenes for this epoch."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < self.length:
            raise IndexError(i)
        with one_torch_thread():
            return self._make(self.epoch * self.length + i)

    def _make(self, index: int) -> dict:
        draw = sample_rng(self.seed, "train", index, PURPOSE_INVARIANT).random()
        invariant = bool(draw < self.space_invariant_fraction)
        sample, _ = synthetic_sample(
            self.seed, "train", index, self.size, self.kernel_size, invariant, self.degradation
        )
        return sample


class SyntheticSource:
    """synthetic-bsr as a source for :func:`cmosx.train.data.generate.generate_dataset`."""

    name = "synthetic-bsr"
    classes = SYNTHETIC_CLASSES

    def __init__(
        self,
        seed: int,
        counts: dict[str, int],
        size: tuple[int, int] = (480, 640),
        textures: str | Path | None = None,
    ):
        if size[0] % 4 or size[1] % 4:
            raise UsageError(f"synthetic size {size} must be multiples of 4")
        self.seed, self.counts, self.hr_size = int(seed), dict(counts), tuple(size)
        self.textures = str(textures) if textures else None
        self.photos = PhotoTextures(textures) if textures else None

    def split_counts(self) -> dict[str, int]:
        return {k: v for k, v in self.counts.items() if v > 0}

    def sample_name(self, split: str, index: int) -> str:
        return f"synthetic-{split}-{index:07d}"

    def load(self, split: str, index: int):
        h, w = self.hr_size
        scene = make_scene(h, w, sample_rng(self.seed, split, index, PURPOSE_SCENE), self.photos)
        return scene.image, scene.depth, scene.labels, f"procedural scene (seed {self.seed}, {split}, {index})"

    def describe(self) -> dict:
        return {
            "kind": "procedural scenes (cmosx.train.data.scenes)",
            "textures_folder": self.textures,
            "note": "test scenes use split code 2 and never appear in SyntheticBSR training streams",
        }
