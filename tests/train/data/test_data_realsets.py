"""NYUv2 and Cityscapes sources, read from tiny files written here in the true raw formats."""

import json

import h5py
import numpy as np
import pytest
import torch
from PIL import Image
from scipy.io import savemat

from cmosx.errors import DatasetError, UsageError
from cmosx.train.data import open_dataset
from cmosx.train.data.cityscapes import CityscapesSource, fill_holes
from cmosx.train.data.generate import generate_dataset
from cmosx.train.data.nyuv2 import NYU40_CLASSES, NYUv2Source

pytestmark = pytest.mark.usefixtures("one_thread")


H, W, N = 24, 32, 5


def _v73(path):
    """An HDF5 file laid out like MATLAB v7.3 (512-byte user block with the MATLAB header)."""
    f = h5py.File(path, "w", userblock_size=512)
    return f


def _finish_v73(path):
    with open(path, "r+b") as f:
        f.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: test HDF5 schema 1.00 .".ljust(116, b" "))


@pytest.fixture(scope="module")
def nyu_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("nyu")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(N, H, W, 3), dtype=np.uint8)
    images[:, :4, :, :] = [255, 0, 0]  # top rows red: catches a transposed read
    depths = rng.uniform(1.0, 6.0, size=(N, H, W)).astype(np.float32)
    labels = rng.integers(0, 895, size=(N, H, W)).astype(np.uint16)
    labels[:, 0, 0] = 0  # void
    labels[:, 0, 1] = 5
    path = root / "nyu_depth_v2_labeled.mat"
    with _v73(path) as f:  # MATLAB stores H x W x 3 x N; HDF5 shows the axes reversed
        f["images"] = images.transpose(0, 3, 2, 1)
        f["depths"] = depths.transpose(0, 2, 1)
        f["labels"] = labels.transpose(0, 2, 1)
    _finish_v73(path)
    with _v73(root / "splits.mat") as f:  # MATLAB column vectors (k x 1) -> HDF5 shape (1, k)
        f["trainNdxs"] = np.array([[1.0, 3.0, 4.0]])
        f["testNdxs"] = np.array([[2.0, 5.0]])
    _finish_v73(root / "splits.mat")
    map_class = (np.arange(894) % 40 + 1).astype(np.float64).reshape(1, 894)  # 894-id k -> (k-1) % 40 + 1
    savemat(root / "classMapping40.mat", {"mapClass": map_class, "className": np.array(NYU40_CLASSES, dtype=object)})
    return root, images, depths, labels


