"""One pixel grid for every dataset and every augmentation path: with blur, noise and JPEG off, the
training samples satisfy LR == HR[::s, ::s] exactly, with the maps on the HR grid.

Blur is switched off by replacing the renderers with the identity (sigma 0 everywhere), so the datasets'
own generation paths (streamed and stored) and the training augmentation (crop, flip, zoom) all run.
"""

import numpy as np
import pytest
import torch
from PIL import Image
from test_data_realsets import _write_city, nyu_root  # noqa: F401 (fixture)

from cmosx.train.data import bsr
from cmosx.train.data.cityscapes import CityscapesSource
from cmosx.train.data.defocus import Defocused, RenderStats
from cmosx.train.data.degrade import Degradation
from cmosx.train.data.generate import generate_dataset
from cmosx.train.data.nyuv2 import NYUv2Source
from cmosx.train.data.photos import PhotoBSR, PhotoSource, PhotoTestSet, photo_split
from cmosx.train.data.storage import open_dataset
from cmosx.train.data.synthetic import SyntheticBSR, SyntheticSource
from cmosx.train.samples import TrainSamples

PATHS = {
    "crop": dict(flip=False, zoom_ratios=(1.0,)),
    "flip": dict(flip=True, zoom_ratios=(1.0,)),
    "zoom": dict(flip=True, zoom_ratios=(1.2, 1.5)),
}


@pytest.fixture(autouse=True)
def _no_blur(monkeypatch):
    def sharp(image, *args, **kwargs):
        _, h, w = image.shape
        return Defocused(image.clone(), torch.zeros(1, h, w), None, RenderStats(layers=1, filled_layers=0))

    monkeypatch.setattr(bsr, "render_space_variant", sharp)
    monkeypatch.setattr(bsr, "render_space_invariant", sharp)
    torch.set_num_threads(1)


def write_photos(folder, count=14, size=(160, 224)):
    """Small photos (JPEG, PNG, WebP) in nested folders; returns their relative paths."""
    rng = np.random.default_rng(5)
    paths = []
    for i in range(count):
        sub = folder / ("trip" if i % 2 else "home") / f"day{i % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        suffix = (".jpg", ".png", ".webp")[i % 3]
        base = rng.integers(0, 256, size=(size[0] // 8, size[1] // 8, 3), dtype=np.uint8)
        image = Image.fromarray(base).resize((size[1], size[0]), Image.BICUBIC)
        image.save(sub / f"img{i:02d}{suffix}")
        paths.append(f"{sub.relative_to(folder).as_posix()}/img{i:02d}{suffix}")
    return paths


def _check(dataset, path: str, scale: int = 4, n: int = 6, size: int = 32) -> None:
    samples = TrainSamples(dataset, seed=3, crop=(size, size), scale=scale, degradation=Degradation(), **PATHS[path])
    for k in range(n):
        out = samples[k]
        assert torch.equal(out["lr"], out["hr"][:, ::scale, ::scale]), f"sample {k} is off the grid"
        assert out["hr"].shape == (3, size, size) and out["lr"].shape == (3, size // scale, size // scale)
        assert out["blur"].shape == (1, size, size) and torch.all(out["blur"] == 0)
        assert out["labels"].shape == (size, size)


def _stored(source, folder, kernel=21):
    generate_dataset(source, folder, seed=0, kernel_size=kernel)
    return open_dataset(source.name, folder, "train")


@pytest.mark.parametrize("path", sorted(PATHS))
def test_synthetic_streamed_and_stored(path, tmp_path):
    _check(SyntheticBSR(seed=1, size=(48, 64), length=10), path)
    _check(_stored(SyntheticSource(0, {"train": 3}, size=(48, 64)), tmp_path / "synthetic"), path)


@pytest.mark.parametrize("path", sorted(PATHS))
def test_photo_streamed_stored_and_test_set(path, tmp_path):
    write_photos(tmp_path / "photos")
    _check(PhotoBSR(tmp_path / "photos", "train", seed=1, size=(48, 64), length=10, procedural_share=0.3), path)
    _check(_stored(PhotoSource(tmp_path / "photos", 0, {"train": 3}, size=(48, 64)), tmp_path / "stored"), path)
    _check(PhotoTestSet(tmp_path / "photos", per_photo=2, size=(48, 64)), path, n=3)


@pytest.mark.parametrize("path", sorted(PATHS))
def test_nyuv2_stored(path, nyu_root, tmp_path):  # noqa: F811
    root = nyu_root[0]
    _check(_stored(NYUv2Source(root, size=(24, 32)), tmp_path / "nyu-bsr"), path, size=16)


@pytest.mark.parametrize("path", sorted(PATHS))
def test_cityscapes_stored(path, tmp_path):
    rng = np.random.default_rng(1)
    for i in range(2):
        _write_city(tmp_path / "cityscapes", "train", "aachen", f"aachen_00000{i}_000019", rng)
    _check(_stored(CityscapesSource(tmp_path / "cityscapes", size=(32, 64)), tmp_path / "city-bsr", 61), path)


def test_photo_split_is_by_file_and_recorded(tmp_path):
    paths = write_photos(tmp_path / "photos")
    splits = {p: photo_split(p) for p in paths}
    assert {"train", "test"} <= set(splits.values())
    shares = [photo_split(f"photos/{i}.jpg") for i in range(2000)]
    for split, share in (("test", 0.25), ("val", 0.10), ("train", 0.65)):
        assert shares.count(split) / 2000 == pytest.approx(share, abs=0.03)
    assert photo_split("trip/day1/img01.jpg") == photo_split("trip/day1/img01.jpg")
    info = generate_dataset(PhotoSource(tmp_path / "photos", 0, {"train": 1, "test": 1}, (32, 32)), tmp_path / "s")
    recorded = info["source"]["photos_by_split"]
    assert {p for split in recorded.values() for p in split} == set(paths)
    assert all(splits[p] == split for split, ps in recorded.items() for p in ps)
    test = PhotoTestSet(tmp_path / "photos", per_photo=2, size=(32, 32))
    assert {test.photo_of(j) for j in range(len(test))} == set(recorded["test"])
