"""``cmosx upscale`` end to end through Typer's CliRunner with the real engine and a seeded tiny model."""

import json
import os
import subprocess
import sys
import zlib
from pathlib import Path
from types import SimpleNamespace

import imagecodecs
import numpy as np
import pytest
import tifffile
import torch
from PIL import Image, ImageCms
from typer.testing import CliRunner

from cmosx.cli.main import app
from cmosx.io import read_image

H, W = 24, 32
runner = CliRunner()
CLASSES = ["sky", "ground", "thing"]


def _tiny_model():
    from cmosx.models.cmos import CMOS
    from cmosx.models.descriptor import describe
    from cmosx.models.rrdb_sft import RRDBSFT
    from cmosx.models.specs import get_spec

    spec = get_spec("tiny")
    torch.manual_seed(0)
    card = SimpleNamespace(name="tiny", spec=spec, num_classes=3, class_names=CLASSES, scale=4, sigma_max=5.0)
    return SimpleNamespace(
        cmos=CMOS(spec.cmos, 3), sr=RRDBSFT(spec.sr, 3), card=card, descriptor=describe(spec, 3), source="tiny"
    )


@pytest.fixture
def model_arg(tmp_path_factory, model_loads):
    """``--model PATH`` of a seeded random-weight tiny model saved to tmp; ``calls`` counts model resolutions."""
    from cmosx.models.card import ModelCard
    from cmosx.models.weights_io import save_model

    model = _tiny_model()
    folder = tmp_path_factory.mktemp("model")
    card = ModelCard(
        name="tiny", spec=model.card.spec, num_classes=3, class_names=CLASSES, scale=4, sigma_max=5.0,
        description="seeded random weights for tests",
    )  # fmt: skip
    save_model(folder / "model.safetensors", folder / "config.json", model.cmos, model.sr, card)
    args = ["--model", str(folder), "--device", "cpu", "--precision", "fp32", "--tile", "32"]
    return SimpleNamespace(args=args, calls=model_loads)


def _rgb(seed=0, channels=3, dtype=np.uint8):
    rng = np.random.default_rng(seed)
    peak = np.iinfo(dtype).max
    return (rng.random((H, W, channels)) * peak).astype(dtype)


def _invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def _records(output):
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    return [r for r in lines if "summary" not in r], next(r["summary"] for r in lines if "summary" in r)


def _bomb_png() -> bytes:
    """A PNG header claiming 50000 x 50000 pixels (and no image data)."""
    header = (50000).to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
    crc = zlib.crc32(b"IHDR" + header).to_bytes(4, "big")
    return b"\x89PNG\r\n\x1a\n" + len(header).to_bytes(4, "big") + b"IHDR" + header + crc


