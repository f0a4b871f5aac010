"""Tiled == untiled on the lite spec: a seeded random-weight model and the bundled trained model."""

import pytest
import torch

from cmosx.engine.bench import synthetic_photo
from cmosx.engine.pipeline import Upscaler
from cmosx.models.hub import resolve_model
from cmosx.models.random_init import random_model
from cmosx.ops.compare import psnr


@pytest.fixture(scope="module", params=["random-lite", "bundled"])
def model(request):
    torch.set_num_threads(1)
    if request.param == "bundled":
        return resolve_model(None)  # the default bundled model: weights/manifest.json
    return random_model("lite", num_classes=7, seed=3)


def _engine(model, tile):
    return Upscaler(model, device="cpu", precision="fp32", tile=tile, overlap=16, cmos_tile=4096)


def test_tiled_equals_untiled(model):
    image = synthetic_photo(70, 131, seed=5)
    reference = _engine(model, 4096).upscale(image)
    tiled_engine = _engine(model, 64)
    tiled = tiled_engine.upscale(image)
    assert tiled_engine.stats.sr_tiles > 1
    sigma_max = model.card.sigma_max
    assert psnr(tiled.image, reference.image) >= 45
    assert psnr(tiled.blur_lr, reference.blur_lr, peak=sigma_max) >= 45


@pytest.mark.parametrize("value", [0.2, 0.5, 0.8])
def test_trained_model_keeps_a_constant_image_constant(value):
    # a flat input has nothing to restore: the output stays flat, also at tile and image borders and corners
    # (random weights can't be asked this; the trained bundled model can)
    image = torch.full((3, 41, 67), value)
    out = _engine(resolve_model(None), 64).upscale(image).image
    assert (out - value).abs().max() < 0.03


def test_lite_tiles_of_both_stages_equal_the_untiled_run(monkeypatch):
    """A photo larger than one CMOS tile (planned within a small memory budget) and one SR tile: exact."""
    import cmosx.engine.pipeline as pipeline_mod

    lite = random_model("lite", num_classes=7, seed=3)
    image = synthetic_photo(60, 1450, seed=9)  # framed and padded: 120 x 1600 LR px for CMOS
    reference = Upscaler(lite, device="cpu", precision="fp32", tile=4096, cmos_tile=4096).upscale(image)
    engine = Upscaler(lite, device="cpu", precision="fp32", tile=96, overlap=16, cmos_tile="auto")
    memory = engine._cmos_memory()
    monkeypatch.setattr(pipeline_mod, "budget_bytes", lambda device: memory.peak(120 * 1440))
    tiled = engine.upscale(image)
    assert engine.stats.cmos_tiles == 2 and engine.stats.sr_tiles > 2
    for name in ("image", "blur_lr", "semantic_lr"):
        difference = (getattr(tiled, name) - getattr(reference, name)).abs().max()
        assert difference <= 2e-5, (name, float(difference))
