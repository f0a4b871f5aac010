"""Synthetic scenes, the streamed SyntheticBSR dataset, and the LR degradation."""

import numpy as np
import pytest
import torch
from PIL import Image

from cmosx.errors import DatasetError, UsageError
from cmosx.train.data import SYNTHETIC_CLASSES, SyntheticBSR
from cmosx.train.data.degrade import Degradation, degrade, downsample
from cmosx.train.data.scenes import GROUND, PICTURE, WALL, make_scene
from cmosx.train.data.synthetic import synthetic_sample
from cmosx.train.data.textures import PhotoTextures

pytestmark = pytest.mark.usefixtures("one_thread")


def test_scene_is_seeded_and_reproducible():
    a = make_scene(64, 96, np.random.default_rng(7))
    b = make_scene(64, 96, np.random.default_rng(7))
    c = make_scene(64, 96, np.random.default_rng(8))
    assert torch.equal(a.image, b.image) and torch.equal(a.depth, b.depth) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.image, c.image)


def test_scenes_build_for_every_seed_at_small_sizes():
    # regression: a long lens over a close wall once put the nearest-object bound behind the wall
    for seed in range(60):
        scene = make_scene(96, 128, np.random.default_rng(seed))
        assert scene.depth.shape == (96, 128)
        assert torch.isfinite(scene.depth).all()


def test_scene_contents_are_plausible():
    seen = set()
    picture_on_wall = False
    for seed in range(12):
        scene = make_scene(96, 128, np.random.default_rng(seed))
        assert scene.image.shape == (3, 96, 128) and scene.depth.shape == (96, 128)
        assert float(scene.image.min()) >= 0 and float(scene.image.max()) <= 1
        assert float(scene.depth.min()) > 0 and torch.isfinite(scene.depth).all()
        labels = scene.labels
        assert int(labels.min()) >= 0 and int(labels.max()) < len(SYNTHETIC_CLASSES)
        seen.update(torch.unique(labels).tolist())
        # textured, not flat: plenty of distinct colours and local detail
        assert float(scene.image.std()) > 0.03
        assert float((scene.image[:, :, 1:] - scene.image[:, :, :-1]).abs().mean()) > 0.005
        ground = labels == GROUND
        if ground.sum() > 50:  # ground depth shrinks toward the bottom of the frame
            rows = torch.nonzero(ground.any(1)).flatten()
            top, bottom = int(rows[0]), int(rows[-1])
            assert float(scene.depth[top][ground[top]].mean()) >= float(scene.depth[bottom][ground[bottom]].mean())
        # a picture shares the depth of the wall next to it (a semantic edge without a depth edge)
        pic = labels == PICTURE
        if pic.any():
            y, x = (int(v) for v in torch.nonzero(pic)[0])
            if x > 0 and labels[y, x - 1] == WALL:
                picture_on_wall = True
                assert abs(float(scene.depth[y, x] - scene.depth[y, x - 1])) < 0.02 * float(scene.depth[y, x])
    assert len(seen) >= 6
    assert picture_on_wall


def test_sample_dict_matches_the_interface():
    sample, record = synthetic_sample(5, "train", 3, size=(64, 96), kernel_size=21)
    assert sample["hr"].shape == (3, 64, 96) and sample["hr"].dtype == torch.float32
    assert sample["lr"].shape == (3, 16, 24)
    assert sample["blur"].shape == (1, 64, 96)
    assert sample["labels"].shape == (64, 96) and sample["labels"].dtype == torch.int64
    assert sample["space_invariant"].dtype == torch.bool
    assert sample["name"] == "synthetic-train-0000003"
    assert float(sample["blur"].min()) >= 0 and float(sample["blur"].max()) <= 5.0
    # blur values carry 0.01 resolution, like the stored maps
    assert torch.allclose(sample["blur"] * 100, torch.round(sample["blur"] * 100), atol=1e-3)
    # HR and LR hold 8-bit levels
    assert torch.allclose(sample["hr"] * 255, torch.round(sample["hr"] * 255), atol=1e-3)
    assert record["blur"]["space_invariant"] is False


