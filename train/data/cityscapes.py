"""Cityscapes-BSR source: Cityscapes fine set (2975 train / 500 val / 1525 test), 19 classes.

The user supplies the Cityscapes root (``--root``, from https://www.cityscapes-dataset.com, packages
leftImg8bit_trainvaltest, disparity_trainvaltest, camera_trainvaltest, gtFine_trainvaltest)::

    ROOT/leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png
    ROOT/disparity/{split}/{city}/{stem}_disparity.png      uint16 p: d = (p - 1) / 256 px, p = 0 invalid
    ROOT/camera/{split}/{city}/{stem}_camera.json           extrinsic.baseline (m), intrinsic.fx (px)
    ROOT/gtFine/{split}/{city}/{stem}_gtFine_labelIds.png   label ids -> 19 train ids (255 ignore)

Depth = baseline * fx / d. The paper recomputed disparity with CREStereo because the shipped maps have
holes; we fill the holes instead (push-pull interpolation of the valid disparity) and put sky pixels
(label "sky") at 1000 m. Images are resized to 640 x 480 (depth and labels nearest). The public test
split has no real labels (its labelIds are all "unlabeled"), so its labels come out all 255.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from cmosx.errors import DatasetError
from cmosx.train.data.bsr import resize_scene

CITYSCAPES_CLASSES: list[str] = [
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
]  # fmt: skip

# Cityscapes label id -> train id, from the published label definition (cityscapesscripts labels.py):
# ids 7 road, 8 sidewalk, 11 building, 12 wall, 13 fence, 17 pole, 19 traffic light, 20 traffic sign,
# 21 vegetation, 22 terrain, 23 sky, 24 person, 25 rider, 26 car, 27 truck, 28 bus, 31 train,
# 32 motorcycle, 33 bicycle; every other id (0-6, 9, 10, 14-16, 18, 29, 30, -1) is ignored.
_TRAIN_IDS = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip
LABEL_TO_TRAIN = np.full(256, 255, dtype=np.uint8)
for _id, _train in _TRAIN_IDS.items():
    LABEL_TO_TRAIN[_id] = _train
SKY_TRAIN_ID = 10
SKY_DEPTH_M = 1000.0
SPLITS = ("train", "val", "test")
HR_SIZE = (480, 640)  # the size Cityscapes-BSR images are resized to (the paper's)

HELP = (
    "Cityscapes-BSR needs --root pointing to a Cityscapes folder (https://www.cityscapes-dataset.com: "
    "leftImg8bit_trainvaltest, disparity_trainvaltest, camera_trainvaltest, gtFine_trainvaltest) with "
    "leftImg8bit/{split}/{city}/*_leftImg8bit.png, disparity/{split}/{city}/*_disparity.png, "
    "camera/{split}/{city}/*_camera.json and gtFine/{split}/{city}/*_gtFine_labelIds.png"
)


RAW_KINDS = (  # folder, the file each image has there, the Cityscapes package it comes in
    ("leftImg8bit", "*_leftImg8bit.png", "leftImg8bit_trainvaltest.zip"),
    ("gtFine", "*_gtFine_labelIds.png", "gtFine_trainvaltest.zip"),
    ("disparity", "*_disparity.png", "disparity_trainvaltest.zip"),
    ("camera", "*_camera.json", "camera_trainvaltest.zip"),
)
LAYOUT = """Cityscapes (https://www.cityscapes-dataset.com, free account; unzip the four packages into one folder):
  leftImg8bit_trainvaltest.zip, gtFine_trainvaltest.zip, disparity_trainvaltest.zip, camera_trainvaltest.zip
  ROOT/leftImg8bit/{train,val,test}/CITY/*_leftImg8bit.png
  ROOT/gtFine/{train,val,test}/CITY/*_gtFine_labelIds.png
  ROOT/disparity/{train,val,test}/CITY/*_disparity.png
  ROOT/camera/{train,val,test}/CITY/*_camera.json"""


def missing_raw(root: Path) -> list[str]:
    """What a raw Cityscapes folder lacks: each ``KIND/SPLIT`` folder without a single expected file."""
    missing = []
    for kind, pattern, package in RAW_KINDS:
        for split in SPLITS:
            folder = Path(root) / kind / split
            if not next(iter(folder.glob(f"*/{pattern}")), None):
                missing.append(f"{folder}/CITY/{pattern} (from {package})")
    return missing


def fill_holes(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Fill invalid pixels of an H x W map by push-pull: valid-weighted averages over coarser and coarser
    grids, then pulled back up; valid pixels keep their values."""
    v = (values * valid).view(1, 1, *values.shape)
    w = valid.to(values.dtype).view(1, 1, *values.shape)
    if float(w.sum()) == 0:
        raise DatasetError("no valid pixels to fill from")
    pyramid = [(v, w)]
    while bool((w == 0).any()) and min(w.shape[-2:]) > 1:
        v = F.avg_pool2d(v, 2, ceil_mode=True)
        w = F.avg_pool2d(w, 2, ceil_mode=True)
        pyramid.append((v, w))
    v, w = pyramid[-1]
    filled = torch.where(w > 0, v / w.clamp_min(1e-12), v.new_zeros(()))
    for v, w in reversed(pyramid[:-1]):
        up = F.interpolate(filled, size=v.shape[-2:], mode="bilinear", align_corners=False)
        filled = torch.where(w > 0, v / w.clamp_min(1e-12), up)
    return filled[0, 0]


def _read_png(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.array(im)
    except OSError as error:
        raise DatasetError(f"{path}: cannot read ({error})") from error


class CityscapesSource:
    """Cityscapes for :func:`cmosx.train.data.generate.generate_dataset`."""

    name = "cityscapes-bsr"
    classes = CITYSCAPES_CLASSES
    hr_size = (480, 640)

    def __init__(self, root: str | Path | None, limit: int | None = None, size: tuple[int, int] | None = None):
        if root is None:
            raise DatasetError(HELP)
        self.hr_size = tuple(size or HR_SIZE)
        self.root = Path(root)
        if not (self.root / "leftImg8bit").is_dir():
            raise DatasetError(f"{self.root}: no leftImg8bit folder. {HELP}")
        self.stems: dict[str, list[Path]] = {}
        for split in SPLITS:
            images = sorted((self.root / "leftImg8bit" / split).glob("*/*_leftImg8bit.png"))
            if limit is not None:
                images = images[:limit]
            if images:
                self.stems[split] = images
        if not self.stems:
            raise DatasetError(f"{self.root / 'leftImg8bit'}: no images in train/val/test. {HELP}")

    def split_counts(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.stems.items()}

    def sample_name(self, split: str, index: int) -> str:
        return self.stems[split][index].name[: -len("_leftImg8bit.png")]

    def _path(self, kind: str, split: str, index: int, suffix: str) -> Path:
        image = self.stems[split][index]
        return self.root / kind / split / image.parent.name / f"{self.sample_name(split, index)}_{suffix}"

    def load(self, split: str, index: int):
        image_path = self.stems[split][index]
        rgb = _read_png(image_path)
        if rgb.ndim != 3 or rgb.shape[2] < 3:
            raise DatasetError(f"{image_path}: expected an RGB image")
        h, w = rgb.shape[:2]
        image = torch.from_numpy(np.ascontiguousarray(rgb[..., :3])).permute(2, 0, 1).float() / 255.0

        label_path = self._path("gtFine", split, index, "gtFine_labelIds.png")
        if label_path.is_file():
            ids = _read_png(label_path)
            if ids.shape != (h, w):
                raise DatasetError(f"{label_path}: size {ids.shape} differs from the image {h}x{w}")
            labels = torch.from_numpy(LABEL_TO_TRAIN[ids.astype(np.int64).clip(0, 255)].astype(np.int64))
        elif split == "test":
            labels = torch.full((h, w), 255, dtype=torch.int64)
        else:
            raise DatasetError(f"{label_path}: missing. {HELP}")

        disp_path = self._path("disparity", split, index, "disparity.png")
        cam_path = self._path("camera", split, index, "camera.json")
        for needed in (disp_path, cam_path):
            if not needed.is_file():
                raise DatasetError(f"{needed}: missing. {HELP}")
        raw = _read_png(disp_path).astype(np.float32)
        if raw.shape != (h, w):
            raise DatasetError(f"{disp_path}: size {raw.shape} differs from the image {h}x{w}")
        try:
            camera = json.loads(cam_path.read_text(encoding="utf-8"))
            baseline = float(camera["extrinsic"]["baseline"])
            fx = float(camera["intrinsic"]["fx"])
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise DatasetError(f"{cam_path}: cannot read extrinsic.baseline / intrinsic.fx ({error})") from error
        disparity = torch.from_numpy(np.where(raw > 0, (raw - 1.0) / 256.0, 0.0).astype(np.float32))
        valid = disparity > 0
        if not bool(valid.any()):
            raise DatasetError(f"{disp_path}: no valid disparity")
        holes = float((~valid).float().mean())
        disparity = fill_holes(disparity, valid).clamp_min(baseline * fx / SKY_DEPTH_M)
        depth = (baseline * fx / disparity).clamp(0.5, SKY_DEPTH_M)
        depth = torch.where(labels == SKY_TRAIN_ID, torch.tensor(SKY_DEPTH_M), depth)
        image, depth, labels = resize_scene(image, depth, labels, self.hr_size)
        return image, depth, labels, f"{image_path.relative_to(self.root)} (disparity holes filled: {holes:.1%})"

    def describe(self) -> dict:
        return {
            "kind": "Cityscapes fine (leftImg8bit, disparity, camera, gtFine)",
            "root": str(self.root),
            "depth": "baseline * fx / disparity; disparity holes filled by push-pull interpolation (the paper used "
            "CREStereo disparity instead); sky pixels at 1000 m; depth clamped to [0.5, 1000] m",
            "labels": "gtFine labelIds -> 19 train ids (255 ignore); the public test split has no labels (all 255)",
            "resize": "2048x1024 -> 640x480 (image antialiased bilinear, depth / labels nearest)",
        }
