"""On-disk BSR format: generation, resume, readers, the space-invariant groups, the CLI command."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cmosx.cli.main import app
from cmosx.errors import DatasetError, UsageError
from cmosx.train.data import open_dataset
from cmosx.train.data.generate import generate_dataset
from cmosx.train.data.splits import invariant_count, space_invariant_mask
from cmosx.train.data.synthetic import SyntheticSource, synthetic_sample

pytestmark = pytest.mark.usefixtures("one_thread")


SIZE = (32, 48)


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("bsr") / "synthetic"
    source = SyntheticSource(seed=4, counts={"train": 5, "test": 5}, size=SIZE)
    calls = []
    info = generate_dataset(source, out, seed=4, kernel_size=21, progress=lambda d, t: calls.append((d, t)))
    return out, info, calls


def test_table1_counts_and_disjoint_groups():
    assert [invariant_count(n) for n in (795, 654, 2975, 500, 1525)] == [159, 130, 595, 100, 305]
    masks = np.stack([space_invariant_mask(654, 0, "test", g) for g in range(1, 6)])
    assert masks.sum(axis=1).tolist() == [130] * 5
    assert masks.sum(axis=0).max() == 1  # no image is space-invariant in two groups
    assert space_invariant_mask(795, 0, "train").sum() == 159
    assert np.array_equal(space_invariant_mask(795, 0, "train"), space_invariant_mask(795, 0, "train"))
    assert not np.array_equal(space_invariant_mask(795, 0, "train"), space_invariant_mask(795, 1, "train"))
    with pytest.raises(UsageError):
        space_invariant_mask(10, 0, "test")
    with pytest.raises(UsageError):
        space_invariant_mask(10, 0, "train", group=2)


def test_generation_writes_the_format(tiny_dataset):
    out, info, calls = tiny_dataset
    assert calls[-1] == (30, 30)  # 5 train + 5 test x 5 groups
    stored = json.loads((out / "dataset.json").read_text())
    assert stored["seed"] == 4 and stored["kernel_size"] == 21 and stored["sigma_max"] == 5.0
    assert stored["degradation"] == {
        "scale": 4,
        "downsampler": "direct",
        "noise_sigma": 0.0,
        "jpeg_quality": None,
        "jpeg_quality_max": None,
        "jpeg_probability": 1.0,
    }
    assert stored["generator_version"] and stored["classes"][0] == "background"
    train = open_dataset("synthetic-bsr", out, "train")
    assert len(train) == 5 and train.num_classes == 7
    item = train[2]
    # the stored sample equals the in-memory one: HR/LR exactly, blur to 0.01
    fresh, _ = synthetic_sample(4, "train", 2, size=SIZE, kernel_size=21, space_invariant=bool(item["space_invariant"]))
    assert item["name"] == fresh["name"]
    assert torch.allclose(item["hr"], fresh["hr"], atol=1e-6)
    assert torch.allclose(item["lr"], fresh["lr"], atol=1e-6)
    assert torch.allclose(item["blur"], fresh["blur"], atol=0.0051)
    assert torch.equal(item["labels"], fresh["labels"])
    meta = train.meta(2)
    assert "blur" in meta and meta["name"] == item["name"]


def test_each_test_image_is_invariant_in_exactly_one_group(tiny_dataset):
    out, _, _ = tiny_dataset
    flags = []
    for g in range(1, 6):
        ds = open_dataset("synthetic-bsr", out, "test", g)
        flags.append([bool(ds[i]["space_invariant"]) for i in range(len(ds))])
        for i in range(len(ds)):
            blur = ds[i]["blur"]
            assert (float(blur.min()) == float(blur.max())) == flags[-1][i]
    assert np.array(flags).sum(axis=0).tolist() == [1] * 5
    # space-variant renders are shared between groups (same seeds): identical files
    g1, g2 = open_dataset("synthetic-bsr", out, "test", 1), open_dataset("synthetic-bsr", out, "test", 2)
    both = [i for i in range(5) if not flags[0][i] and not flags[1][i]]
    assert torch.equal(g1[both[0]]["lr"], g2[both[0]]["lr"])


def test_test_scenes_are_not_training_scenes(tiny_dataset):
    out, _, _ = tiny_dataset
    train = open_dataset("synthetic-bsr", out, "train")
    test = open_dataset("synthetic-bsr", out, "test", 1)
    train_hr = [train[i]["hr"] for i in range(len(train))]
    for i in range(len(test)):
        assert not any(torch.equal(test[i]["hr"], hr) for hr in train_hr)


def test_resume_and_settings_mismatch(tmp_path):
    out = tmp_path / "ds"
    source = SyntheticSource(seed=1, counts={"train": 3}, size=SIZE)
    generate_dataset(source, out, seed=1)
    target = out / "train" / "meta" / "synthetic-train-0000001.json"
    before = (out / "train" / "lr" / "synthetic-train-0000001.png").read_bytes()
    target.unlink()
    generate_dataset(source, out, seed=1)
    assert target.is_file()
    assert (out / "train" / "lr" / "synthetic-train-0000001.png").read_bytes() == before
    with pytest.raises(DatasetError, match="other settings"):
        generate_dataset(source, out, seed=2)


def test_reader_errors(tmp_path, tiny_dataset):
    out, _, _ = tiny_dataset
    with pytest.raises(DatasetError, match="dataset.json"):
        open_dataset("synthetic-bsr", tmp_path, "train")
    with pytest.raises(DatasetError, match="holds"):
        open_dataset("nyuv2-bsr", out, "train")
    with pytest.raises(UsageError):
        open_dataset("synthetic-bsr", out, "test")
    with pytest.raises(UsageError):
        open_dataset("imagenet", out, "train")
    with pytest.raises(DatasetError, match="split folder"):
        open_dataset("synthetic-bsr", out, "val")


def test_cli_generate_synthetic(tmp_path):
    out = tmp_path / "cli"
    args = ["dataset", "generate", "--out", str(out), "--count", "2", "--test-count", "0", "--size", "32x32"]
    result = CliRunner().invoke(app, [*args, "--kernel-size", "61", "--seed", "9"])
    assert result.exit_code == 0, result.output
    assert "train 2" in result.output
    ds = open_dataset("synthetic-bsr", out, "train")
    assert len(ds) == 2 and ds.info["kernel_size"] == 61
    bad = CliRunner().invoke(app, ["dataset", "generate", "--out", str(tmp_path / "x"), "--size", "30x32"])
    assert bad.exit_code == 2 and "multiples of 4" in bad.output


def test_cli_real_dataset_without_root_explains(tmp_path):
    result = CliRunner().invoke(app, ["dataset", "generate", "--dataset", "nyuv2-bsr", "--out", str(tmp_path / "n")])
    assert result.exit_code == 1
    assert "nyu_depth_v2_labeled.mat" in result.output and "splits.mat" in result.output
    result = CliRunner().invoke(
        app, ["dataset", "generate", "--dataset", "cityscapes-bsr", "--out", str(tmp_path / "c")]
    )
    assert result.exit_code == 1 and "leftImg8bit" in result.output and "disparity" in result.output
