"""Checkpoints: exact round trip of optimizer/scheduler/RNG state, atomic writes, no pickle."""

import random

import numpy as np
import pytest
import torch
from torch import nn

from cmosx.cli._common import parse_size
from cmosx.errors import UsageError
from cmosx.train.checkpoint import (
    CheckpointError,
    capture_rng_state,
    checkpoint_path,
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    restore_rng_state,
    save_checkpoint,
)
from cmosx.train.config import make_config, parse_quality_range
from cmosx.train.samples import StepBatches, TrainSamples, split_steps
from cmosx.train.schedule import WarmupCosine, warmup_cosine_factor


def _train_a_bit(model, opt, sched, steps):
    for _ in range(steps):
        loss = model(torch.randn(4, 3)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()


def test_round_trip_restores_optimizer_scheduler_and_rng(tmp_path):
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, betas=(0.9, 0.99))
    sched = WarmupCosine(opt, total_steps=20, warmup_steps=3)
    _train_a_bit(model, opt, sched, 4)
    random.random()
    np.random.rand()
    state = {
        "step": 4,
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "rng": capture_rng_state(),
        "note": ("a", 1, None),
    }
    path = checkpoint_path(tmp_path, 4)
    save_checkpoint(path, state)
    assert path.read_bytes()[:8]  # a file exists; no temp files left behind
    assert [p.name for p in path.parent.iterdir()] == [path.name]

    expected_next = (torch.rand(3), random.random(), np.random.rand())
    _train_a_bit(model, opt, sched, 3)
    reference = [p.detach().clone() for p in model.parameters()]

    loaded = load_checkpoint(path)
    assert loaded["step"] == 4 and loaded["note"] == ("a", 1, None)
    model2 = nn.Linear(3, 2)
    model2.load_state_dict(loaded["model"])
    opt2 = torch.optim.Adam(model2.parameters(), lr=1e-2, betas=(0.9, 0.99))
    sched2 = WarmupCosine(opt2, total_steps=20, warmup_steps=3)
    opt2.load_state_dict(loaded["optimizer"])  # after building the scheduler, which sets the lr
    sched2.load_state_dict(loaded["scheduler"])
    restore_rng_state(loaded["rng"])
    got_next = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(got_next[0], expected_next[0]) and got_next[1:] == expected_next[1:]
    restore_rng_state(loaded["rng"])
    torch.rand(3), random.random(), np.random.rand()
    _train_a_bit(model2, opt2, sched2, 3)
    for a, b in zip(reference, model2.parameters(), strict=True):
        assert torch.equal(a, b)


def test_latest_prune_and_bad_files(tmp_path):
    for step in (5, 10, 15):
        save_checkpoint(checkpoint_path(tmp_path, step), {"step": step})
    assert latest_checkpoint(tmp_path).name == "step-00000015.safetensors"
    prune_checkpoints(tmp_path, keep=2)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "step-00000010.safetensors",
        "step-00000015.safetensors",
    ]
    bad = tmp_path / "checkpoints" / "step-00000020.safetensors"
    bad.write_bytes(b"\x00\x01garbage")
    with pytest.raises(CheckpointError, match="step-00000020"):
        load_checkpoint(bad)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.safetensors")


def test_schedule_warms_up_then_decays():
    f = [warmup_cosine_factor(s, total_steps=10, warmup_steps=2) for s in range(10)]
    assert f[0] == pytest.approx(0.5) and f[1] == pytest.approx(1.0)
    assert f[2] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[2:], f[3:], strict=False))
    assert warmup_cosine_factor(10, 10, 2, min_ratio=0.1) == pytest.approx(0.1)


def test_config_rejects_unknown_and_invalid_options():
    cfg = make_config("sr", preset="paper")
    assert cfg.lr == 2e-4 and cfg.batch_size == 16 and cfg.crop == (192, 192) and cfg.betas == (0.9, 0.99)
    assert make_config("sr", crop=64).crop == (64, 64)
    assert make_config(**cfg.to_dict()) == cfg
    with pytest.raises(UsageError, match="unknown training option"):
        make_config("sr", learning_rate=1.0)
    with pytest.raises(UsageError, match="unknown preset"):
        make_config("sr", preset="gpu")
    with pytest.raises(UsageError, match="estimator stage"):
        make_config("sr", no_aux=True)
    with pytest.raises(UsageError, match="crop"):
        parse_size("12xx", "--crop", square_ok=True)
    assert parse_size("480x640", "--crop", square_ok=True) == (480, 640)
    assert parse_size("96", "--crop", square_ok=True) == (96, 96)
    assert parse_quality_range("90") == (90, None) and parse_quality_range("80-95") == (80, 95)
    for bad in ("80-", "a", "70-80-90"):
        with pytest.raises(UsageError, match="lr-jpeg"):
            parse_quality_range(bad)
    with pytest.raises(UsageError, match="JPEG quality range"):
        make_config("sr", lr_jpeg=95, lr_jpeg_max=80)
    with pytest.raises(UsageError, match="probability"):
        make_config("sr", lr_jpeg=80, lr_jpeg_probability=1.5)


def test_step_batches_shard_without_overlap():
    rank0 = list(StepBatches(3, 5, batch_size=2, rank=0, world_size=2))
    rank1 = list(StepBatches(3, 5, batch_size=2, rank=1, world_size=2))
    assert rank0 == [[12, 13], [16, 17]] and rank1 == [[14, 15], [18, 19]]


def test_step_batches_chunk_the_steps_that_share_rendered_items():
    plain = [samples for samples in StepBatches(5, 13, batch_size=2)]
    chunked = StepBatches(5, 13, batch_size=2, steps_per_chunk=4)
    assert chunked.chunks() == [(5, 8), (8, 12), (12, 13)] and len(chunked) == 3
    steps = [step for chunk in chunked for step in split_steps(chunk, 2)]
    assert steps == plain  # the chunking never changes which samples a step gets
    samples = TrainSamples(list(range(100)), seed=0, crop=(32, 32), shuffle=False, crops_per_item=4, group=2)
    items = [{samples.item_number(k) for k in chunk} for chunk in chunked]
    assert all(a.isdisjoint(b) for i, a in enumerate(items) for b in items[i + 1 :])  # one worker renders each
    with pytest.raises(ValueError, match="whole steps"):
        split_steps([1, 2, 3], 2)


def test_rendered_items_are_reused_for_several_steps_of_crops():
    samples = TrainSamples(list(range(100)), seed=0, crop=(32, 32), shuffle=False, crops_per_item=3, group=2)
    assert [samples.item_number(k) for k in range(12)] == [0, 1, 0, 1, 0, 1, 2, 3, 2, 3, 2, 3]
