"""Evaluation with a known answer, and the train -> export -> eval path through the CLI."""

import json
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cmosx.models.card import Conditioning, ModelCard, Recipe
from cmosx.models.model import Model
from cmosx.models.rrdb_sft import labels_to_probabilities
from cmosx.models.specs import get_spec
from cmosx.ops.grid import grid_downsample, grid_upsample
from cmosx.train.evaluate import evaluate, format_table
from cmosx.train.metrics import blur_psnr_ssim, sr_psnr_ssim_y
from cmosx.train.runs import build_cmos, build_sr

pytestmark = pytest.mark.usefixtures("one_thread")


def _card(spec, **conditioning) -> ModelCard:
    recipe = Recipe(conditioning=Conditioning(**conditioning))
    return ModelCard(name="test", spec=spec, num_classes=2, class_names=["a", "b"], sigma_max=5.0, recipe=recipe)


def _zero_networks() -> Model:
    """Networks whose parameters are all zero: SR output 0, blur 0, logits 0 (so class 0 everywhere)."""
    spec = get_spec("tiny")
    cmos, sr = build_cmos(spec, 2), build_sr(spec, 2)
    with torch.no_grad():
        for p in list(cmos.parameters()) + list(sr.parameters()):
            p.zero_()
    return Model(card=_card(spec), cmos=cmos, sr=sr, source="zero")


