"""The physically consistent zoom / flip augmentation: resizing by r multiplies the blur by r."""

import numpy as np
import pytest
import torch

from cmosx.errors import UsageError
from cmosx.train.data.augment import crop, hflip, random_zoom_flip, zoom
from cmosx.train.data.defocus import render_space_invariant


def _edge_sigma(image: torch.Tensor) -> float:
    """Blur of a vertical step edge: std of the derivative of the row-averaged profile (px)."""
    profile = image.mean(dim=(0, 1)).double()
    d = profile.diff().clamp_min(0)
    x = torch.arange(d.numel(), dtype=torch.float64) + 0.5
    d = d / d.sum()
    mean = (d * x).sum()
    return float(torch.sqrt((d * (x - mean) ** 2).sum()))


def _edge_sample(sigma: float, h: int = 32, w: int = 128) -> dict:
    sharp = torch.zeros(3, h, w)
    sharp[:, :, w // 2 :] = 1.0
    blurred = render_space_invariant(sharp, sigma)
    labels = torch.zeros(h, w, dtype=torch.int64)
    labels[:, w // 2 :] = 1
    # "hr" holds the *blurred* image here so the edge blur can be measured after resizing
    return {
        "hr": blurred.image,
        "lr": blurred.image[:, ::4, ::4],
        "blur": blurred.sigma,
        "labels": labels,
        "space_invariant": torch.tensor(True),
        "name": "edge",
    }


@pytest.mark.parametrize("ratio", [1.5, 2.0, 0.75])
def test_zoom_multiplies_measured_edge_blur(ratio):
    sample = _edge_sample(3.0)
    before = _edge_sigma(sample["hr"])
    assert before == pytest.approx(3.0, rel=0.05)
    zoomed = zoom(sample, ratio)
    after = _edge_sigma(zoomed["hr"])
    assert after / before == pytest.approx(ratio, rel=0.06)
    # the map says what the image shows
    assert float(zoomed["blur"].mean()) == pytest.approx(after, rel=0.06)
    h, w = zoomed["hr"].shape[-2:]
    assert zoomed["lr"].shape[-2:] == (h // 4, w // 4) and zoomed["labels"].shape == (h, w)
    assert set(torch.unique(zoomed["labels"]).tolist()) == {0, 1}


def test_flip_and_crop_keep_maps_aligned():
    sample = _edge_sample(2.0, h=32, w=64)
    flipped = hflip(sample)
    assert torch.equal(flipped["labels"][:, 0], sample["labels"][:, -1])
    assert torch.equal(hflip(flipped)["hr"], sample["hr"])
    cropped = crop(sample, (16, 32), np.random.default_rng(0))
    assert cropped["hr"].shape == (3, 16, 32) and cropped["lr"].shape == (3, 4, 8)
    with pytest.raises(UsageError):
        crop(sample, (18, 32), np.random.default_rng(0))


def test_random_zoom_flip_keeps_size_and_scales_blur():
    sample = _edge_sample(2.0, h=32, w=64)
    seen = set()
    for seed in range(12):
        out = random_zoom_flip(sample, np.random.default_rng(seed))
        assert out["hr"].shape == sample["hr"].shape and out["lr"].shape == sample["lr"].shape
        seen.add(round(float(out["blur"].mean()) / 2.0, 1))
    assert seen == {1.0, 1.2, 1.5}
