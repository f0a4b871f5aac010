"""NYUv2-BSR source: the NYU Depth v2 labelled set (1449 RGB-D images, 795 train / 654 test, 40 classes).

The user supplies a folder (``--root``) holding:

* ``nyu_depth_v2_labeled.mat`` -- MATLAB v7.3 (HDF5): ``images`` N x 3 x W x H uint8, ``depths``
  N x W x H metres, ``labels`` N x W x H (894-class ids, 0 = void); HDF5 stores the MATLAB axes reversed,
  hence W before H. From http://horatio.cs.nyu.edu/mit/silberman/nyu_depth_v2/nyu_depth_v2_labeled.mat
* ``splits.mat`` -- ``trainNdxs`` (795) and ``testNdxs`` (654), 1-based. From
  http://horatio.cs.nyu.edu/mit/silberman/indoor_seg_sup/splits.mat
* the 40-class labels of Gupta et al. (CVPR 2013, http://www.cs.berkeley.edu/~sgupta/cvpr13/), either
  ``classMapping40.mat`` (``mapClass``: 894-class id -> 40-class id) or ``labels40.mat``
  (``labels40``: H x W x N in MATLAB).

``.mat`` files may be MATLAB v7.3 (read with h5py) or older (read with scipy). The 40 classes 1..40
become train ids 0..39; void (0) becomes 255.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cmosx.errors import DatasetError
from cmosx.train.data.bsr import resize_scene

NYU40_CLASSES: list[str] = [
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
    "picture", "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror", "floor mat",
    "clothes", "ceiling", "books", "refrigerator", "television", "paper", "towel", "shower curtain", "box",
    "whiteboard", "person", "night stand", "toilet", "sink", "lamp", "bathtub", "bag", "otherstructure",
    "otherfurniture", "otherprop",
]  # fmt: skip

LABELED_FILE = "nyu_depth_v2_labeled.mat"
SPLITS_FILE = "splits.mat"
MAPPING_FILES = ("classMapping40.mat", "labels40.mat")

HELP = (
    "NYUv2-BSR needs --root pointing to a folder with nyu_depth_v2_labeled.mat "
    "(http://horatio.cs.nyu.edu/mit/silberman/nyu_depth_v2/nyu_depth_v2_labeled.mat), splits.mat "
    "(http://horatio.cs.nyu.edu/mit/silberman/indoor_seg_sup/splits.mat) and the 40-class mapping "
    "classMapping40.mat or labels40.mat (Gupta et al. 2013, http://www.cs.berkeley.edu/~sgupta/cvpr13/)"
)


LAYOUT = f"""NYU Depth v2 labelled set with the 40-class labels of Gupta et al. (CVPR 2013), in one folder:
  ROOT/{LABELED_FILE}  http://horatio.cs.nyu.edu/mit/silberman/nyu_depth_v2/{LABELED_FILE}
  ROOT/{SPLITS_FILE}                 http://horatio.cs.nyu.edu/mit/silberman/indoor_seg_sup/{SPLITS_FILE}
  ROOT/{MAPPING_FILES[0]} or ROOT/{MAPPING_FILES[1]}  http://www.cs.berkeley.edu/~sgupta/cvpr13/"""


def missing_raw(root: Path) -> list[str]:
    """What a raw NYUv2 folder lacks: the labelled .mat, splits.mat, the 40-class mapping."""
    root = Path(root)
    missing = [str(root / name) for name in (LABELED_FILE, SPLITS_FILE) if not (root / name).is_file()]
    if not any((root / name).is_file() for name in MAPPING_FILES):
        missing.append(" or ".join(str(root / name) for name in MAPPING_FILES))
    return missing


def read_mat_variable(path: Path, name: str) -> tuple[np.ndarray, bool]:
    """Read one variable of a .mat file; returns (array, stored_by_hdf5). HDF5 (v7.3) arrays come with the
    MATLAB axes reversed; scipy-read arrays keep MATLAB's order."""
    try:
        import h5py
        from scipy.io import loadmat
    except ImportError as error:
        raise DatasetError(
            f"{path}: reading NYUv2 .mat files needs h5py and scipy: pip install 'cmosx[train]' ({error})"
        ) from None

    try:
        if h5py.is_hdf5(path):
            with h5py.File(path, "r") as f:
                if name not in f:
                    raise DatasetError(f"{path}: no variable {name!r} (has {', '.join(sorted(f.keys()))})")
                return np.asarray(f[name]), True
        data = loadmat(path, variable_names=[name])
    except (OSError, ValueError) as error:
        raise DatasetError(f"{path}: cannot read MATLAB file ({error})") from error
    if name not in data:
        raise DatasetError(f"{path}: no variable {name!r}")
    return np.asarray(data[name]), False