def test_tree_mirrored_junk_skipped_bad_files_fail_alone(tmp_path, model_arg):
    src = tmp_path / "photos"
    (src / "trip" / "day1").mkdir(parents=True)
    (src / ".cache").mkdir()
    Image.fromarray(_rgb(0)).save(src / "a.png")
    Image.fromarray(_rgb(1)).save(src / "trip" / "day1" / "b.jpg")
    Image.fromarray(_rgb(3)).save(src / ".cache" / "hidden.png")
    Image.fromarray(_rgb(3)).save(src / ".hidden.png")
    (src / "Thumbs.db").write_bytes(b"junk")
    (src / ".DS_Store").write_bytes(b"junk")
    (src / "notes.txt").write_text("not an image")
    bad = {
        "empty.png": b"",
        "corrupt.jpg": np.random.default_rng(0).bytes(300),
        "truncated.jpg": (src / "trip" / "day1" / "b.jpg").read_bytes()[:400],
        "trip/bomb.png": _bomb_png(),
    }
    for name, data in bad.items():
        (src / name).write_bytes(data)
    out = tmp_path / "out"
    result = _invoke("upscale", src, "-o", out, "--recursive", "--json", *model_arg.args)
    assert result.exit_code == 1, result.output
    records, summary = _records(result.stdout)
    assert (summary["total"], summary["ok"], summary["failed"], summary["exit_code"]) == (6, 2, 4, 1)
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert written == ["a.png", "trip/day1/b.jpg"]
    by_name = {Path(r["input"]).name: r for r in records}
    for record in (by_name["a.png"], by_name["b.jpg"]):
        assert set(record) >= {"input", "output", "status", "error", "seconds", "model", "input_size", "output_size"}
        assert record["input_size"] == [W, H] and record["output_size"] == [4 * W, 4 * H]
        assert record["status"] == "ok" and record["error"] is None and "tiny" in record["model"]
        assert read_image(record["output"]).size == (4 * W, 4 * H)
    for name in bad:
        record = by_name[Path(name).name]
        assert record["status"] == "failed" and Path(name).name in record["error"] and record["output_size"] is None
    # human-readable mode: one "Error:" line per bad file; done files are skipped without loading the model
    calls = len(model_arg.calls)
    result = _invoke("upscale", src, "-o", out, "-r", "--skip-existing", "--overwrite", *model_arg.args)
    assert result.exit_code == 2  # the two policies exclude each other
    result = _invoke("upscale", src / "a.png", "-o", out, "--skip-existing", *model_arg.args)
    assert result.exit_code == 0 and "skipped" in result.stdout and len(model_arg.calls) == calls
    result = _invoke("upscale", src, "-o", out, "-r", "--skip-existing", *model_arg.args)
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert result.exit_code == 1 and len(errors) == 4
    # without --recursive only the top level is taken
    result = _invoke("upscale", src, "-o", tmp_path / "flat", "--json", "--dry-run", *model_arg.args)
    assert _records(result.stdout)[1]["total"] == 4


def test_existing_outputs_refused_skipped_without_work_or_overwritten(tmp_path, model_arg):
    Image.fromarray(_rgb(0)).save(tmp_path / "a.png")
    out = tmp_path / "out"
    assert _invoke("upscale", tmp_path / "a.png", "-o", out, *model_arg.args).exit_code == 0
    stamp = (out / "a.png").stat().st_mtime_ns
    calls_before = len(model_arg.calls)

    refused = _invoke("upscale", tmp_path / "a.png", "-o", out, *model_arg.args)
    assert refused.exit_code == 1 and "exists" in refused.stderr

    skipped = _invoke("upscale", tmp_path / "a.png", "-o", out, "--skip-existing", "--json", *model_arg.args)
    assert skipped.exit_code == 0
    records, summary = _records(skipped.stdout)
    assert summary["skipped"] == 1 and records[0]["status"] == "skipped"
    assert len(model_arg.calls) == calls_before  # no model was even loaded
    assert (out / "a.png").stat().st_mtime_ns == stamp

    planned = _invoke("upscale", tmp_path / "a.png", "-o", out, "--overwrite", "--dry-run", "--json", *model_arg.args)
    assert planned.exit_code == 0 and _records(planned.stdout)[0][0]["status"] == "planned"


def test_output_equal_to_input_is_refused(tmp_path, model_arg):
    Image.fromarray(_rgb(0)).save(tmp_path / "a.png")
    before = (tmp_path / "a.png").read_bytes()
    result = _invoke("upscale", tmp_path / "a.png", "-o", tmp_path, "--overwrite", *model_arg.args)
    assert result.exit_code == 1 and "overwrite an input" in result.stderr
    assert (tmp_path / "a.png").read_bytes() == before


def test_dry_run_writes_and_loads_nothing(tmp_path, model_arg):
    Image.fromarray(_rgb(0)).save(tmp_path / "a.png")
    result = _invoke("upscale", tmp_path / "a.png", "--dry-run", "--format", "tiff", *model_arg.args)
    assert result.exit_code == 0 and "a_x4.tif" in result.stdout
    assert sorted(os.listdir(tmp_path)) == ["a.png"] and model_arg.calls == []


