"""The training augmentation on one pixel grid (LR pixel i on HR pixel s*i) with physically scaled blur."""

import numpy as np
import pytest
import torch

from cmosx.errors import DatasetError, UsageError
from cmosx.train.data.augment import augment, crop, hflip, random_crop, zoom
from cmosx.train.data.degrade import Degradation


def _edge_sigma(image: torch.Tensor) -> float:
    """Blur of a vertical step edge: std of the derivative of the row-averaged profile (px)."""
    profile = image.mean(dim=(0, 1)).double()
    d = profile.diff().clamp_min(0)
    x = torch.arange(d.numel(), dtype=torch.float64) + 0.5
    d = d / d.sum()
    mean = (d * x).sum()
    return float(torch.sqrt((d * (x - mean) ** 2).sum()))


def _grid_sample(h: int = 48, w: int = 64, seed: int = 0) -> dict:
    """Random 8-bit HR, blur off: LR = HR[::4, ::4]; labels a function of the HR (to check alignment)."""
    gen = torch.Generator().manual_seed(seed)
    hr = torch.randint(0, 256, (3, h, w), generator=gen).float() / 255
    return {
        "hr": hr,
        "lr": hr[:, ::4, ::4].clone(),
        "blur": torch.zeros(1, h, w),
        "labels": (hr[0] * 255).long() % 7,
        "layers": (hr[1] * 255).long() % 3,
        "name": "grid",
    }


def _assert_on_grid(out: dict, scale: int = 4) -> None:
    assert torch.equal(out["lr"], out["hr"][:, ::scale, ::scale])
    assert out["hr"].shape[-2:] == out["blur"].shape[-2:] == out["labels"].shape
    assert out["lr"].shape[-1] * scale == out["hr"].shape[-1]


def test_crop_and_flip_keep_the_grid_and_the_maps():
    sample = _grid_sample()
    for out in (
        crop(sample, 8, 12, (32, 40)),
        hflip(sample),
        random_crop(hflip(sample), (32, 32), torch.Generator().manual_seed(3)),
        hflip(hflip(sample)),
    ):
        _assert_on_grid(out)
        assert torch.equal(out["labels"], (out["hr"][0] * 255).long() % 7)
        assert torch.equal(out["layers"], (out["hr"][1] * 255).long() % 3)
    flipped = hflip(sample)
    assert flipped["hr"].shape == (3, 48, 60) and flipped["lr"].shape == (3, 12, 15)
    # mirrored, the sample keeps original HR columns 60 down to 1: LR pixel 0 is original LR 15 = HR 60
    assert torch.equal(flipped["hr"][:, :, 0], sample["hr"][:, :, 60])
    assert torch.equal(flipped["hr"][:, :, -1], sample["hr"][:, :, 1])
    with pytest.raises(UsageError):
        crop(sample, 2, 0, (16, 16))
    with pytest.raises(DatasetError):
        crop(sample, 40, 0, (16, 16))


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("ratio", [1.2, 1.5])
def test_zoom_re_renders_on_the_grid(ratio, flip):
    sample = _grid_sample()
    out = zoom(sample, ratio, (32, 32), torch.Generator().manual_seed(1), Degradation(), np.random.default_rng(0), flip)
    _assert_on_grid(out)
    assert torch.all(out["blur"] == 0)
    # the maps come from the same window as the image: zoom 8 x 8-block labels as an image with the same
    # draws: inside the blocks (2 px from any other label) bicubic gives back the nearest-neighbour labels
    blocks = torch.randint(0, 7, (6, 8), generator=torch.Generator().manual_seed(2))
    sample["labels"] = blocks.repeat_interleave(8, 0).repeat_interleave(8, 1)
    out = zoom(sample, ratio, (32, 32), torch.Generator().manual_seed(1), Degradation(), np.random.default_rng(0), flip)
    as_image = dict(sample, hr=sample["labels"].float().expand(3, -1, -1) / 255)
    twin = zoom(
        as_image, ratio, (32, 32), torch.Generator().manual_seed(1), Degradation(), np.random.default_rng(0), flip
    )
    values = twin["hr"][0] * 255
    lab = out["labels"].float().view(1, 1, 32, 32)
    same = torch.nn.functional.max_pool2d(lab, 5, 1, 2) == -torch.nn.functional.max_pool2d(-lab, 5, 1, 2)
    interior = same[0, 0]
    interior[:2], interior[-2:], interior[:, :2], interior[:, -2:] = False, False, False, False
    assert interior.float().mean() > 0.1
    torch.testing.assert_close(values[interior], out["labels"][interior].float(), atol=1e-3, rtol=0)


@pytest.mark.parametrize("ratio", [1.2, 1.5])
def test_zoom_multiplies_the_rendered_blur(ratio):
    h, w = 48, 96
    sharp = torch.zeros(3, h, w)
    sharp[:, :, w // 2 :] = 1.0
    sample = {
        "hr": sharp,
        "lr": sharp[:, ::4, ::4],
        "blur": torch.full((1, h, w), 2.0),
        "labels": torch.zeros(h, w, dtype=torch.int64),
    }
    gen = torch.Generator().manual_seed(0)
    out = zoom(sample, ratio, (48, 96), gen, Degradation(scale=1), np.random.default_rng(0))
    assert float(out["blur"].mean()) == pytest.approx(2.0 * ratio, abs=0.06)
    # the re-rendered (scale 1) image shows the blur its map states
    assert _edge_sigma(out["lr"]) == pytest.approx(2.0 * ratio, rel=0.08)


def test_augment_draws_every_path_and_needs_the_degradation_to_zoom():
    sample = _grid_sample(64, 64)
    seen = set()
    for seed in range(24):
        gen = torch.Generator().manual_seed(seed)
        out = augment(sample, gen, size=(32, 32), zoom_ratios=(1.0, 1.5), degradation=Degradation())
        _assert_on_grid(out)
        assert out["hr"].shape == (3, 32, 32)
        seen.add(bool(torch.equal(out["labels"], (out["hr"][0] * 255).long() % 7)))
    assert seen == {True, False}  # crops keep the exact label function, zooms resample it
    with pytest.raises(UsageError):
        augment(sample, torch.Generator().manual_seed(0), size=(32, 32), zoom_ratios=(1.5,))
