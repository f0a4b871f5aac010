"""``photo-bsr``: layered defocus scenes built from real photographs (the user's own folder).

A scene is a whole photo as the far layer plus one to three nearer layers, each a random shape (ellipse
or smooth blob) textured by a crop of a photo. Every photo is first reduced at least 2x (box filter on
decoding, then an antialiased resize by a further 1-2x) so the HR is truly sharp: the reduction averages
away sensor noise and JPEG artefacts. Each layer has one depth (the far photo a gentle vertical
gradient); thin-lens defocus, direct x4 subsampling, noise and JPEG then follow exactly as for the
procedural scenes (:func:`cmosx.train.data.bsr.make_bsr_sample`), so blur maps are exact.

Photos carry no semantic classes: ``labels`` are 255 (ignored by the semantic loss and by mIoU) and the
layer index (0 = the far photo) is in ``layers``.

Splits are by photo file, never by crop: a photo belongs to ``test`` when the hash of its path relative
to the folder falls in the first 25 %, to ``val`` in the next 10 %, else to ``train``
(:func:`photo_split`); every scene of a split uses only that split's photos.
"""

from __future__ import annotations

import hashlib
import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from cmosx.errors import DatasetError, UsageError
from cmosx.train.data.bsr import check_stream_settings, make_bsr_sample, one_torch_thread
from cmosx.train.data.degrade import Degradation
from cmosx.train.data.scenes import Scene
from cmosx.train.data.splits import (
    PURPOSE_BLUR,
    PURPOSE_INVARIANT,
    PURPOSE_NOISE,
    PURPOSE_SCENE,
    sample_rng,
)
from cmosx.train.data.textures import PHOTO_SUFFIXES, noise

SPLIT_FRACTIONS = (("test", 0.25), ("val", 0.10))  # the rest is train
IGNORE = 255
MIN_REDUCTION, MAX_REDUCTION = 2.0, 4.0


def photo_split(relative_path: str) -> str:
    """``train``, ``val`` or ``test`` for a photo, from the sha256 of its path relative to the folder."""
    digest = hashlib.sha256(relative_path.replace("\\", "/").encode("utf-8")).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    start = 0.0
    for split, share in SPLIT_FRACTIONS:
        if start <= u < start + share:
            return split
        start += share
    return "train"


def list_photos(folder: str | Path) -> list[str]:
    """Photo files under ``folder`` (recursive, hidden names skipped), as sorted relative POSIX paths."""
    root = Path(folder)
    if not root.is_dir():
        raise DatasetError(f"{root}: photo folder not found")
    found = []
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if path.suffix.lower() in PHOTO_SUFFIXES and path.is_file() and not any(p.startswith(".") for p in rel.parts):
            found.append(rel.as_posix())
    return sorted(found)