def _flat_sample(value: float = 0.5, size: int = 32) -> dict:
    labels = torch.zeros(size, size, dtype=torch.int64)
    labels[:, size // 2 :] = 1
    labels[0, 0] = 255
    return {
        "hr": torch.full((3, size, size), value),
        "lr": torch.full((3, size // 4, size // 4), value),
        "blur": torch.full((1, size, size), 2.5),
        "labels": labels,
        "space_invariant": torch.tensor(True),
    }


def _evaluate(model, groups, **kwargs):
    return evaluate(model, groups, dataset_name="flat", device="cpu", precision="fp32", **kwargs)


def test_known_answer_on_flat_images():
    nets = _zero_networks()
    report = _evaluate(nets, {1: [_flat_sample()], 2: [_flat_sample(), _flat_sample()]}, upper=nets)
    assert set(report.rows) == {"bicubic", "aligned cubic", "model", "upper bound"}
    # both interpolations of a flat image are exact (the spline's truncated kernel to 1e-6)
    assert report.rows["bicubic"]["mean"]["psnr_y"] == math.inf
    assert report.rows["aligned cubic"]["mean"]["psnr_y"] > 100
    # SR output 0 -> Y = 16/255; HR 0.5 -> Y = (16 + 219 * 0.5) / 255: difference 109.5 / 255 everywhere
    expected = 20 * math.log10(255 / 109.5)
    for row in ("model", "upper bound"):
        assert report.rows[row]["1"]["psnr_y"] == pytest.approx(expected, abs=1e-6)
        assert report.rows[row]["mean"]["psnr_y"] == pytest.approx(expected, abs=1e-6)
        # a flat output against a flat truth: no shift does better than none
        assert (report.rows[row]["mean"]["reg_dx"], report.rows[row]["mean"]["reg_dy"]) == (0.0, 0.0)
    m = report.rows["model"]["mean"]
    # blur 0 vs 2.5 / sigma_max 5 = 0.5 -> 20 log10(2) dB; SSIM of flat maps = C1 / (0.25 + C1)
    assert m["blur_psnr"] == pytest.approx(20 * math.log10(2), abs=1e-9)
    assert m["blur_ssim"] == pytest.approx(1e-4 / (0.25 + 1e-4), rel=1e-6)
    # class 0 predicted everywhere: IoU 0.5 for class 0 (half the valid pixels), 0 for class 1
    assert m["miou"] == pytest.approx(0.25, abs=2e-3)
    assert report.border == 4 and report.images_per_group == {"1": 1, "2": 2}
    assert report.labelled_per_group == {"1": 1, "2": 2} and report.notes == []
    assert report.maps["upper bound"] == {"blur": "ground truth", "semantics": "estimated by zero"}
    assert report.maps["model"] == {"blur": "estimated by zero", "semantics": "estimated by zero"}
    assert report.engine["device"] == "cpu" and report.engine["precision"] == {
        "model": "float32",
        "upper bound": "float32",
    }
    table = format_table(report)
    assert "border crop 4 px" in table and "maps fed to upper bound: blur ground truth" in table


def test_error_broken_down_by_ground_truth_sigma():
    """Zero networks on an image whose sharp left half is 0.5 and whose right half (sigma 5) is 0.25."""
    sample = _flat_sample()
    sample["hr"][..., 16:] = 0.25
    sample["lr"][..., 4:] = 0.25
    sample["blur"][..., :16] = 0.2
    sample["blur"][..., 16:] = 5.0  # the top edge belongs to the last bin
    report = _evaluate(_zero_networks(), {1: [sample]})
    by_sigma = report.to_dict()["by_sigma"]
    assert by_sigma["edges"] == [0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert by_sigma["share"] == [0.5, 0.0, 0.0, 0.0, 0.0, 0.5]
    model = by_sigma["psnr_y"]["model"]
    assert model[0] == pytest.approx(20 * math.log10(255 / 109.5), abs=1e-6)
    assert model[5] == pytest.approx(20 * math.log10(255 / 54.75), abs=1e-6)
    assert model[1:5] == [None] * 4  # empty bins
    # the spline through a step rings on both sides of it; pixel-centre bicubic also smears it 1.5 px late
    aligned, bicubic = by_sigma["psnr_y"]["aligned cubic"], by_sigma["psnr_y"]["bicubic"]
    assert 20 < aligned[0] < 60 and 20 < aligned[5] < 60 and bicubic[5] < aligned[5]
    assert "PSNR-Y by ground-truth sigma" in format_table(report)


def _random_networks(seed: int = 0, **conditioning) -> Model:
    torch.manual_seed(seed)
    spec = get_spec("tiny")
    cmos, sr = build_cmos(spec, 2), build_sr(spec, 2)
    with torch.no_grad():  # an output that reads the maps: non-zero map embeddings
        for p in sr.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return Model(card=_card(spec, **conditioning), cmos=cmos.eval(), sr=sr.eval(), source=f"random{seed}")


def _textured_sample(unlabelled: bool = False) -> dict:
    g = torch.Generator().manual_seed(3)
    hr = torch.nn.functional.avg_pool2d(torch.rand(1, 3, 66, 66, generator=g), 3, 1)[0]
    blur = torch.linspace(0.0, 5.0, 64).expand(1, 64, 64).clone()
    labels = torch.full((64, 64), 255) if unlabelled else (blur[0] > 2.5).long()
    return {"hr": hr, "lr": hr[:, ::4, ::4].clone(), "blur": blur, "labels": labels, "name": "textured"}


def test_rows_run_the_engine_with_the_maps_their_conditioning_asks_for():
    """Each network row is what the engine's Upscaler gives; the baseline is the SR network fed zero maps."""
    from cmosx.engine.pipeline import Upscaler
    from cmosx.train.eval_engine import engine_model

    model = _random_networks(0)
    upper = _random_networks(1)
    upper.cmos = None
    baseline = _random_networks(2, blur=False, semantics=False)
    baseline.cmos = None
    sample = _textured_sample()
    report = _evaluate(model, {1: [sample]}, upper=upper, baseline=baseline)
    lr, hr = sample["lr"], sample["hr"]

    def psnr(out):
        return sr_psnr_ssim_y(out, hr, 4)[0]

    blind = Upscaler(engine_model(model, model.cmos, "m"), device="cpu", precision="fp32").upscale(lr)
    assert report.rows["model"]["1"]["psnr_y"] == pytest.approx(psnr(blind.image), abs=1e-9)
    with_truth = Upscaler(engine_model(upper, model.cmos, "u"), device="cpu", precision="fp32")
    truth = with_truth.upscale(lr, blur_override=grid_downsample(sample["blur"][None], 4)[0])
    assert report.rows["upper bound"]["1"]["psnr_y"] == pytest.approx(psnr(truth.image), abs=1e-9)
    assert psnr(truth.image) != pytest.approx(psnr(with_truth.upscale(lr).image), abs=1e-3)  # the blur is read
    unconditioned = engine_model(baseline, None, "b")
    alone = Upscaler(unconditioned, device="cpu", precision="fp32").upscale(lr)
    assert report.rows["baseline"]["1"]["psnr_y"] == pytest.approx(psnr(alone.image), abs=1e-9)
    with torch.inference_mode():  # whatever maps the engine hands it, the baseline's network sees zeros
        maps = torch.rand(1, 1, 16, 16) * 5, torch.rand(1, 2, 16, 16)
        zeros = torch.zeros(1, 1, 16, 16), torch.zeros(1, 2, 16, 16)
        assert torch.equal(unconditioned.sr(lr[None], *maps), baseline.sr(lr[None], *zeros))
    assert report.maps["baseline"] == {"blur": "not used (fed as zeros)", "semantics": "not used (fed as zeros)"}
    assert report.maps["upper bound"] == {"blur": "ground truth", "semantics": "estimated by random0"}
    assert report.sources == {"baseline": "random2", "model": "random0", "upper bound": "random1"}
    for row in ("bicubic", "aligned cubic", "baseline", "model", "upper bound"):
        assert {"reg_dx", "reg_dy", "reg_gain"} <= set(report.rows[row]["mean"])
    assert report.rows["bicubic"]["1"]["reg_dx"] < -0.5  # pixel-centre: off the subsampling grid


def test_an_estimator_run_is_scored_on_its_maps_and_an_sr_run_on_ground_truth_maps():
    from cmosx.models.cmos import conditions

    estimator, sr_only = _random_networks(0), _random_networks(1)
    estimator.sr, sr_only.cmos = None, None
    sample = _textured_sample()
    maps_only = _evaluate(estimator, {1: [sample]}).rows["model"]["1"]
    assert "psnr_y" not in maps_only and maps_only["blur_psnr"] > 0 and 0 <= maps_only["miou"] <= 1
    with torch.inference_mode():
        maps = estimator.cmos(sample["lr"][None])
        blur, _ = conditions(maps.blur_lr, maps.logits_lr, 5.0)
    expected = blur_psnr_ssim(grid_upsample(blur, 4)[0], sample["blur"], 5.0)[0]
    assert maps_only["blur_psnr"] == pytest.approx(expected, abs=1e-6)
    upper = _evaluate(sr_only, {1: [sample]}).rows["upper bound"]["1"]
    with torch.inference_mode():
        probs = labels_to_probabilities(sample["labels"][None], 2)
        out = sr_only.sr(sample["lr"][None], grid_downsample(sample["blur"][None], 4), grid_downsample(probs, 4))
    assert upper["psnr_y"] == pytest.approx(sr_psnr_ssim_y(out[0].clamp(0, 1), sample["hr"], 4)[0], abs=1e-6)


def test_miou_is_not_available_without_labels():
    report = _evaluate(_random_networks(0), {"test": [_textured_sample(unlabelled=True)]})
    assert report.rows["model"]["test"]["miou"] is None and report.rows["model"]["mean"]["miou"] is None
    assert report.labelled_per_group == {"test": 0}
    assert report.to_dict()["notes"] == ["mIoU not available: no labels in group(s) test"]
    table = format_table(report)
    assert "n/a" in table and "nan" not in table.lower()
    assert report.rows["model"]["test"]["blur_psnr"] is not None  # the blur maps are still scored


def test_an_installed_package_is_never_exported_into(tmp_path, monkeypatch):
    from cmosx.cli.main import app
    from cmosx.errors import UsageError
    from cmosx.models import hub
    from cmosx.train.export import export_run

    installed = tmp_path / "lib" / "python3.12" / "site-packages" / "cmosx" / "_weights"
    installed.mkdir(parents=True)
    (installed / "manifest.json").write_text('{"models": {}}')
    monkeypatch.setattr(hub, "bundled_dir", lambda: installed)
    with pytest.raises(UsageError, match="part of an installed package: export to a folder you name"):
        export_run(tmp_path / "blind", "my-model", eval_images=0)
    with pytest.raises(UsageError, match="installed package"):
        hub.register_bundled("my-model", "my-model.safetensors", "my-model.json")
    result = CliRunner().invoke(app, ["weights", "export", str(tmp_path / "blind"), "my-model"])
    assert result.exit_code == 2 and "installed package" in result.output
    assert [p.name for p in installed.iterdir()] == ["manifest.json"]
    checkout = tmp_path / "checkout" / "weights"  # a source checkout's folder (editable install) is used as is
    checkout.mkdir(parents=True)
    monkeypatch.setattr(hub, "bundled_dir", lambda: checkout)
    assert hub.writable_bundled_dir() == checkout


def test_cli_trains_three_stages_exports_and_evaluates(tmp_path, monkeypatch):
    from cmosx.cli.main import app
    from cmosx.models import hub
    from cmosx.train.export import export_run

    runner = CliRunner()
    common = ["--dataset", "synthetic-bsr", "--spec", "tiny", "--steps", "2", "--batch-size", "2", "--crop", "32"]
    common += ["--scene-size", "64x64", "--threads", "1", "-q"]
    for stage, extra in (("estimator", ["--blur-weight", "3", "--seg-weight", "0.5"]), ("sr", [])):
        result = runner.invoke(app, ["train", "--stage", stage, "--out", str(tmp_path / stage), *common, *extra])
        assert result.exit_code == 0, result.output
    # fine-tune the sr run with JPEG-augmented LR inputs
    tune = ["train", "--stage", "sr", "--out", str(tmp_path / "sr-ft"), "--init", str(tmp_path / "sr"), *common]
    result = runner.invoke(app, [*tune, "--lr-jpeg", "80-95", "--lr-jpeg-probability", "0.5"])
    assert result.exit_code == 0, result.output
    model_dir = tmp_path / "model"
    blind = ["train", "--stage", "blind", "--out", str(tmp_path / "blind"), *common]
    blind += ["--estimator", str(tmp_path / "estimator"), "--init", str(tmp_path / "sr-ft"), "--export", str(model_dir)]
    result = runner.invoke(app, [*blind, "--export-eval", "0"])
    assert result.exit_code == 0, result.output
    card = json.loads((model_dir / "config.json").read_text())
    assert card["recipe"]["stages"]["blind"]["sessions"][0]["end_step"] == 2
    estimator = card["recipe"]["stages"]["estimator"]["config"]
    assert estimator["stage"] == "estimator"
    assert (estimator["blur_weight"], estimator["aux_blur_weight"]) == (3.0, 1.5)
    assert (estimator["seg_weight"], estimator["aux_seg_weight"]) == (0.5, 0.25)
    tuned = card["recipe"]["stages"]["sr"]
    assert tuned["config"]["lr_jpeg"] == 80 and tuned["config"]["lr_jpeg_max"] == 95
    assert tuned["config"]["lr_jpeg_probability"] == 0.5
    assert tuned["init"]["run"] == str(tmp_path / "sr") and tuned["init"]["config"]["lr_jpeg"] is None
    # export by NAME into the bundled folder (a temporary one here): manifest entry, loadable by name
    bundled = tmp_path / "weights"
    bundled.mkdir()
    (bundled / "manifest.json").write_text('{"models": {}}')
    monkeypatch.setattr(hub, "bundled_dir", lambda: bundled)
    written = export_run(tmp_path / "blind", "tiny-test", eval_images=0)
    assert written.weights == bundled / "tiny-test.safetensors"
    manifest = json.loads((bundled / "manifest.json").read_text())
    assert manifest["default"] == "tiny-test" and manifest["models"]["tiny-test"]["sha256"] == written.sha256
    # `cmosx weights export` stores a `cmosx eval --json` report in the card; `weights list` shows its means
    report = {"dataset": "synthetic-bsr", "groups": [1], "rows": {"bicubic": {"mean": {"psnr_y": 25.5}}}}
    (tmp_path / "eval.json").write_text(json.dumps(report))
    exported = runner.invoke(
        app, ["weights", "export", str(tmp_path / "blind"), "tiny-two", "--metrics", str(tmp_path / "eval.json")]
    )
    assert exported.exit_code == 0, exported.output
    assert hub.resolve_model("tiny-two").card.metrics.entries == report
    listing = runner.invoke(app, ["weights", "list"])
    assert listing.exit_code == 0 and "bicubic: psnr_y 25.5" in listing.output
    assert "tiny-test (default)" in listing.output
    loaded = hub.resolve_model("tiny-test")
    assert loaded.card.recipe.conditioning == Conditioning(blur=True, semantics=True)
    # a second run into the same folder without --resume is refused
    again = runner.invoke(app, ["train", "--stage", "sr", "--out", str(tmp_path / "sr"), *common])
    assert again.exit_code == 2 and "--resume" in again.output
    # unknown option values are usage errors
    bad = runner.invoke(app, ["train", "--stage", "sr", "--gia", "XYZ", "--out", str(tmp_path / "x"), *common])
    assert bad.exit_code == 2 and "GIA" in bad.output


def test_cli_eval_json_on_a_tiny_synthetic_group(tmp_path, monkeypatch):
    from cmosx.cli.main import app
    from cmosx.train import sources

    monkeypatch.setattr(sources, "SYNTHETIC_TEST_SIZE", (64, 64))
    monkeypatch.setattr(sources, "SYNTHETIC_TEST_COUNT", 2)
    runner = CliRunner()
    common = ["--dataset", "synthetic-bsr", "--spec", "tiny", "--steps", "1", "--batch-size", "2", "--crop", "32"]
    common += ["--scene-size", "64x64", "--threads", "1", "-q"]
    assert runner.invoke(app, ["train", "--stage", "sr", "--out", str(tmp_path / "sr"), *common]).exit_code == 0
    result = runner.invoke(
        app, ["eval", "--dataset", "synthetic-bsr", "--model", str(tmp_path / "sr"), "--groups", "2", "--json", "-q"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["images_per_group"] == {"2": 2} and set(report["rows"]) == {
        "bicubic",
        "aligned cubic",
        "upper bound",
    }
    # an SR run alone has no estimator: the engine cannot take its ground-truth semantics, so it runs directly
    truth = "ground truth (network run directly: the engine takes no semantic map)"
    assert report["maps"]["upper bound"] == {"blur": truth, "semantics": truth}
    assert report["engine"]["tile"] == {"upper bound": None}
    assert 10 < report["rows"]["bicubic"]["mean"]["psnr_y"] < 60


# measured for the shipped cmosx-lite on these 4 scenes through the engine (fp32): see the model card
# (weights/cmosx-lite.md); trained on one pixel grid, its output registers within 0.25 HR px of the truth, while
# bicubic sits at (-1.5, -1.5)
BUNDLED_MARGIN_OVER_BICUBIC_DB = 1.0
BUNDLED_MARGIN_OVER_ALIGNED_CUBIC_DB = 0.6
BUNDLED_MIN_BLUR_PSNR_DB = 10.0


def test_bundled_model_restores_held_out_scenes_better_than_interpolation():
    """The shipped model on 2 held-out synthetic scenes of groups 1 and 2 (a guard, not the full evaluation)."""
    from cmosx.train.runs import load_networks
    from cmosx.train.sources import open_test_group

    groups = {g: open_test_group("synthetic-bsr", None, g, count=2)[0] for g in (1, 2)}
    report = evaluate(load_networks(None), groups, dataset_name="synthetic-bsr", device="cpu", precision="fp32")
    mean = {row: values["mean"]["psnr_y"] for row, values in report.rows.items()}
    assert mean["model"] > mean["bicubic"] + BUNDLED_MARGIN_OVER_BICUBIC_DB, mean
    assert mean["model"] > mean["aligned cubic"] + BUNDLED_MARGIN_OVER_ALIGNED_CUBIC_DB, mean
    assert report.rows["model"]["mean"]["blur_psnr"] > BUNDLED_MIN_BLUR_PSNR_DB, report.rows["model"]["mean"]
    bicubic, aligned = report.rows["bicubic"]["mean"], report.rows["aligned cubic"]["mean"]
    assert abs(bicubic["reg_dx"] + 1.5) < 0.15 and abs(bicubic["reg_dy"] + 1.5) < 0.15, bicubic
    assert abs(aligned["reg_dx"]) < 0.15 and abs(aligned["reg_dy"]) < 0.15, aligned
    model = report.rows["model"]["mean"]
    assert abs(model["reg_dx"]) < 0.25 and abs(model["reg_dy"]) < 0.25, model


def test_companions_make_the_evaluation_reproducible_from_the_shipped_files(tmp_path, monkeypatch):
    """`weights export --upper/--baseline` ships the other rows' SR networks; eval and verify use them."""
    from cmosx.cli.main import app
    from cmosx.models import hub
    from cmosx.train import sources

    monkeypatch.setattr(sources, "SYNTHETIC_TEST_SIZE", (64, 64))
    monkeypatch.setattr(sources, "SYNTHETIC_TEST_COUNT", 2)
    bundled = tmp_path / "weights"
    bundled.mkdir()
    (bundled / "manifest.json").write_text('{"models": {}}')
    monkeypatch.setattr(hub, "bundled_dir", lambda: bundled)
    runner = CliRunner()
    common = ["--dataset", "synthetic-bsr", "--spec", "tiny", "--steps", "2", "--batch-size", "2", "--crop", "32"]
    common += ["--scene-size", "64x64", "--threads", "1", "-q"]

    def train(out: str, *extra: str) -> None:
        result = runner.invoke(app, ["train", "--out", str(tmp_path / out), *common, *extra])
        assert result.exit_code == 0, result.output

    train("est", "--stage", "estimator")
    train("sr", "--stage", "sr")
    train("base", "--stage", "sr", "--unconditioned")
    train("blind", "--stage", "blind", "--estimator", str(tmp_path / "est"), "--init", str(tmp_path / "sr"))
    export = ["weights", "export", str(tmp_path / "blind"), "tiny-c", "--eval-images", "0"]
    refused = runner.invoke(app, [*export, "--baseline", str(tmp_path / "sr")])
    assert refused.exit_code == 2 and "--unconditioned" in refused.output
    result = runner.invoke(app, [*export, "--upper", str(tmp_path / "sr"), "--baseline", str(tmp_path / "base")])
    assert result.exit_code == 0, result.output
    card = json.loads((bundled / "tiny-c.json").read_text())
    assert set(card["companions"]) == {"upper", "baseline"}
    assert card["companions"]["baseline"]["conditioning"] == {"blur": False, "semantics": False}
    assert card["companions"]["upper"]["recipe"]["run"] == str(tmp_path / "sr")
    assert (bundled / "tiny-c.upper.safetensors").is_file() and (bundled / "tiny-c.baseline.safetensors").is_file()
    verified = runner.invoke(app, ["weights", "verify"])
    assert verified.exit_code == 0 and "OK  tiny-c:baseline" in verified.output, verified.output
    assert "for eval: baseline" in runner.invoke(app, ["weights", "list"]).output
    # eval of the shipped model alone gives the same rows as eval with the run folders named
    evaluate = ["eval", "--dataset", "synthetic-bsr", "--model", "tiny-c", "--groups", "1", "--json", "-q"]
    evaluate += ["--device", "cpu", "--precision", "fp32"]  # auto: bf16 or fp32 by a timing probe
    shipped = runner.invoke(app, evaluate)
    assert shipped.exit_code == 0, shipped.output
    named = runner.invoke(app, [*evaluate, "--upper", str(tmp_path / "sr"), "--baseline", str(tmp_path / "base")])
    shipped, named = json.loads(shipped.output), json.loads(named.output)
    assert shipped["sources"]["baseline"] == "tiny-c:baseline" and shipped["sources"]["upper bound"] == "tiny-c:upper"
    for row in ("upper bound", "baseline", "model"):
        assert shipped["rows"][row]["mean"]["psnr_y"] == pytest.approx(named["rows"][row]["mean"]["psnr_y"], abs=1e-9)
    # a run started from the shipped model records it (sha256 and its card's recipe) in the next card,
    # also when exported over the same name, and again when re-exported
    # (the companions too: a run can start from one, named MODEL:upper or MODEL:baseline)
    sha = json.loads((bundled / "manifest.json").read_text())["models"]["tiny-c"]["sha256"]
    upper_sha = card["companions"]["upper"]["sha256"]
    from cmosx.train.runs import load_networks

    upper = load_networks("tiny-c:upper")
    assert upper.cmos is None and upper.source == "tiny-c:upper" and upper.conditioning.blur
    assert not load_networks("tiny-c:baseline").conditioning.blur
    train("blind2", "--stage", "blind", "--estimator", "tiny-c", "--init", "tiny-c")
    train("up2", "--stage", "sr", "--init", "tiny-c:upper")
    train("base2", "--stage", "sr", "--unconditioned", "--init", "tiny-c:baseline")
    export2 = ["weights", "export", str(tmp_path / "blind2"), "tiny-c", "--eval-images", "0"]
    export2 += ["--upper", str(tmp_path / "up2"), "--baseline", str(tmp_path / "base2")]
    for _ in range(2):
        again = runner.invoke(app, export2)
        assert again.exit_code == 0, again.output
        card2 = json.loads((bundled / "tiny-c.json").read_text())
        recipe = card2["recipe"]
        assert recipe["stages"]["sr"] == {"model": "tiny-c", "sha256": sha}
        assert recipe["models"]["tiny-c"]["recipe"]["stages"]["blind"]["run"] == str(tmp_path / "blind")
        assert card2["companions"]["upper"]["recipe"]["init"] == {"model": "tiny-c:upper", "sha256": upper_sha}
    missing = runner.invoke(
        app, ["train", "--out", str(tmp_path / "x"), *common, "--stage", "sr", "--init", "tiny-d:upper"]
    )
    assert missing.exit_code != 0 and "tiny-d" in missing.output
    assert json.loads((bundled / "manifest.json").read_text())["models"]["tiny-c"]["sha256"] != sha
    # a corrupted companion fails verify (exit 1) and names the file
    result = runner.invoke(app, [*export, "--upper", str(tmp_path / "sr"), "--baseline", str(tmp_path / "base")])
    assert result.exit_code == 0, result.output
    path = bundled / "tiny-c.baseline.safetensors"
    path.write_bytes(path.read_bytes()[:-1] + b"\0")
    failed = runner.invoke(app, ["weights", "verify", "tiny-c"])
    assert failed.exit_code == 1 and "tiny-c.baseline.safetensors: sha256 mismatch" in failed.output


def test_cli_eval_of_a_photo_folder_reports_its_split_and_no_miou(tmp_path, monkeypatch):
    """`cmosx eval --photos DIR`: the bundled model's rows on scenes of the folder's test photos."""
    from PIL import Image

    from cmosx.cli.main import app
    from cmosx.train import sources
    from cmosx.train.data.photos import photo_split

    monkeypatch.setattr(sources, "PHOTO_EVAL_SIZE", (48, 64))
    g = torch.Generator().manual_seed(0)
    names = [f"p{i:02d}.png" for i in range(14)]
    (tmp_path / "photos").mkdir()
    for name in names:
        noise = torch.rand(1, 3, 164, 228, generator=g)
        pixels = (torch.nn.functional.avg_pool2d(noise, 5, 1)[0] * 255).byte().permute(1, 2, 0).numpy()
        Image.fromarray(pixels).save(tmp_path / "photos" / name)
    test_photos = sorted(n for n in names if photo_split(n) == "test")
    assert test_photos, "the fixture needs a photo in the test split"
    runner = CliRunner()
    command = ["eval", "--photos", str(tmp_path / "photos"), "--per-photo", "1", "--device", "cpu", "-q"]
    result = runner.invoke(app, [*command, "--precision", "fp32", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["dataset"] == "photo-bsr" and report["groups"] == ["test"]
    assert report["data"]["photos"] == test_photos and report["data"]["split"] == "test"
    assert report["images_per_group"] == {"test": len(test_photos)} and report["labelled_per_group"] == {"test": 0}
    assert set(report["rows"]) == {"bicubic", "aligned cubic", "baseline", "model", "upper bound"}
    assert report["rows"]["model"]["mean"]["miou"] is None and report["notes"]
    assert report["maps"]["upper bound"]["blur"] == "ground truth"
    table = runner.invoke(app, [*command, "--by-photo"])  # one column per photo
    assert table.exit_code == 0 and "n/a" in table.output and f"photos: {len(test_photos)} of" in table.output
    assert all(Path(name).stem in table.output for name in test_photos)
    both = runner.invoke(app, [*command, "--dataset", "synthetic-bsr"])
    assert both.exit_code == 2 and "--photos" in both.output
    neither = runner.invoke(app, ["eval", "-q"])
    assert neither.exit_code == 2 and "--dataset" in neither.output