class NYUv2Source:
    """NYUv2 for :func:`cmosx.train.data.generate.generate_dataset` (train 795 / test 654)."""

    name = "nyuv2-bsr"
    classes = NYU40_CLASSES
    hr_size = (480, 640)

    def __init__(self, root: str | Path | None, limit: int | None = None, size: tuple[int, int] = (480, 640)):
        try:
            import h5py
        except ImportError:
            raise DatasetError("reading NYUv2 needs h5py: pip install 'cmosx[train]'") from None

        if root is None:
            raise DatasetError(HELP)
        self.hr_size = tuple(size)
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: not a folder. {HELP}")
        self.labeled = self.root / LABELED_FILE
        for needed in (self.labeled, self.root / SPLITS_FILE):
            if not needed.is_file():
                raise DatasetError(f"{needed}: missing. {HELP}")
        if not h5py.is_hdf5(self.labeled):
            raise DatasetError(f"{self.labeled}: not an HDF5 (MATLAB v7.3) file")
        with h5py.File(self.labeled, "r") as f:
            missing = [k for k in ("images", "depths", "labels") if k not in f]
            if missing:
                raise DatasetError(f"{self.labeled}: missing {', '.join(missing)}")
            n = f["images"].shape[0]
            if f["images"].ndim != 4 or f["images"].shape[1] != 3:
                raise DatasetError(f"{self.labeled}: images must be N x 3 x W x H, found {f['images'].shape}")
            if f["depths"].shape != (n, *f["images"].shape[2:]) or f["labels"].shape != f["depths"].shape:
                raise DatasetError(f"{self.labeled}: depths / labels do not match images {f['images'].shape}")
        self.count = n
        self.indices = {
            "train": self._split_indices("trainNdxs", n),
            "test": self._split_indices("testNdxs", n),
        }
        if limit is not None:
            self.indices = {k: v[:limit] for k, v in self.indices.items()}
        self._map894, self._labels40 = self._load_mapping(n)
        self._file = None

    def _split_indices(self, variable: str, n: int) -> np.ndarray:
        arr, _ = read_mat_variable(self.root / SPLITS_FILE, variable)
        idx = arr.astype(np.int64).flatten() - 1
        if idx.size == 0 or idx.min() < 0 or idx.max() >= n:
            raise DatasetError(f"{self.root / SPLITS_FILE}: {variable} holds indices outside 1..{n}")
        return idx

    def _load_mapping(self, n: int) -> tuple[np.ndarray | None, np.ndarray | None]:
        mapping = self.root / MAPPING_FILES[0]
        if mapping.is_file():
            arr, _ = read_mat_variable(mapping, "mapClass")
            table = np.concatenate([[0], arr.astype(np.int64).flatten()])  # 894-class id -> 40-class id
            if table.max() > 40 or table.min() < 0:
                raise DatasetError(f"{mapping}: mapClass values outside 0..40")
            return table, None
        labels40 = self.root / MAPPING_FILES[1]
        if labels40.is_file():
            arr, hdf5 = read_mat_variable(labels40, "labels40")
            arr = arr.transpose(0, 2, 1) if hdf5 else arr.transpose(2, 0, 1)  # -> N x H x W
            if arr.shape[0] != n or arr.max() > 40:
                raise DatasetError(f"{labels40}: labels40 must be {n} images of ids 0..40, found {arr.shape}")
            return None, arr.astype(np.int64)
        raise DatasetError(f"{self.root}: no 40-class mapping ({' or '.join(MAPPING_FILES)}). {HELP}")

    def split_counts(self) -> dict[str, int]:
        return {k: int(v.size) for k, v in self.indices.items()}

    def sample_name(self, split: str, index: int) -> str:
        return f"nyu-{int(self.indices[split][index]) + 1:04d}"

    def load(self, split: str, index: int):
        import h5py

        j = int(self.indices[split][index])
        if self._file is None:
            self._file = h5py.File(self.labeled, "r")
        f = self._file
        image = torch.from_numpy(np.ascontiguousarray(f["images"][j].transpose(0, 2, 1))).float() / 255.0
        depth = torch.from_numpy(np.ascontiguousarray(f["depths"][j].T).astype(np.float32))
        if self._labels40 is not None:
            l40 = self._labels40[j]
        else:
            raw = np.asarray(f["labels"][j].T).astype(np.int64)
            if raw.max() >= self._map894.size:
                raise DatasetError(f"{self.labeled}: image {j + 1} has label ids beyond the 40-class mapping")
            l40 = self._map894[raw]
        labels = torch.from_numpy(np.where(l40 > 0, l40 - 1, 255).astype(np.int64))
        if not torch.isfinite(depth).all() or float(depth.max()) <= 0:
            raise DatasetError(f"{self.labeled}: image {j + 1} has no valid depth")
        depth = depth.clamp_min(0.1)  # the labelled set's depths are filled; guard zeros anyway
        image, depth, labels = resize_scene(image, depth, labels, self.hr_size)
        return image, depth, labels, f"{LABELED_FILE} image {j + 1}"

    def describe(self) -> dict:
        return {
            "kind": "NYU Depth v2 labelled set",
            "root": str(self.root),
            "labels": "NYU40 (Gupta et al. 2013): ids 1..40 -> 0..39, void -> 255",
            "split": "splits.mat trainNdxs / testNdxs",
        }
