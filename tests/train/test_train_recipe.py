"""``cmosx train`` without ``--stage``: the whole recipe into a usable model, resumable; finding raw data."""

import json
import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image
from safetensors.torch import load_file
from typer.testing import CliRunner

from cmosx.cli.main import app
from cmosx.train import recipe, sources
from cmosx.train.data import cityscapes

TINY = ["--spec", "tiny", "--steps", "2", "--batch-size", "2", "--crop", "32", "--threads", "1", "--workers", "0"]


@pytest.fixture(autouse=True)
def _small(monkeypatch, tmp_path):
    """One thread, small held-out images, 32 x 64 Cityscapes scenes, no user cache or data folder."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setattr(sources, "SYNTHETIC_TEST_SIZE", (64, 64))
    monkeypatch.setattr(recipe, "VALIDATION_IMAGES", 2)
    monkeypatch.setattr(cityscapes, "HR_SIZE", (32, 64))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("CMOSX_DATA", raising=False)
    yield
    torch.set_num_threads(threads)


def _invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _city_root(root):
    """A fake-format Cityscapes folder: 2 train, 1 val and 1 test image (test_data_realsets' writer)."""
    from test_data_realsets import _write_city

    rng = np.random.default_rng(3)
    _write_city(root, "train", "aachen", "aachen_000000_000019", rng)
    _write_city(root, "train", "aachen", "aachen_000001_000019", rng)
    _write_city(root, "val", "lindau", "lindau_000000_000019", rng)
    _write_city(root, "test", "berlin", "berlin_000000_000019", rng)
    return root


def _assert_upscales_with(model_dir, tmp_path):
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(photo)
    result = _invoke("upscale", photo, "-o", tmp_path / "up", "--model", model_dir)
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "up" / "photo.png") as im:
        assert im.size == (96, 80)


def _assert_model_folder(out):
    folder = out / "model"
    assert {p.name for p in folder.iterdir()} >= {"model.safetensors", "config.json"}
    card = json.loads((folder / "config.json").read_text())
    assert set(card["companions"]) == {"upper", "baseline"}
    assert card["companions"]["baseline"]["conditioning"] == {"blur": False, "semantics": False}
    assert card["recipe"]["stages"]["estimator"]["run"] == str(out / "estimator")
    assert card["recipe"]["stages"]["sr"]["run"] == str(out / "sr")
    return card


def test_bare_command_trains_the_whole_recipe_into_a_usable_model(tmp_path):
    out = tmp_path / "run"
    args = ["train", "--dataset", "synthetic-bsr", *TINY, "--scene-size", "64x64", "--out", out]
    result = _invoke(*args, "--estimator-steps", "3", "--blind-lr", "1e-4", "--export-eval", "1")
    assert result.exit_code == 0, result.output
    for step in recipe.RECIPE:  # a line per finished step (the bars go to stderr, mixed in here)
        assert f"{step.name:<9} {step.title}: " in result.output
    assert result.output.count("; validation (synthetic-bsr val, 2 images): ") == 4
    assert "blur-map PSNR" in result.output and "PSNR-Y" in result.output
    assert f"cmosx upscale --model {out / 'model'}" in result.output
    assert "baseline      mean" in result.output  # the evaluation summary
    configs = {name: json.loads((out / name / "run.json").read_text())["config"] for name in recipe.RECIPE_NAMES}
    assert {name: c["steps"] for name, c in configs.items()} == {"estimator": 3, "sr": 2, "baseline": 2, "blind": 2}
    assert configs["blind"]["lr"] == 1e-4 and configs["sr"]["lr"] == 2e-4  # the cpu preset's sr lr
    assert configs["baseline"]["unconditioned"] and not configs["sr"]["unconditioned"]
    assert configs["blind"]["estimator"] == str(out / "estimator") and configs["blind"]["init"] == str(out / "sr")
    card = _assert_model_folder(out)
    assert set(card["metrics"]["rows"]) >= {"model", "upper bound", "baseline", "bicubic"}
    _assert_upscales_with(out / "model", tmp_path)

    again = _invoke(*args)
    assert again.exit_code == 2 and "--resume" in again.output
    args += ["--estimator-steps", "3", "--blind-lr", "1e-4"]
    back = _invoke(*args[:-4], "--resume")  # --steps 2 for the estimator too: fewer than it has done
    assert back.exit_code == 2 and "at step 3 already; --steps 2 would go back" in back.output
    kept = _invoke(*args, "--resume", "--export-eval", "0")
    assert kept.exit_code == 0, kept.output
    assert kept.output.count("(finished earlier, kept)") == 4
    assert "%|" not in kept.output  # no step ran: no bar was drawn
    quiet = _invoke(*args, "--resume", "--export-eval", "0", "-q")
    assert quiet.exit_code == 0 and "validation" not in quiet.output and "model:" in quiet.output


