"""Training loop: every stage lowers its loss; a resumed run equals an uninterrupted one exactly."""

import json

import pytest
import torch
import torch.nn.functional as F

from cmosx.errors import ModelError, UsageError
from cmosx.train.checkpoint import latest_checkpoint, load_checkpoint
from cmosx.train.config import make_config
from cmosx.train.trainer import _collate, build_stage, train

CLASSES = ["back", "left", "right"]


class FakeBSR(torch.utils.data.Dataset):
    """Tiny BSR-like set: flat-colour rectangles, sigma per class, LR = smoothed HR area-downsampled x4."""

    def __init__(self, n: int = 4, size: int = 64, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.items = []
        for i in range(n):
            labels = torch.zeros(size, size, dtype=torch.int64)
            hr = torch.rand(3, 1, 1, generator=g).expand(3, size, size).clone()
            for c in range(1, len(CLASSES)):
                y, x = torch.randint(0, size // 2, (2,), generator=g).tolist()
                h, w = torch.randint(size // 4, size // 2, (2,), generator=g).tolist()
                labels[y : y + h, x : x + w] = c
                hr[:, y : y + h, x : x + w] = torch.rand(3, 1, 1, generator=g)
            hr = (hr + 0.05 * torch.rand(3, size, size, generator=g)).clamp(0, 1)
            blur = (labels.float() * 1.5).unsqueeze(0)
            smooth = F.avg_pool2d(hr.unsqueeze(0), 3, 1, 1, count_include_pad=False)
            lr = smooth[0, :, ::4, ::4].clamp(0, 1)  # on the grid of direct subsampling
            labels[0, :4] = 255
            self.items.append(
                {"hr": hr, "lr": lr, "blur": blur, "labels": labels, "space_invariant": torch.tensor(i == 0)}
            )

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


pytestmark = pytest.mark.usefixtures("one_thread")


def _run(tmp_path, name, stage, steps, lr=3e-3, **kw):
    cfg = make_config(stage, spec="tiny", steps=steps, batch_size=2, crop=48, warmup_steps=2, lr=lr, log_every=2, **kw)
    result = train(cfg, tmp_path / name, dataset=FakeBSR(), num_classes=3, class_names=CLASSES, sigma_max=5.0)
    return cfg, result


def _fixed_batch_loss(cfg, state=None) -> float:
    torch.manual_seed(cfg.seed)
    stage, _ = build_stage(cfg, 3, CLASSES, 5.0)
    if state is not None:
        stage.load_state_dict(state)
    batch = _collate([FakeBSR()[i] for i in range(2)])  # training items, uncropped
    stage.train()
    with torch.no_grad():
        loss, _ = stage(batch["lr"], batch["hr"], batch["blur"], batch["labels"])
    return float(loss)


def test_each_stage_lowers_its_loss(tmp_path):
    runs = {}
    for stage, steps, lr in (("estimator", 16, 1e-2), ("sr", 16, 3e-3)):
        cfg, result = _run(tmp_path, stage, stage, steps, lr)
        final = load_checkpoint(latest_checkpoint(result.run_dir))["model"]
        before, after = _fixed_batch_loss(cfg), _fixed_batch_loss(cfg, final)
        assert after < 0.9 * before, (stage, before, after)
        runs[stage] = result.run_dir
        log = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in log] == list(range(2, steps + 1, 2))
    # blind: frozen estimator from the estimator run, SR initialised from the sr run; no zoom, so that ten
    # steps of batch 2 see crops of the items the estimator was trained on (zooms re-render the LR)
    cfg, result = _run(
        tmp_path, "blind", "blind", 10, estimator=str(runs["estimator"]), init=str(runs["sr"]), zoom_ratios=(1.0,)
    )
    state = load_checkpoint(latest_checkpoint(result.run_dir))["model"]
    est = load_checkpoint(latest_checkpoint(runs["estimator"]))["model"]
    for key, value in est.items():  # the estimator stayed frozen
        assert torch.equal(state[key], value), key
    assert sum(result.losses[-3:]) < sum(result.losses[:3])


def test_init_starts_the_estimator_and_sr_stages_from_another_run(tmp_path):
    runs = {stage: _run(tmp_path, stage, stage, 2)[1].run_dir for stage in ("estimator", "sr")}
    for stage, prefix in (("estimator", "cmos."), ("sr", "sr.")):
        source = load_checkpoint(latest_checkpoint(runs[stage]))["model"]
        cfg = make_config(stage, spec="tiny", init=str(runs[stage]))
        torch.manual_seed(cfg.seed)
        module, info = build_stage(cfg, 3, CLASSES, 5.0)
        state = module.state_dict()
        assert [k for k in source if k.startswith(prefix)]
        for key, value in source.items():
            assert torch.equal(state[key], value), key
        fresh, _ = build_stage(make_config(stage, spec="tiny"), 3, CLASSES, 5.0)
        assert any(not torch.equal(fresh.state_dict()[k], v) for k, v in source.items())
    with pytest.raises(ModelError, match="no SR network"):
        build_stage(make_config("sr", spec="tiny", init=str(runs["estimator"])), 3, CLASSES, 5.0)


def test_resume_matches_an_uninterrupted_run(tmp_path):
    for stage in ("sr", "estimator"):
        kw = dict(checkpoint_every=3, steps=6)
        cfg = make_config(stage, spec="tiny", batch_size=2, crop=48, warmup_steps=2, lr=3e-3, **kw)
        common = dict(dataset=FakeBSR(), num_classes=3, class_names=CLASSES, sigma_max=5.0)
        full = train(cfg, tmp_path / f"{stage}-full", **common)
        part1 = train(cfg, tmp_path / f"{stage}-split", stop_after=4, **common)  # "killed" after step 4
        assert part1.final_step == 4
        part2 = train(cfg, tmp_path / f"{stage}-split", resume=True, **common)
        assert part2.start_step == 3  # the newest checkpoint is step 3; step 4 is redone
        assert part1.losses[:3] + part2.losses == full.losses
        a = load_checkpoint(latest_checkpoint(tmp_path / f"{stage}-full"))
        b = load_checkpoint(latest_checkpoint(tmp_path / f"{stage}-split"))
        assert a["step"] == b["step"] == 6
        for key in a["model"]:
            assert torch.equal(a["model"][key], b["model"][key]), key
        log = [json.loads(line)["step"] for line in (tmp_path / f"{stage}-split" / "metrics.jsonl").open()]
        assert log == sorted(set(log))  # lines after the resumed checkpoint were replaced, not duplicated
        sessions = json.loads((tmp_path / f"{stage}-split" / "run.json").read_text())["sessions"]
        assert [(s["start_step"], s["end_step"]) for s in sessions] == [(0, 4), (3, 6)]
        assert all(s["finished"] for s in sessions)
        assert all(s["device"] == "cpu" and "CPUs" in s["device_name"] for s in sessions)

    # a session that dies (here: an exception at step 4) stays on record up to its last checkpoint
    def crash(report):
        if report.step == 4:
            raise KeyboardInterrupt

    cfg = make_config("sr", spec="tiny", batch_size=2, crop=48, warmup_steps=2, lr=3e-3, checkpoint_every=3, steps=6)
    with pytest.raises(KeyboardInterrupt):
        train(
            cfg,
            tmp_path / "crash",
            dataset=FakeBSR(),
            num_classes=3,
            class_names=CLASSES,
            sigma_max=5.0,
            progress=crash,
        )
    sessions = json.loads((tmp_path / "crash" / "run.json").read_text())["sessions"]
    assert [(s["start_step"], s["end_step"], s["finished"]) for s in sessions] == [(0, 3, None)]


class CountingStream(torch.utils.data.Dataset):
    """A streamed (rendered-per-index) dataset that records which items were read."""

    def __init__(self) -> None:
        self.base, self.reads = FakeBSR(), []

    def __len__(self) -> int:
        return 10**6

    def __getitem__(self, i: int) -> dict:
        self.reads.append(i)
        return self.base[i % len(self.base)]


def test_streamed_items_are_rendered_once_for_all_their_steps_with_any_worker_count(tmp_path):
    cfg = make_config("sr", spec="tiny", steps=7, batch_size=2, crop=48, warmup_steps=2, lr=3e-3, crops_per_scene=3)
    common = dict(num_classes=3, class_names=CLASSES, sigma_max=5.0, streaming=True)
    data = CountingStream()
    in_process = train(cfg, tmp_path / "w0", dataset=data, **common)
    assert len(data.reads) == len(set(data.reads)) == 3 * 2  # steps 0-2, 3-5, 6: two items each, read once
    two_workers = train(make_config(**{**cfg.to_dict(), "num_workers": 2}), tmp_path / "w2", dataset=data, **common)
    assert two_workers.losses == in_process.losses


@pytest.mark.parametrize(
    ("stage", "flags"),
    [
        ("estimator", {"gia_mode": "none"}),
        ("estimator", {"gia_mode": "F", "single_task": True}),
        ("estimator", {"gia_mode": "FC", "no_aux": True}),
        ("sr", {"semantics_in_sr": False}),
        ("sr", {"unconditioned": True}),
        ("sr", {"space_invariant_only": True}),
    ],
)
def test_ablations_run_through_the_same_stage_code(stage, flags):
    cfg = make_config(stage, spec="tiny", **flags)
    torch.manual_seed(0)
    module, info = build_stage(cfg, 3, CLASSES, 5.0)
    if "gia_mode" in flags:
        assert info.spec.cmos.gia.mode == flags["gia_mode"] == info.spec.sr.gia.mode
    batch = _collate([FakeBSR()[i] for i in range(2)])
    loss, parts = module(batch["lr"], batch["hr"], batch["blur"], batch["labels"])
    loss.backward()
    assert torch.isfinite(loss)
    if flags.get("single_task"):
        assert parts[1] == 0 and parts[3] == 0  # no semantic terms
    if flags.get("no_aux"):
        assert parts[2] == 0 and parts[3] == 0
    if flags.get("unconditioned"):  # the prior gets no information: zero maps give the same loss
        other = batch["blur"] * 0 + 4.0
        again, _ = module(batch["lr"], batch["hr"], other, torch.zeros_like(batch["labels"]))
        assert torch.equal(again.detach(), loss.detach())


def test_estimator_loss_weights_scale_their_terms():
    batch = _collate([FakeBSR()[i] for i in range(2)])
    parts = {}
    for name, weights in {"default": {}, "reweighted": {"blur_weight": 3.0, "aux_seg_weight": 0.0}}.items():
        torch.manual_seed(0)
        module, _ = build_stage(make_config("estimator", spec="tiny", **weights), 3, CLASSES, 5.0)
        with torch.no_grad():
            _, parts[name] = module(batch["lr"], batch["hr"], batch["blur"], batch["labels"])
    blur, seg, aux_blur, aux_seg = (float(p) for p in parts["reweighted"])
    assert blur == pytest.approx(3.0 * float(parts["default"][0]), rel=1e-5)
    assert (seg, aux_blur) == pytest.approx((float(parts["default"][1]), float(parts["default"][2])), rel=1e-5)
    assert aux_seg == 0 and float(parts["default"][3]) > 0
    with pytest.raises(UsageError, match="loss weights"):
        make_config("estimator", spec="tiny", seg_weight=-1.0)
    zero = dict(blur_weight=0.0, seg_weight=0.0, aux_blur_weight=0.0, aux_seg_weight=0.0)
    with pytest.raises(UsageError, match="loss weights are all zero"):
        make_config("estimator", spec="tiny", **zero)
    with pytest.raises(UsageError, match="all zero.*--single-task"):  # only the semantic terms are left
        make_config("estimator", spec="tiny", blur_weight=0.0, aux_blur_weight=0.0, single_task=True)
    assert make_config("sr", spec="tiny", **zero).stage == "sr"  # the sr stage does not use them


def test_the_pixel_loss_is_l1_or_mean_squared_error(tmp_path):
    from cmosx.train.losses import pixel_loss

    sr, hr = torch.full((1, 3, 4, 4), 0.5), torch.zeros(1, 3, 4, 4)
    assert float(pixel_loss(sr, hr)) == pytest.approx(0.5)
    assert float(pixel_loss(sr, hr, "l2")) == pytest.approx(0.25)
    cfg, _ = _run(tmp_path, "l2", "sr", 2, pixel_loss="l2")
    rows = [json.loads(line) for line in (tmp_path / "l2" / "metrics.jsonl").read_text().splitlines()]
    assert "l2" in rows[-1] and "l1" not in rows[-1]
    with pytest.raises(UsageError, match="pixel loss"):
        make_config("sr", spec="tiny", pixel_loss="l3")
