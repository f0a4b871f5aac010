"""``cmosx blurmap`` through CliRunner with the real engine and a seeded tiny model saved to tmp."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image
from typer.testing import CliRunner

from cmosx.cli.main import app

H, W = 24, 32
CLASSES = ["sky", "ground", "thing"]
runner = CliRunner()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from cmosx.models.card import ModelCard
    from cmosx.models.cmos import CMOS
    from cmosx.models.rrdb_sft import RRDBSFT
    from cmosx.models.specs import get_spec
    from cmosx.models.weights_io import save_model

    spec = get_spec("tiny")
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("model")
    card = ModelCard(name="tiny", spec=spec, num_classes=3, class_names=CLASSES, sigma_max=5.0)
    save_model(folder / "model.safetensors", folder / "config.json", CMOS(spec.cmos, 3), RRDBSFT(spec.sr, 3), card)
    return folder


@pytest.fixture
def model_args(model_dir, model_loads):
    return SimpleNamespace(
        args=["--model", str(model_dir), "--device", "cpu", "--precision", "fp32", "--tile", "32"], calls=model_loads
    )


def _image(path, seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray((rng.random((H, W, 3)) * 255).astype(np.uint8)).save(path)


def _invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_blur_preview_float_map_and_semantic_outputs(tmp_path, model_dir, model_args):
    _image(tmp_path / "a.jpg")
    out = tmp_path / "maps"
    result = _invoke("blurmap", tmp_path / "a.jpg", "-o", out, "--semantic", "--json", *model_args.args)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [
        "a_blur.png", "a_blur.tif", "a_semantic.json", "a_semantic.png"
    ]  # fmt: skip
    sigma = tifffile.imread(out / "a_blur.tif")
    assert sigma.dtype == np.float32 and sigma.shape == (H, W) and np.isfinite(sigma).all()
    assert "x4 output" in json.loads(tifffile.TiffFile(out / "a_blur.tif").pages[0].description)["unit"]
    with Image.open(out / "a_blur.png") as preview:
        assert preview.mode == "RGB" and preview.width >= W and preview.height > H  # legend under the map
        assert preview.text["cmosx:sigma_range"] == "0 5" and "x4 output" in preview.text["cmosx:quantity"]
    with Image.open(out / "a_semantic.png") as semantic:
        assert semantic.mode == "P" and semantic.size == (W, H)
        assert json.loads(semantic.text["cmosx:classes"]) == CLASSES
        assert max(np.asarray(semantic).ravel()) < len(CLASSES)
    legend = json.loads((out / "a_semantic.json").read_text())
    assert [entry["name"] for entry in legend["classes"]] == CLASSES
    # the written map is the engine's estimate, unchanged
    from cmosx.engine.pipeline import Upscaler
    from cmosx.io import read_image
    from cmosx.models.weights_io import load_model

    model = load_model(model_dir / "model.safetensors", model_dir / "config.json")
    engine = Upscaler(model, device="cpu", tile=32, precision="fp32")
    expected = engine.estimate_maps(read_image(tmp_path / "a.jpg").rgb()).blur_lr[0].numpy()
    np.testing.assert_allclose(sigma, expected, atol=1e-5)


def test_npy_format_beside_the_input_and_batch_rules(tmp_path, model_args):
    _image(tmp_path / "a.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    result = _invoke("blurmap", tmp_path, "--format", "npy", *model_args.args)
    assert result.exit_code == 1 and "broken.png" in result.stderr
    sigma = np.load(tmp_path / "a_blur.npy")
    assert sigma.dtype == np.float32 and sigma.shape == (H, W)
    assert not list(tmp_path.glob("broken_*"))
    calls = len(model_args.calls)
    again = _invoke("blurmap", tmp_path / "a.png", "--format", "npy", "--skip-existing", *model_args.args)
    assert again.exit_code == 0 and "skipped" in again.stdout and len(model_args.calls) == calls
    refused = _invoke("blurmap", tmp_path / "a.png", "--format", "npy", *model_args.args)
    assert refused.exit_code == 1 and "exists" in refused.stderr
    assert _invoke("blurmap", tmp_path / "a.png", "--format", "png", *model_args.args).exit_code == 2