def test_photo_fidelity_grey_16bit_alpha_orientation_icc_raw(tmp_path, model_arg, write_dng):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(_rgb(0, 1)[:, :, 0], "L").save(src / "grey.jpg")
    (src / "deep.png").write_bytes(imagecodecs.png_encode(_rgb(1, 3, np.uint16)))
    Image.fromarray(_rgb(2, 4), "RGBA").save(src / "alpha.png")
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "TestCam"
    Image.fromarray(_rgb(3)).save(src / "rotated.jpg", exif=exif.tobytes(), icc_profile=icc)
    write_dng(src / "shot.dng", W, H)
    out = tmp_path / "out"
    result = _invoke("upscale", src, "-o", out, "--json", *model_arg.args)
    assert result.exit_code == 0, result.output
    raw = read_image(out / "shot.tif")  # RAW -> 16-bit TIFF
    assert raw.bit_depth == 16 and raw.size == (4 * W, 4 * H) and raw.metadata.icc_profile
    assert raw.metadata.exif[0x010F] == "TestCam"
    grey = read_image(out / "grey.jpg")
    assert grey.is_grayscale and grey.size == (4 * W, 4 * H)
    deep = read_image(out / "deep.png")
    assert deep.bit_depth == 16 and deep.color.shape[0] == 3
    alpha = read_image(out / "alpha.png")
    assert alpha.alpha is not None and alpha.size == (4 * W, 4 * H)
    rotated = read_image(out / "rotated.jpg")
    assert rotated.size == (4 * H, 4 * W)  # stored landscape, displayed portrait
    with Image.open(out / "rotated.jpg") as image:
        assert image.getexif().get(0x0112) == 1 and image.getexif()[0x010F] == "TestCam"
        assert image.info["icc_profile"] == icc
        assert image.getexif().get_ifd(0x8769)[0xA002] == 4 * H


def test_scale_3_and_invalid_arguments(tmp_path, model_arg):
    Image.fromarray(_rgb(0)).save(tmp_path / "a.png")
    result = _invoke("upscale", tmp_path / "a.png", "--scale", 3, "--save-maps", *model_arg.args)
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "a_x3.png").size == (3 * W, 3 * H)
    sigma = tifffile.imread(tmp_path / "a_x3_blur.tif")  # --save-maps: the map at the input's resolution
    assert sigma.shape == (H, W) and sigma.dtype == np.float32
    assert Image.open(tmp_path / "a_x3_blur.png").text["cmosx:sigma_range"] == "0 5"
    assert _invoke("upscale", tmp_path / "a.png", "--scale", 5, *model_arg.args).exit_code == 2
    assert _invoke("upscale", tmp_path / "missing.png", *model_arg.args).exit_code == 2
    assert _invoke("upscale", tmp_path / "a.png", "--format", "gif", *model_arg.args).exit_code == 2
    assert _invoke("upscale", tmp_path / "a.png", *model_arg.args, "--tile", "big").exit_code == 2
    missing_model = _invoke("upscale", tmp_path / "a.png", "-o", tmp_path / "m", *model_arg.args, "--model", tmp_path)
    assert missing_model.exit_code in (1, 2) and missing_model.stderr.startswith("Error:")
    assert len(missing_model.stderr.strip().splitlines()) == 1
    assert "2 and 3" in _invoke("upscale", "--help").stdout  # the downscale is documented


def test_sharding_by_torchrun_environment_splits_the_files(tmp_path, model_arg, monkeypatch):
    for index in range(5):
        Image.fromarray(_rgb(index)).save(tmp_path / f"p{index}.png")
    seen = []
    for rank in range(2):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        result = _invoke("upscale", str(tmp_path / "p*.png"), "-o", tmp_path / "out", "--dry-run", "--json")
        records, summary = _records(result.stdout)
        assert summary["rank"] == rank and summary["world_size"] == 2
        seen.append({Path(r["input"]).name for r in records})
    assert seen[0] == {"p0.png", "p2.png", "p4.png"} and seen[1] == {"p1.png", "p3.png"}


def test_real_subprocess_python_m_cmosx(tmp_path, model_arg):
    Image.fromarray(_rgb(0)).save(tmp_path / "a.png")
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "cmosx", "upscale", str(tmp_path / "a.png"), str(tmp_path / "bad.jpg")]
    done = subprocess.run([*command, "-o", str(tmp_path / "out"), "--json", *model_arg.args], capture_output=True,
                          text=True, env=env, timeout=120, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 1, done.stderr
    records, summary = _records(done.stdout)
    assert summary["ok"] == 1 and summary["failed"] == 1
    assert Image.open(tmp_path / "out" / "a.png").size == (4 * W, 4 * H)