def test_streaming_dataset_determinism_and_invariant_share():
    ds = SyntheticBSR(seed=11, size=(32, 48), kernel_size=61, length=40)
    again = SyntheticBSR(seed=11, size=(32, 48), kernel_size=61, length=40)
    other = SyntheticBSR(seed=12, size=(32, 48), kernel_size=61, length=40)
    first = ds[0]
    assert torch.equal(first["lr"], again[0]["lr"]) and torch.equal(first["blur"], again[0]["blur"])
    assert not torch.equal(first["hr"], other[0]["hr"])
    flags = [bool(ds[i]["space_invariant"]) for i in range(40)]
    assert 3 <= sum(flags) <= 18  # ~25 % of 40
    for i in (flags.index(True), flags.index(False)):
        blur = ds[i]["blur"]
        assert float(blur.max()) <= 15.0
        assert (float(blur.min()) == float(blur.max())) == flags[i]
    ds.set_epoch(1)
    assert not torch.equal(ds[0]["hr"], first["hr"])


@pytest.mark.parametrize(
    "kwargs",
    [{"size": (30, 48)}, {"kernel_size": 20}, {"space_invariant_fraction": 2}],
)
def test_streaming_rejects_bad_settings(kwargs):
    with pytest.raises(UsageError):
        SyntheticBSR(**kwargs)


def test_degradation_options():
    rng = np.random.default_rng(0)
    hr = torch.rand(3, 32, 48)
    direct = degrade(hr, Degradation(), rng)
    assert torch.allclose(direct, torch.round(hr[:, ::4, ::4] * 255) / 255)
    bicubic = downsample(hr, 4, "bicubic")
    assert bicubic.shape == (3, 8, 12) and not torch.allclose(bicubic, hr[:, ::4, ::4], atol=0.05)
    noisy = degrade(hr, Degradation(noise_sigma=10.0), np.random.default_rng(1))
    assert 0.02 < float((noisy - direct).std()) < 0.06
    jpeg = degrade(hr, Degradation(jpeg_quality=30), rng)
    assert jpeg.shape == direct.shape and not torch.equal(jpeg, direct)
    with pytest.raises(UsageError):
        Degradation(downsampler="nearest")


def test_jpeg_quality_range_applies_to_the_chosen_share_of_images():
    """A quality drawn from 60..95 for about half the images: some stay clean, the others vary in quality."""
    hr = torch.rand(3, 64, 64)
    clean = degrade(hr, Degradation(), np.random.default_rng(0))
    at = {q: degrade(hr, Degradation(jpeg_quality=q), np.random.default_rng(0)) for q in range(60, 96)}
    mixed = Degradation(jpeg_quality=60, jpeg_quality_max=95, jpeg_probability=0.5)
    rng = np.random.default_rng(3)
    outcomes = []
    for _ in range(60):
        out = degrade(hr, mixed, rng)
        outcomes.append(None if torch.equal(out, clean) else next(q for q, ref in at.items() if torch.equal(out, ref)))
    encoded = [q for q in outcomes if q is not None]
    assert 18 <= len(encoded) <= 42 and len(set(encoded)) >= 10
    always = Degradation(jpeg_quality=60, jpeg_quality_max=95)
    assert not any(torch.equal(degrade(hr, always, rng), clean) for _ in range(10))
    with pytest.raises(UsageError, match="range"):
        Degradation(jpeg_quality=90, jpeg_quality_max=80)
    with pytest.raises(UsageError, match="probability"):
        Degradation(jpeg_quality=90, jpeg_probability=2.0)


def test_textures_from_a_photo_folder(tmp_path):
    with pytest.raises(DatasetError, match="no photos"):
        PhotoTextures(tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "bad.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DatasetError, match="bad.jpg"):
        PhotoTextures(broken).crop(8, 8, np.random.default_rng(0))
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, size=(40, 60, 3), dtype=np.uint8)).save(tmp_path / f"p{i}.png")
    photos = PhotoTextures(tmp_path)
    crop = photos.crop(16, 24, np.random.default_rng(1))
    assert crop.shape == (3, 16, 24) and 0 <= float(crop.min()) <= float(crop.max()) <= 1
    plain = make_scene(64, 96, np.random.default_rng(5))
    with_photos = make_scene(64, 96, np.random.default_rng(5), photos=photos)
    assert not torch.equal(plain.image, with_photos.image)


def test_dataset_bench_times_the_renderer_and_writes_previews(tmp_path):
    from typer.testing import CliRunner

    from cmosx.cli.main import app

    result = CliRunner().invoke(app, ["dataset", "bench", "--repeats", "1", "--samples", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "render kernel 21 (sigma <= 5)" in result.output and "render kernel 61" in result.output
    assert "synthetic-bsr sample 192x192 kernel 21" in result.output
    previews = sorted(tmp_path.glob("*.png"))
    assert len(previews) == 4 and Image.open(previews[0]).size == (2 * 640, 2 * 480)
