"""``cmosx upscale --deblur / --keep-bokeh / --blur-map`` and phone photos, through CliRunner, tiny model."""

import json

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image
from typer.testing import CliRunner

from cmosx.cli.main import app
from cmosx.ops.compare import psnr
from cmosx.ops.grid import grid_upsample

H, W = 24, 32
runner = CliRunner()


@pytest.fixture(scope="module")
def model_args(tmp_path_factory):
    from cmosx.models.card import ModelCard, Recipe
    from cmosx.models.random_init import random_model
    from cmosx.models.weights_io import save_model

    model = random_model("tiny", num_classes=3, seed=3)
    with torch.no_grad():  # random weights estimate sigma < 0 (clamped to 0): lift it into the range
        model.cmos.head_blur.out.bias.add_(2.5)
    folder = tmp_path_factory.mktemp("model")
    card = ModelCard(
        name="tiny", spec=model.card.spec, num_classes=3, class_names=["a", "b", "c"], sigma_max=5.0,
        recipe=Recipe.from_dict({"stages": {"estimator": {"config": {"dataset": "synthetic-bsr"}}}}),
    )  # fmt: skip
    save_model(folder / "model.safetensors", folder / "config.json", model.cmos, model.sr, card)
    return ["--model", str(folder), "--device", "cpu", "--precision", "fp32", "--tile", "4096"]