def test_bare_command_on_raw_cityscapes_found_through_cmosx_data(tmp_path, monkeypatch):
    data = tmp_path / "data"
    _city_root(data / "cityscapes")
    monkeypatch.setenv("CMOSX_DATA", str(data))
    out = tmp_path / "run"
    result = _invoke("train", "--dataset", "cityscapes-bsr", *TINY, "--out", out, "--export-eval", "1")
    assert result.exit_code == 0, result.output
    generated = data / "cityscapes-bsr"
    assert f"into {generated}" in result.output and (generated / ".complete").is_file()
    assert "validation (cityscapes-bsr val, 1 images)" in result.output
    card = _assert_model_folder(out)
    assert card["num_classes"] == 19 and card["metrics"]["images_per_group"] == {str(g): 1 for g in range(1, 6)}
    assert json.loads((out / "estimator" / "run.json").read_text())["config"]["root"] == str(data / "cityscapes")
    _assert_upscales_with(out / "model", tmp_path)


def test_missing_raw_data_is_a_usage_error_that_shows_the_layout(tmp_path):
    partial = tmp_path / "cs"
    _city_root(partial)
    for split in ("train", "val", "test"):
        for f in (partial / "disparity" / split).rglob("*.png"):
            f.unlink()
    result = _invoke("train", "--dataset", "cityscapes-bsr", "--root", partial, *TINY, "--out", tmp_path / "o")
    assert result.exit_code == 2
    text = result.output
    for split in ("train", "val", "test"):
        assert f"{partial}/disparity/{split}/CITY/*_disparity.png (from disparity_trainvaltest.zip)" in text
    assert f"{partial}/camera/train" not in text  # only what is missing is listed as missing
    for kind in ("leftImg8bit", "gtFine", "disparity", "camera"):
        assert f"ROOT/{kind}/{{train,val,test}}/CITY/" in text
    assert "cityscapes-dataset.com" in text and len(text.splitlines()) <= 25
    assert not (tmp_path / "o").exists()
    # NYUv2 without any folder: the default place under the user's cache, and what belongs there
    nyu = _invoke("train", "--dataset", "nyuv2-bsr", *TINY, "--out", tmp_path / "n")
    assert nyu.exit_code == 2
    expected = tmp_path / "cache" / "cmosx" / "data" / "nyuv2"
    for name in ("nyu_depth_v2_labeled.mat", "splits.mat", "classMapping40.mat or"):
        assert f"{expected}/{name}" in nyu.output
    assert "CMOSX_DATA" in nyu.output and len(nyu.output.splitlines()) <= 25


def test_read_only_raw_data_generates_into_the_cache_and_says_so(tmp_path, monkeypatch):
    parent = tmp_path / "ro"
    raw = _city_root(parent / "cityscapes")
    for folder in [parent, *[p for p in parent.rglob("*") if p.is_dir()]]:
        folder.chmod(0o555)
    if os.geteuid() == 0:  # root writes anywhere: make the check see what a user would
        monkeypatch.setattr(sources, "_writable", lambda folder: not str(folder).startswith(str(parent)))
    try:
        target = sources.generated_folder(raw)
        assert target.parent == tmp_path / "cache" / "cmosx" / "bsr" and target.name.startswith("cityscapes-")
        result = _invoke("train", "--dataset", "cityscapes-bsr", "--root", raw, "--stage", "estimator", *TINY,
                         "--out", tmp_path / "est")  # fmt: skip
        assert result.exit_code == 0, result.output
        assert f"into {target}" in result.output and (target / "dataset.json").is_file()
        assert sorted(p.name for p in parent.iterdir()) == ["cityscapes"]
    finally:
        for folder in [parent, *[p for p in parent.rglob("*") if p.is_dir()]]:
            folder.chmod(0o755)


class _KilledError(Exception):
    pass


class _KillAt(recipe.RecipeProgress):
    def __init__(self, step_name=None, at_step=None, before=None):
        self.step_name, self.at_step, self.before = step_name, at_step, before

    def step_started(self, index, planned, start_step):
        if planned.step.name == self.before:
            raise _KilledError("between steps")

    def trained(self, planned, report):
        if planned.step.name == self.step_name and report.step == self.at_step:
            raise _KilledError("inside a step")


COMMON = dict(
    dataset="synthetic-bsr", spec="tiny", steps=4, batch_size=2, crop=(32, 32), scene_size=(64, 64), threads=1,
    num_workers=0, checkpoint_every=2, seed=3,
)  # fmt: skip


def _run(out, resume=False, progress=None):
    plan = recipe.plan_recipe(out, COMMON, {"estimator": {"steps": 3}}, resume=resume)
    return recipe.run_recipe(plan, out, resume=resume, eval_images=0, progress=progress)


