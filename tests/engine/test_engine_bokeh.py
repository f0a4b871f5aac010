"""Keep-bokeh: the weight from the blur map, the blend towards a grid-aligned interpolation, the engine option."""

import pytest
import test_engine_pipeline as pipeline_tests
import torch

import cmosx.engine.bokeh as bokeh
from cmosx.engine.bench import synthetic_photo
from cmosx.engine.bokeh import BOKEH_RAMP, BOKEH_SMOOTH_RADIUS, blend_towards_interpolation, bokeh_weight
from cmosx.errors import UsageError
from cmosx.ops.grid import grid_upsample

H, W = 30, 40
tiny, make = pipeline_tests.tiny, pipeline_tests.make  # the seeded tiny model fixture and the engine maker


def half_and_half(sigma_left=0.0, sigma_right=5.0):
    blur = torch.full((1, H, W), sigma_left)
    blur[..., W // 2 :] = sigma_right
    return blur


def test_weight_is_zero_in_focus_one_in_bokeh_and_never_spreads_into_focus():
    threshold = 3.0
    ramp = torch.linspace(0.0, 5.0, 101).view(1, 1, 101).expand(1, 20, 101)
    weight = bokeh_weight(ramp, threshold)[0, 10]  # the middle row: columns are sigma values
    sigma = ramp[0, 10]
    assert torch.all(weight[sigma <= threshold - BOKEH_RAMP] == 0)
    assert torch.all(
        weight[:-BOKEH_SMOOTH_RADIUS][sigma[:-BOKEH_SMOOTH_RADIUS] >= threshold + BOKEH_RAMP + 0.25] == 1
    )  # 4 px = 0.2
    assert torch.all(weight[1:] >= weight[:-1])  # monotonic in sigma
    assert float((weight[1:] - weight[:-1]).max()) < 0.15  # a smooth ramp, no step

    speckle = half_and_half()
    speckle[0, 5, 5] = 5.0  # one noisy pixel in the in-focus half
    w = bokeh_weight(speckle, threshold)
    assert torch.all(w[..., : W // 2] == 0)  # neither the speckle nor the edge reaches the in-focus half
    assert float(w[0, :, W // 2 + 2 * BOKEH_SMOOTH_RADIUS :].min()) == 1.0
    assert float(w[0, 5, 5]) == 0.0  # an isolated pixel is not kept (erosion)


def test_blend_in_strips_equals_the_whole_image_and_reaches_both_ends(monkeypatch):
    g = torch.Generator().manual_seed(3)
    lr, sr = torch.rand(3, H, W, generator=g), torch.rand(3, 4 * H, 4 * W, generator=g)
    weight = bokeh_weight(half_and_half(), 3.0)
    whole = sr.clone().add_(grid_upsample(weight[None], 4)[0] * (grid_upsample(lr[None], 4)[0] - sr))
    monkeypatch.setattr(bokeh, "_STRIP_ROWS", 7)  # strips that do not divide the height
    blended = blend_towards_interpolation(sr.clone(), lr, weight, 4)
    assert torch.allclose(blended, whole, atol=1e-6)
    cols_focus = slice(0, 4 * (W // 2 - 1))  # HR columns whose interpolated weight is exactly 0
    assert torch.equal(blended[..., cols_focus], sr[..., cols_focus])
    cols_kept = slice(4 * (W // 2 + 2 * BOKEH_SMOOTH_RADIUS), None)
    smooth = grid_upsample(lr[None], 4)[0]
    assert torch.allclose(blended[..., cols_kept], smooth[..., cols_kept], atol=1e-6)
    with pytest.raises(ValueError):
        blend_towards_interpolation(sr[:, :-4], lr, weight, 4)


def test_keep_bokeh_equals_default_in_focus_and_a_smooth_interpolation_in_bokeh(tiny):
    image = synthetic_photo(H, W, seed=5)
    given = half_and_half()
    default = make(tiny, tile=4096).upscale(image, blur_override=given)
    kept = make(tiny, tile=4096, keep_bokeh=3.0).upscale(image, blur_override=given)
    assert default.bokeh_lr is None and kept.bokeh_lr.shape == (1, H, W)
    focus = slice(0, 4 * (W // 2 - 1))
    assert torch.equal(kept.image[..., focus], default.image[..., focus])
    bokeh_cols = slice(4 * (W // 2 + 2 * BOKEH_SMOOTH_RADIUS), None)
    smooth = grid_upsample(image[None], 4)[0]
    assert torch.allclose(kept.image[..., bokeh_cols], smooth[..., bokeh_cols], atol=1e-5)
    assert not torch.allclose(default.image[..., bokeh_cols], smooth[..., bokeh_cols], atol=1e-2)
    # no overshoot: each kept HR pixel lies within its four LR neighbours' range (no ringing, no halo)
    lo = -torch.nn.functional.max_pool2d(-image[None], 2, 1, padding=0)[0]
    hi = torch.nn.functional.max_pool2d(image[None], 2, 1, padding=0)[0]
    kept_hr = kept.image[:, : 4 * (H - 1) : 4, bokeh_cols][..., ::4]
    assert torch.all(kept_hr >= lo[:, :, -kept_hr.shape[-1] :] - 1e-5)
    assert torch.all(kept_hr <= hi[:, :, -kept_hr.shape[-1] :] + 1e-5)


def test_the_bokeh_decision_ignores_the_deblur_strength(tiny):
    image = synthetic_photo(H, W, seed=6)
    given = half_and_half(1.0, 4.5)
    none = make(tiny, tile=4096, keep_bokeh=3.0, blur_scale=0.0).upscale(image, blur_override=given)
    assert torch.equal(none.bokeh_lr, bokeh_weight(given, 3.0)) and float(none.bokeh_lr.max()) == 1.0
    assert float(none.blur_lr.abs().max()) == 0.0  # deblur 0: the network is told the photo is in focus


def test_invalid_keep_bokeh_and_negative_maps_are_usage_errors(tiny):
    for bad in (0.0, -1.0, 5.5):
        with pytest.raises(UsageError, match="keep-bokeh"):
            make(tiny, tile=64, keep_bokeh=bad)
    with pytest.raises(UsageError, match="negative"):
        make(tiny, tile=4096).upscale(synthetic_photo(H, W), blur_override=torch.full((1, H, W), -0.5))