def _photo(path, seed=0):
    rng = np.random.default_rng(seed)
    smooth = np.kron(rng.random((H // 4, W // 4, 3)), np.ones((4, 4, 1)))  # some structure, some detail
    Image.fromarray(((0.7 * smooth + 0.3 * rng.random((H, W, 3))) * 255).astype(np.uint8)).save(path)
    return path


def _invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def _records(output):
    return [json.loads(line) for line in output.splitlines() if line.startswith("{") and '"summary"' not in line]


def _pixels(path):
    return torch.from_numpy(np.asarray(Image.open(path), dtype=np.float32) / 255).permute(2, 0, 1)


def test_blurmap_round_trip_deblur_strength_in_the_record(tmp_path, model_args):
    photo = _photo(tmp_path / "img.png")
    maps = _invoke("blurmap", photo, "--format", "tiff", "--semantic", "--json", *model_args)
    assert maps.exit_code == 0, maps.output
    (record,) = _records(maps.output)
    assert any("learnt from synthetic scenes (synthetic-bsr)" in note for note in record["notes"])
    legend = json.loads((tmp_path / "img_semantic.json").read_text())
    assert legend["classes_from"]["synthetic"] and legend["classes_from"]["dataset"] == "synthetic-bsr"
    assert "synthetic scenes" in Image.open(tmp_path / "img_semantic.png").text["cmosx:classes_note"]
    assert _invoke("blurmap", photo, "--format", "npy", "-o", tmp_path / "npy", *model_args).exit_code == 0
    out = tmp_path / "out"
    default = _invoke("upscale", photo, "-o", out / "default", "--json", *model_args)
    given = _invoke(
        "upscale", photo, "-o", out / "given", "--blur-map", tmp_path / "img_blur.tif", "--json", *model_args
    )
    npy = _invoke("upscale", photo, "-o", out / "npy", "--blur-map", tmp_path / "npy", "--json", *model_args)
    half = _invoke("upscale", photo, "-o", out / "half", "--deblur", "0.5", "--save-maps", "--json", *model_args)
    for result in (default, given, npy, half):
        assert result.exit_code == 0, result.output
    reference = _pixels(out / "default" / "img.png")
    assert psnr(_pixels(out / "given" / "img.png"), reference) >= 45
    assert psnr(_pixels(out / "npy" / "img.png"), reference) >= 45
    estimate = tifffile.imread(tmp_path / "img_blur.tif")
    assert float(estimate.min()) > 0.5 and float(estimate.max()) < 4.5  # a map that matters
    assert np.allclose(tifffile.imread(out / "half" / "img_blur.tif"), 0.5 * estimate, atol=1e-6)  # conditioned on
    assert not torch.equal(_pixels(out / "half" / "img.png"), reference)
    (record,) = _records(half.output)
    assert record["deblur"] == 0.5 and record["keep_bokeh"] is None and record["blur_map"] is None
    (record,) = _records(given.output)
    assert record["deblur"] == 1.0 and record["blur_map"] == str(tmp_path / "img_blur.tif")
    (record,) = _records(npy.output)
    assert record["blur_map"] == str(tmp_path / "npy" / "img_blur.npy")
    for bad in ("-0.1", "1.5", "nan"):
        result = _invoke("upscale", photo, "-o", out / "bad", "--deblur", bad, *model_args)
        assert result.exit_code == 2 and "--deblur" in result.output
    assert not (out / "bad").exists()


def test_keep_bokeh_with_a_painted_map_smooth_where_white_default_where_black(tmp_path, model_args):
    photo = _photo(tmp_path / "img.png", seed=1)
    painted = np.zeros((H, W), np.uint8)
    painted[:, W // 2 :] = 255
    Image.fromarray(painted).save(tmp_path / "painted.png")
    common = ["--blur-map", tmp_path / "painted.png", "--blur-map-max", "5", "--json", *model_args]
    default = _invoke("upscale", photo, "-o", tmp_path / "default", *common)
    kept = _invoke("upscale", photo, "-o", tmp_path / "kept", "--keep-bokeh", "--bokeh-sigma", "3", *common)
    assert default.exit_code == 0 and kept.exit_code == 0, kept.output
    (record,) = _records(kept.output)
    assert record["keep_bokeh"] == 3.0 and 0.3 < record["bokeh_share"] < 0.5
    default_px, kept_px = _pixels(tmp_path / "default" / "img.png"), _pixels(tmp_path / "kept" / "img.png")
    focus, bokeh = slice(0, 4 * (W // 2 - 1)), slice(4 * (W // 2 + 4), None)
    assert torch.equal(kept_px[..., focus], default_px[..., focus])
    smooth = grid_upsample(_pixels(photo)[None], 4)[0]
    assert float((kept_px[..., bokeh] - smooth[..., bokeh]).abs().max()) <= 1 / 255 + 1e-6
    assert float((default_px[..., bokeh] - smooth[..., bokeh]).abs().max()) > 4 / 255

    result = _invoke("upscale", photo, "-o", tmp_path / "x", "--bokeh-sigma", "3", *model_args)
    assert result.exit_code == 2 and "--keep-bokeh" in result.output
    result = _invoke("upscale", photo, "-o", tmp_path / "x", "--keep-bokeh", "--bokeh-sigma", "9", *model_args)
    assert result.exit_code == 2 and "keep-bokeh sigma" in result.output


def test_a_folder_of_maps_for_a_batch_and_bad_maps_fail_their_file_only(tmp_path, model_args):
    photos = tmp_path / "photos"
    photos.mkdir()
    for index, name in enumerate(("good", "missing", "small", "range", "colour", "painted", "nan")):
        _photo(photos / f"{name}.png", seed=index)
    maps = tmp_path / "maps"
    maps.mkdir()
    tifffile.imwrite(maps / "good_blur.tif", np.full((H, W), 1.5, np.float32))
    tifffile.imwrite(maps / "small_blur.tif", np.full((H - 1, W), 1.5, np.float32))
    np.save(maps / "range_blur.npy", np.full((H, W), 7.0, np.float32))
    np.save(maps / "nan_blur.npy", np.full((H, W), np.nan, np.float32))
    Image.fromarray((np.zeros((H, W, 3)) + [0, 80, 160]).astype(np.uint8)).save(maps / "colour_blur.png")
    Image.fromarray(np.full((H, W), 128, np.uint8)).save(maps / "painted_blur.png")
    (maps / "colour_blur.tif").write_bytes(b"")  # .tif is looked up first: an empty one is a clear error
    result = _invoke("upscale", photos, "-o", tmp_path / "out", "--blur-map", maps, "--json", *model_args)
    assert result.exit_code == 1
    records = {r["input"].rsplit("/", 1)[-1]: r for r in _records(result.output)}
    assert records["good.png"]["status"] == "ok"
    assert records["good.png"]["blur_map"] == str(maps / "good_blur.tif")
    errors = {name: (r["error"] or "") for name, r in records.items()}
    assert "no blur map missing_blur.tif" in errors["missing.png"]
    assert "small_blur.tif" in errors["small.png"] and "32 x 23 pixels, the input is 32 x 24" in errors["small.png"]
    assert "range_blur.npy" in errors["range.png"] and "spans 7 to 7" in errors["range.png"]
    assert "NaN" in errors["nan.png"]
    assert "colour_blur.tif" in errors["colour.png"] and "cannot read" in errors["colour.png"]
    assert "no blur map painted_blur.tif" in errors["painted.png"]  # .png maps only with --blur-map-max

    result = _invoke(
        "upscale", photos / "painted.png", photos / "colour.png", "-o", tmp_path / "o2", "--blur-map", maps,
        "--blur-map-max", "4", "--json", *model_args,
    )  # fmt: skip
    records = {r["input"].rsplit("/", 1)[-1]: r for r in _records(result.output)}
    assert records["painted.png"]["status"] == "ok", records["painted.png"]
    (maps / "colour_blur.tif").unlink()
    result = _invoke("upscale", photos / "colour.png", "-o", tmp_path / "o3", "--blur-map", maps, "--blur-map-max", "4",
                     *model_args)  # fmt: skip
    assert result.exit_code == 1 and "a colour image is not a blur map" in result.output

    result = _invoke("upscale", photos, "-o", tmp_path / "o4", "--blur-map", maps / "good_blur.tif", *model_args)
    assert result.exit_code == 2 and "one map for one input" in result.output
    one = _invoke("upscale", photos / "good.png", "-o", tmp_path / "o5", "--blur-map", maps / "good_blur.tif",
                  "--blur-map-max", "3", *model_args)  # fmt: skip
    assert one.exit_code == 1 and "float sigma values" in one.output


def test_heic_and_avif_photos_through_upscale_keep_metadata(tmp_path, model_args):
    import pillow_heif

    from cmosx.io import read_image
    from cmosx.io.formats import avif_writable

    pillow_heif.register_heif_opener()
    exif = Image.Exif()
    exif[0x0112], exif[0x010F] = 6, "TestCam"
    rgb = np.asarray(Image.open(_photo(tmp_path / "src.png")))
    Image.fromarray(rgb).save(tmp_path / "IMG_1.HEIC", exif=exif.tobytes(), quality=95)
    Image.fromarray(rgb).save(tmp_path / "web.avif", exif=exif.tobytes(), quality=95)
    result = _invoke("upscale", tmp_path / "IMG_1.HEIC", tmp_path / "web.avif", "--json", *model_args)
    assert result.exit_code == 0, result.output
    jpeg = read_image(tmp_path / "IMG_1_x4.jpg")  # HEIC -> JPEG with --format same
    avif = read_image(tmp_path / ("web_x4.avif" if avif_writable() else "web_x4.png"))
    for photo in (jpeg, avif):
        assert (photo.width, photo.height) == (4 * H, 4 * W)  # upright: orientation 6 applied once
        assert photo.metadata.exif[0x010F] == "TestCam" and photo.metadata.exif.get(0x0112, 1) == 1