@lru_cache(maxsize=64)
def _reduced_photo(path: str) -> torch.Tensor:
    """A photo reduced 2x (JPEG: DCT scaling on decode; others: box filter), 3 x H x W uint8 (memo)."""
    try:
        with Image.open(path) as im:
            full = im.size
            im.draft("RGB", (full[0] // 2, full[1] // 2))  # JPEG only; a no-op elsewhere
            rgb = im.convert("RGB")
            factor = round(full[0] / rgb.size[0])
            if factor < 2:
                rgb = rgb.reduce(2)
            arr = np.asarray(rgb, dtype=np.uint8)
    except OSError as error:
        raise DatasetError(f"{path}: cannot read photo ({error})") from error
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


class PhotoFolder:
    """The photos of one split of a folder (see :func:`photo_split`), read lazily and memoised."""

    def __init__(self, folder: str | Path, split: str):
        self.folder = Path(folder)
        self.split = split
        self.all = list_photos(self.folder)
        self.paths = [p for p in self.all if photo_split(p) == split]
        if not self.paths:
            raise DatasetError(
                f"{self.folder}: no photos in the {split} split ({len(self.all)} photos found; splits are drawn "
                "by a hash of each file's relative path, so a folder needs several photos)"
            )

    def __len__(self) -> int:
        return len(self.paths)

    def reduced(self, index: int) -> torch.Tensor:
        """Photo ``index`` reduced 2x: 3 x H x W uint8."""
        return _reduced_photo(str(self.folder / self.paths[index]))

    def window(self, index: int, h: int, w: int, rng: np.random.Generator) -> torch.Tensor:
        """A random ``h x w`` view of photo ``index`` reduced by a total factor drawn from 2-4 (less when
        the photo is too small; never below 2): 3 x h x w float in [0, 1]."""
        photo = self.reduced(index)
        _, ph, pw = photo.shape
        extra = rng.uniform(1.0, MAX_REDUCTION / MIN_REDUCTION)
        extra = min(extra, ph / h, pw / w)
        if extra < 1.0:
            raise DatasetError(
                f"{self.folder / self.paths[index]}: too small for a {h} x {w} scene at 2x reduction "
                f"(needs {2 * h} x {2 * w} px)"
            )
        wh, ww = min(ph, math.ceil(h * extra)), min(pw, math.ceil(w * extra))
        y, x = int(rng.integers(0, ph - wh + 1)), int(rng.integers(0, pw - ww + 1))
        crop = photo[:, y : y + wh, x : x + ww].unsqueeze(0).float() / 255.0
        if (wh, ww) != (h, w):
            crop = F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
        if rng.random() < 0.5:
            crop = crop.flip(-1)  # a mirrored photo is still a photo; the scene is rendered afterwards
        return crop[0].clamp(0, 1)


def _shape_mask(h: int, w: int, rng: np.random.Generator) -> torch.Tensor:
    """A random object silhouette in an ``h x w`` frame: a rotated ellipse or a smooth blob (bool)."""
    y = torch.arange(h, dtype=torch.float32).view(h, 1)
    x = torch.arange(w, dtype=torch.float32).view(1, w)
    cy, cx = rng.uniform(0.15, 0.85) * h, rng.uniform(0.15, 0.85) * w
    ry, rx = rng.uniform(0.12, 0.45) * h, rng.uniform(0.12, 0.45) * w
    theta = rng.uniform(0, math.pi)
    dy, dx = y - cy, x - cx
    u = (dx * math.cos(theta) + dy * math.sin(theta)) / rx
    v = (-dx * math.sin(theta) + dy * math.cos(theta)) / ry
    rho = u * u + v * v
    if rng.random() < 0.5:
        return rho <= 1.0
    wobble = noise(h, w, rng, octaves=3, smallest=max(2, min(h, w) // 16))[0]
    return (rho + 0.35 * wobble) <= 1.0


def make_photo_scene(photos: PhotoFolder, h: int, w: int, rng: np.random.Generator) -> Scene:
    """A layered scene of ``h x w`` HR pixels from ``photos`` (far photo + 1-3 textured shapes).

    Returns a :class:`~cmosx.train.data.scenes.Scene` whose ``labels`` hold the layer index (0 = far)."""
    far = photos.window(int(rng.integers(len(photos))), h, w, rng)
    far_depth = rng.uniform(6.0, 60.0)
    ramp = torch.linspace(1.0 + rng.uniform(0.0, 0.5), 1.0, h).view(h, 1).expand(h, w)
    image, depth = far.clone(), far_depth * ramp.clone()
    layers = torch.zeros(h, w, dtype=torch.int64)
    count = int(rng.integers(1, 4))
    depths = sorted((rng.uniform(0.4, 0.8 * far_depth) for _ in range(count)), reverse=True)
    for k, z in enumerate(depths, start=1):
        mask = _shape_mask(h, w, rng)
        tex = photos.window(int(rng.integers(len(photos))), h, w, rng)
        image = torch.where(mask, tex, image)
        depth = torch.where(mask, torch.full_like(depth, z), depth)
        layers[mask] = k
    return Scene(image=image, depth=depth.contiguous(), labels=layers)


def photo_sample(
    photos: PhotoFolder,
    seed: int,
    index: int,
    size: tuple[int, int],
    kernel_size: int = 21,
    space_invariant: bool = False,
    degradation: Degradation | None = None,
    far: int | None = None,
    name: str | None = None,
) -> tuple[dict, dict]:
    """One photo-bsr sample (and its blur record) for ``(seed, photos.split, index)``; ``far`` fixes which
    photo is the far layer (evaluation scenes), ``name`` overrides the sample name."""
    split = photos.split
    layers_from = photos if far is None else _FixedFar(photos, far)
    scene = make_photo_scene(layers_from, size[0], size[1], sample_rng(seed, split, index, PURPOSE_SCENE))
    sample, record = make_bsr_sample(
        scene.image,
        scene.depth,
        torch.full_like(scene.labels, IGNORE),
        kernel_size=kernel_size,
        space_invariant=space_invariant,
        blur_rng=sample_rng(seed, split, index, PURPOSE_BLUR),
        noise_rng=sample_rng(seed, split, index, PURPOSE_NOISE),
        degradation=degradation or Degradation(),
        name=name or f"photo-{split}-{index:07d}",
    )
    sample["layers"] = scene.labels
    return sample, record


class PhotoBSR(Dataset):
    """Streamed photo-bsr scenes of one split: item ``i`` is a pure function of ``(seed, split, i)``.

    ``procedural_share`` of the items (a seeded draw per item) are procedural synthetic-bsr scenes instead
    (their labels are the synthetic classes), so one stream mixes real texture with labelled scenes.
    ``space_invariant_fraction`` of the items are blurred with one sigma.
    """

    def __init__(
        self,
        folder: str | Path,
        split: str = "train",
        seed: int = 0,
        size: tuple[int, int] = (240, 320),
        length: int = 1 << 40,
        kernel_size: int = 21,
        space_invariant_fraction: float = 0.25,
        procedural_share: float = 0.0,
        degradation: Degradation | None = None,
    ):
        self.degradation = check_stream_settings(
            "photo scene",
            size,
            kernel_size,
            degradation,
            space_invariant_fraction=space_invariant_fraction,
            procedural_share=procedural_share,
        )
        self.photos = PhotoFolder(folder, split) if procedural_share < 1.0 else None
        self.split, self.seed, self.size, self.length = split, int(seed), tuple(size), int(length)
        self.kernel_size, self.invariant, self.procedural = kernel_size, space_invariant_fraction, procedural_share

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < self.length:
            raise IndexError(i)
        draws = sample_rng(self.seed, self.split, i, PURPOSE_INVARIANT)
        invariant = bool(draws.random() < self.invariant)
        procedural = bool(draws.random() < self.procedural)
        with one_torch_thread():
            if procedural:
                from cmosx.train.data.synthetic import synthetic_sample

                sample, _ = synthetic_sample(
                    self.seed, self.split, i, self.size, self.kernel_size, invariant, self.degradation
                )
                return sample
            sample, _ = photo_sample(
                self.photos, self.seed, i, self.size, self.kernel_size, invariant, self.degradation
            )
            return sample


class PhotoTestSet(Dataset):
    """The held-out evaluation set of a photo folder: ``per_photo`` scenes of ``size`` from each test photo
    (scene ``j`` uses photo ``j // per_photo`` as its far layer and test photos only as textures)."""

    def __init__(self, folder: str | Path, seed: int = 0, per_photo: int = 3, size=(480, 640), split="test"):
        self.photos = PhotoFolder(folder, split)
        self.seed, self.per_photo, self.size = int(seed), int(per_photo), tuple(size)

    def __len__(self) -> int:
        return len(self.photos) * self.per_photo

    def photo_of(self, j: int) -> str:
        """The relative path of scene ``j``'s far photo."""
        return self.photos.paths[j // self.per_photo]

    def __getitem__(self, j: int) -> dict:
        if not 0 <= j < len(self):
            raise IndexError(j)
        name = f"{Path(self.photo_of(j)).stem}-{j % self.per_photo}"
        with one_torch_thread():
            sample, _ = photo_sample(self.photos, self.seed, j, self.size, far=j // self.per_photo, name=name)
        sample["photo"] = self.photo_of(j)
        return sample


class _FixedFar:
    """A :class:`PhotoFolder` view whose first draw (the far layer) is a given photo."""

    def __init__(self, photos: PhotoFolder, far_index: int):
        self.photos, self.far_index, self.first = photos, far_index, True

    def __len__(self) -> int:
        return len(self.photos)

    def window(self, index: int, h: int, w: int, rng: np.random.Generator) -> torch.Tensor:
        if self.first:
            self.first, index = False, self.far_index
        return self.photos.window(index, h, w, rng)


class PhotoSource:
    """photo-bsr as a source for :func:`cmosx.train.data.generate.generate_dataset` (stored sets).

    ``counts`` scenes per split, each drawn from that split's photos; labels are all 255 (no classes)."""

    name = "photo-bsr"
    classes: list[str] = []

    def __init__(self, folder: str | Path, seed: int, counts: dict[str, int], size: tuple[int, int] = (480, 640)):
        if size[0] % 4 or size[1] % 4:
            raise UsageError(f"photo scene size {size} must be multiples of 4")
        self.folder, self.seed, self.counts, self.hr_size = Path(folder), int(seed), dict(counts), tuple(size)
        self._folders: dict[str, PhotoFolder] = {}

    def split_counts(self) -> dict[str, int]:
        return {k: v for k, v in self.counts.items() if v > 0}

    def sample_name(self, split: str, index: int) -> str:
        return f"photo-{split}-{index:07d}"

    def load(self, split: str, index: int):
        if split not in self._folders:
            self._folders[split] = PhotoFolder(self.folder, split)
        h, w = self.hr_size
        scene = make_photo_scene(self._folders[split], h, w, sample_rng(self.seed, split, index, PURPOSE_SCENE))
        labels = torch.full_like(scene.labels, IGNORE)
        return scene.image, scene.depth, labels, f"photo scene (seed {self.seed}, {split}, {index})"

    def describe(self) -> dict:
        return {
            "kind": "layered scenes of real photos (cmosx.train.data.photos)",
            "photos_folder": str(self.folder),
            "photos_by_split": describe_split(self.folder),
            "split_rule": "sha256 of the relative path: first 25 % test, next 10 % val, rest train",
        }


def describe_split(folder: str | Path) -> dict[str, list[str]]:
    """Every photo of a folder by split (what a run or an evaluation records)."""
    photos = list_photos(folder)
    return {split: [p for p in photos if photo_split(p) == split] for split in ("train", "val", "test")}


__all__ = [
    "PhotoBSR",
    "PhotoFolder",
    "PhotoSource",
    "PhotoTestSet",
    "describe_split",
    "list_photos",
    "make_photo_scene",
    "photo_sample",
    "photo_split",
]