def test_resume_after_kills_between_and_inside_steps_gives_the_uninterrupted_model(tmp_path, monkeypatch):
    whole = _run(tmp_path / "whole")
    out = tmp_path / "killed"
    real_validate = recipe.validate_step

    def killed_validation(planned, *args, **kwargs):  # trained to its end, not yet recorded as finished
        raise _KilledError("during validation")

    monkeypatch.setattr(recipe, "validate_step", killed_validation)
    with pytest.raises(_KilledError):
        _run(out)
    monkeypatch.setattr(recipe, "validate_step", real_validate)
    with pytest.raises(_KilledError):
        _run(out, resume=True, progress=_KillAt("sr", 3))  # after the sr checkpoint at step 2
    assert recipe.read_recipe(out)["steps"]["estimator"]["finished"]["steps"] == 3
    with pytest.raises(_KilledError):
        _run(out, resume=True, progress=_KillAt(before="blind"))
    record = recipe.read_recipe(out)["steps"]
    assert record["baseline"]["finished"] is not None and record["blind"]["finished"] is None
    resumed = _run(out, resume=True)
    assert [s.kept for s in resumed.steps] == [True, True, True, False]
    for name in ("model.safetensors", "upper.safetensors", "baseline.safetensors"):
        a, b = load_file(str(whole.model / name)), load_file(str(resumed.model / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert [s.validation for s in whole.steps] == [s.validation for s in resumed.steps]
    sessions = json.loads((out / "sr" / "run.json").read_text())["sessions"]
    assert [(s["start_step"], s["end_step"]) for s in sessions] == [(0, 2), (2, 4)]


def test_an_interrupted_generation_resumes_to_the_same_set(tmp_path):
    raw = _city_root(tmp_path / "cityscapes")
    reference = sources.ensure_dataset("cityscapes-bsr", _city_root(tmp_path / "ref" / "cityscapes"))
    target = sources.generated_folder(raw)
    target.mkdir()
    (target / ".dataset.x1.json.tmp").write_text("{")  # a kill while dataset.json was being written

    def stop(done, total):
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sources.ensure_dataset("cityscapes-bsr", raw, progress=stop)
    assert sources.generation_needed(target) and (target / sources.FAILED_MARK).is_file()
    assert sources.ensure_dataset("cityscapes-bsr", raw) == target and not sources.generation_needed(target)
    written = sorted(p.relative_to(target) for p in target.rglob("*.png"))
    assert written == sorted(p.relative_to(reference) for p in reference.rglob("*.png")) and len(written) == 32
    assert all((target / p).read_bytes() == (reference / p).read_bytes() for p in written)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_worker(rank: int, world: int, port: int, raw: str, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world)
    )
    torch.set_num_threads(1)
    from cmosx.train.config import make_config
    from cmosx.train.data import generate
    from cmosx.train.trainer import run_training

    cityscapes.HR_SIZE = (32, 64)
    sources.WAIT_POLL_S = 0.05
    if rank != 0:  # only rank 0 may generate

        def refuse(*args, **kwargs):
            raise AssertionError("rank 1 generated the BSR set")

        generate.generate_dataset = refuse
    folder = sources.ensure_dataset("cityscapes-bsr", raw)
    assert not sources.generation_needed(folder)
    config = make_config("estimator", dataset="cityscapes-bsr", root=raw, spec="tiny", steps=2, batch_size=2,
                         crop=(32, 32), threads=1, num_workers=0)  # fmt: skip
    result = run_training(config, os.path.join(out, "est"), device="cpu")
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump({"folder": str(folder), "final_step": result.final_step}, f)


@pytest.mark.slow
def test_two_gloo_ranks_generate_the_bsr_set_once_then_train(tmp_path):
    raw = _city_root(tmp_path / "cityscapes")
    mp.spawn(_rank_worker, args=(2, _free_port(), str(raw), str(tmp_path)), nprocs=2, join=True)
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert reports[0] == reports[1] == {"folder": str(tmp_path / "cityscapes-bsr"), "final_step": 2}
    assert (tmp_path / "est" / "checkpoints" / "step-00000002.safetensors").is_file()


def test_options_that_belong_to_single_stages_are_usage_errors(tmp_path):
    base = ["train", "--dataset", "synthetic-bsr", *TINY, "--out", tmp_path / "o"]
    for extra, message in (
        (["--export", "m"], "exports to OUT/model"),
        (["--unconditioned"], "sets unconditioned itself"),
        (["--init", "x"], "sets init itself"),
        (["--stage", "sr", "--blind-steps", "3"], "--blind-steps: for the blind stage"),
        (["--preset", "gpu"], "unknown preset"),
    ):
        result = _invoke(*base, *extra)
        assert result.exit_code == 2 and message in result.output, (extra, result.output)
    assert not (tmp_path / "o").exists()
    help_text = _invoke("train", "--help").output
    assert "2+ cores" in help_text and "large GPU" in help_text and "--estimator-steps" in help_text