def test_nyu_reads_the_v73_layout(nyu_root):
    root, images, depths, labels = nyu_root
    source = NYUv2Source(root, size=(H, W))
    assert source.split_counts() == {"train": 3, "test": 2}
    image, depth, lab, origin = source.load("train", 1)  # train index 1 = MATLAB image 3
    assert image.shape == (3, H, W)
    expected = torch.from_numpy(images[2]).permute(2, 0, 1).float() / 255
    assert torch.allclose(image, expected)
    assert torch.allclose(image[:, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.allclose(depth, torch.from_numpy(depths[2]))
    assert int(lab[0, 0]) == 255  # void -> ignore
    assert int(lab[0, 1]) == 4  # 894-id 5 -> 40-id 5 -> train id 4
    raw = torch.from_numpy(labels[2].astype(np.int64))
    valid = raw > 0
    assert torch.equal(lab[valid], (raw[valid] - 1) % 40)
    assert source.sample_name("train", 1) == "nyu-0003" and "image 3" in origin


def test_nyu_labels40_file_and_generation(nyu_root, tmp_path):
    root, _, _, labels = nyu_root
    alt = tmp_path / "nyu_alt"
    alt.mkdir()
    for name in ("nyu_depth_v2_labeled.mat", "splits.mat"):
        (alt / name).symlink_to(root / name)
    labels40 = np.where(labels > 0, (labels.astype(np.int64) - 1) % 40 + 1, 0).astype(np.uint8)
    with _v73(alt / "labels40.mat") as f:  # MATLAB H x W x N -> HDF5 N x W x H
        f["labels40"] = labels40.transpose(0, 2, 1)
    _finish_v73(alt / "labels40.mat")
    a = NYUv2Source(root, size=(H, W)).load("test", 1)[2]
    b = NYUv2Source(alt, size=(H, W)).load("test", 1)[2]
    assert torch.equal(a, b)

    out = tmp_path / "nyuv2-bsr"
    generate_dataset(NYUv2Source(root, size=(H, W)), out, seed=0, kernel_size=21)
    train = open_dataset("nyuv2-bsr", out, "train")
    assert len(train) == 3 and train.num_classes == 40
    assert len(open_dataset("nyuv2-bsr", out, "test", 5)) == 2
    assert float(train[0]["blur"].max()) <= 5.0


def test_nyu_missing_files_explain(tmp_path):
    with pytest.raises(DatasetError, match="nyu_depth_v2_labeled.mat"):
        NYUv2Source(None)
    with pytest.raises(DatasetError, match="missing"):
        NYUv2Source(tmp_path)


def _write_city(root, split, city, stem, rng, labelled=True):
    h, w = 32, 64
    rgb = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    for kind in ("leftImg8bit", "disparity"):
        (root / kind / split / city).mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png")
    disparity = np.full((h, w), 8.0)  # px -> depth = 0.2 * 2000 / 8 = 50 m
    disparity[:, 32:] = 40.0  # near half: 10 m
    stored = (disparity * 256 + 1).astype(np.uint16)
    stored[10:14, 10:14] = 0  # a hole inside the far half
    stored[:4, :] = 0  # no disparity in the sky band
    Image.fromarray(stored).save(root / "disparity" / split / city / f"{stem}_disparity.png")
    (root / "camera" / split / city).mkdir(parents=True, exist_ok=True)
    camera = {"extrinsic": {"baseline": 0.2}, "intrinsic": {"fx": 2000.0, "fy": 2000.0}}
    (root / "camera" / split / city / f"{stem}_camera.json").write_text(json.dumps(camera))
    if labelled:
        ids = np.full((h, w), 7, dtype=np.uint8)  # road
        ids[:4, :] = 23  # sky
        ids[20:, 40:50] = 26  # car
        ids[30:, :5] = 1  # ego vehicle -> ignore
        (root / "gtFine" / split / city).mkdir(parents=True, exist_ok=True)
        Image.fromarray(ids).save(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png")
    return rgb


def test_cityscapes_depth_labels_and_generation(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "cityscapes"
    rgb = _write_city(root, "train", "aachen", "aachen_000000_000019", rng)
    _write_city(root, "train", "aachen", "aachen_000001_000019", rng)
    _write_city(root, "test", "berlin", "berlin_000000_000019", rng, labelled=False)
    source = CityscapesSource(root, size=(32, 64))
    assert source.split_counts() == {"train": 2, "test": 1}
    image, depth, labels, origin = source.load("train", 0)
    assert torch.allclose(image, torch.from_numpy(rgb).permute(2, 0, 1).float() / 255)
    assert float(depth[20, 5]) == pytest.approx(50.0, rel=1e-3)
    assert float(depth[20, 50]) == pytest.approx(10.0, rel=1e-3)
    assert 45.0 < float(depth[12, 12]) < 55.0  # hole filled from its neighbours
    assert torch.all(depth[:4] == 1000.0)  # sky
    assert int(labels[8, 8]) == 0 and int(labels[2, 2]) == 10 and int(labels[25, 45]) == 13
    assert int(labels[31, 0]) == 255
    assert "holes filled" in origin
    test_labels = source.load("test", 0)[2]
    assert torch.all(test_labels == 255)

    out = tmp_path / "cityscapes-bsr"
    generate_dataset(CityscapesSource(root, size=(32, 64)), out, seed=0, kernel_size=61)
    train = open_dataset("cityscapes-bsr", out, "train")
    assert len(train) == 2 and train.num_classes == 19 and train.info["sigma_max"] == 15.0
    assert train.names[0] == "aachen_000000_000019"


def test_cityscapes_errors(tmp_path):
    with pytest.raises(DatasetError, match="leftImg8bit"):
        CityscapesSource(None)
    with pytest.raises(DatasetError, match="leftImg8bit"):
        CityscapesSource(tmp_path)
    root = tmp_path / "cs"
    _write_city(root, "val", "lindau", "lindau_000000_000019", np.random.default_rng(0))
    (root / "camera" / "val" / "lindau" / "lindau_000000_000019_camera.json").unlink()
    with pytest.raises(DatasetError, match="camera.json"):
        CityscapesSource(root).load("val", 0)


def test_fill_holes_keeps_valid_values():
    values = torch.arange(64, dtype=torch.float32).view(8, 8)
    valid = torch.ones(8, 8, dtype=torch.bool)
    valid[2:5, 3:6] = False
    filled = fill_holes(values, valid)
    assert torch.equal(filled[valid], values[valid])
    assert float(filled[~valid].min()) >= float(values.min()) and float(filled[~valid].max()) <= float(values.max())


def test_training_generates_a_missing_real_set_from_raw_data(nyu_root, tmp_path, monkeypatch):
    from cmosx.train.sources import ensure_dataset, generated_folder, open_test_group

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("CMOSX_DATA", raising=False)

    root = nyu_root[0]
    folder = ensure_dataset("nyuv2-bsr", root)
    assert folder == generated_folder(root) and (folder / "dataset.json").is_file()
    assert ensure_dataset("nyuv2-bsr", folder) == folder  # a generated folder is used as it is
    test_group, info = open_test_group("nyuv2-bsr", root, 3)
    assert len(test_group) == 2 and info.sigma_max == 5.0 and len(info.class_names) == 40
    with pytest.raises(UsageError, match="leftImg8bit"):  # not in the default place under the (empty) cache
        ensure_dataset("cityscapes-bsr", None)
