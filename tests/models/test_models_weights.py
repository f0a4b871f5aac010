"""Weights I/O (safetensors + config.json), model references (bundled, local, Hub cache) and the
golden outputs of a seeded tiny model."""

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from cmosx.errors import ChecksumError, ModelError
from cmosx.models import hub
from cmosx.models.card import Companion, Metrics, ModelCard, Recipe
from cmosx.models.specs import SPECS
from cmosx.models.weights_io import build_networks, load_model, save_model

GOLDEN = Path(__file__).parent / "data" / "models_tiny_golden.safetensors"
CLASSES = ["sky", "ground", "thing"]


pytestmark = pytest.mark.usefixtures("one_thread")


def _card(name="tiny-test"):
    return ModelCard(
        name=name,
        spec=SPECS["tiny"],
        num_classes=3,
        class_names=CLASSES,
        recipe=Recipe(dataset="synthetic-bsr"),
        metrics=Metrics({"psnr_db": 20.5}),
        description="seeded tiny model for tests",
    )


def _perturbed_networks(card):
    """Networks whose every tensor (BN statistics included) differs from its default initialisation."""
    cmos, sr = build_networks(card)
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for net in (cmos, sr):
            for tensor in net.state_dict().values():
                if tensor.is_floating_point():
                    tensor.add_(torch.randn(tensor.shape, generator=generator) * 0.05)
                    if tensor.dim() == 1:
                        tensor.abs_()  # keeps BatchNorm variances positive
    return cmos.eval(), sr.eval()


@pytest.fixture
def saved(tmp_path):
    card = _card()
    cmos, sr = _perturbed_networks(card)
    weights, config = tmp_path / "model.safetensors", tmp_path / "config.json"
    digest = save_model(weights, config, cmos, sr, card)
    return weights, config, digest, cmos, sr, card


def test_save_load_round_trip_is_bit_exact(saved):
    weights, config, digest, cmos, sr, card = saved
    assert digest == hashlib.sha256(weights.read_bytes()).hexdigest()
    loaded = load_model(weights, config, expected_sha256=digest)
    assert loaded.card == card and loaded.sha256 == digest
    for original, restored in ((cmos, loaded.cmos), (sr, loaded.sr)):
        a, b = original.state_dict(), restored.state_dict()
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert not loaded.cmos.training and not loaded.sr.training
    assert loaded.descriptor.num_classes == 3
    lr = torch.rand(1, 3, 12, 17)
    with torch.no_grad():
        assert torch.equal(loaded.blind_sr()(lr).sr, loaded.blind_sr()(lr).sr)
    assert not list(weights.parent.glob("*.tmp"))


def test_saving_the_same_networks_again_gives_the_same_sha256(saved, tmp_path):
    """A re-export of an unchanged run must not change the checksum in the manifest."""
    _, _, digest, cmos, sr, card = saved
    again = [save_model(tmp_path / f"again{i}.safetensors", tmp_path / "c.json", cmos, sr, card) for i in range(4)]
    assert again == [digest] * 4


def test_strict_loading_names_missing_and_unexpected_keys(saved, tmp_path):
    weights, config, *_ = saved
    tensors = load_file(str(weights))
    del tensors["sr.conv_first.weight"]
    tensors["sr.extra.weight"] = torch.zeros(1)
    broken = tmp_path / "broken.safetensors"
    save_file(tensors, str(broken))
    with pytest.raises(ModelError, match=r"missing keys: sr\.conv_first\.weight.*unexpected keys: sr\.extra\.weight"):
        load_model(broken, config)


def test_checksum_mismatch_and_bad_files(saved, tmp_path):
    weights, config, digest, *_ = saved
    with pytest.raises(ChecksumError, match="sha256 mismatch"):
        load_model(weights, config, expected_sha256="0" * 64)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file")
    with pytest.raises(ModelError, match="garbage.safetensors: not a readable safetensors file"):
        load_model(garbage, config)
    bad_config = tmp_path / "bad.json"
    bad_config.write_text("{}")
    with pytest.raises(ModelError, match="bad.json: not a cmosx model config"):
        load_model(weights, bad_config)
    with pytest.raises(ModelError, match="weights file not found"):
        load_model(tmp_path / "nope.safetensors", config)


def test_local_references(saved, tmp_path):
    weights, config, digest, *_ = saved
    assert hub.resolve_model(str(tmp_path)).sha256 == digest  # folder with model.safetensors + config.json
    assert hub.resolve_model(str(weights)).source == str(weights)
    with pytest.raises(ModelError, match="unknown model 'no-such-model'"):
        hub.resolve_model("no-such-model")


def test_no_bundled_model_gives_a_clear_error(tmp_path, monkeypatch):
    (tmp_path / "manifest.json").write_text('{"models": {}}')
    monkeypatch.setattr(hub, "bundled_dir", lambda: tmp_path)
    assert hub.bundled_models() == []
    with pytest.raises(ModelError, match="no bundled model is installed"):
        hub.resolve_model(None)


def test_bundled_models_from_the_manifest(saved, tmp_path, monkeypatch):
    weights, config, digest, *_ = saved
    folder = tmp_path / "bundle"
    folder.mkdir()
    (folder / "manifest.json").write_text('{"models": {}}')
    (folder / "m.safetensors").write_bytes(weights.read_bytes())
    (folder / "m.json").write_text(config.read_text())
    monkeypatch.setattr(hub, "bundled_dir", lambda: folder)
    entry = hub.register_bundled("m", "m.safetensors", "m.json")
    assert entry.sha256 == digest and entry.is_default and entry.size == weights.stat().st_size
    assert hub.resolve_model(None).source == "m"
    assert hub.resolve_model("m").card.class_names == CLASSES
    (folder / "m.safetensors").write_bytes(weights.read_bytes()[:-1] + b"\0")
    with pytest.raises(ChecksumError, match="m.safetensors: sha256 mismatch"):
        hub.resolve_model("m")


def _hub_cache(root: Path, weights: Path, config: Path, commit: str) -> Path:
    """A real huggingface_hub cache layout: blobs named by hash, snapshot symlinks, refs/main."""
    repo = root / "models--someone--cmosx-tiny"
    (repo / "blobs").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    weights_blob = hashlib.sha256(weights.read_bytes()).hexdigest()  # LFS files: blob name = sha256
    config_bytes = config.read_bytes()
    config_blob = hashlib.sha1(b"blob %d\0" % len(config_bytes) + config_bytes).hexdigest()  # git blob id
    (repo / "blobs" / weights_blob).write_bytes(weights.read_bytes())
    (repo / "blobs" / config_blob).write_bytes(config_bytes)
    os.symlink(f"../../blobs/{weights_blob}", snapshot / "model.safetensors")
    os.symlink(f"../../blobs/{config_blob}", snapshot / "config.json")
    return repo / "blobs" / weights_blob


def test_hub_reference_from_an_offline_cache(saved, tmp_path, monkeypatch):
    weights, config, digest, *_ = saved
    commit = "0123456789abcdef0123456789abcdef01234567"
    cache = tmp_path / "hub"
    blob = _hub_cache(cache, weights, config, commit)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    assert hub.resolve_model("hf://someone/cmosx-tiny").sha256 == digest  # refs/main
    pinned = hub.resolve_model(f"hf://someone/cmosx-tiny@{commit}/model.safetensors")
    assert pinned.sha256 == digest and pinned.source.endswith("model.safetensors")
    with pytest.raises(ModelError, match="other.safetensors not found in the local Hub cache"):
        hub.resolve_model("hf://someone/cmosx-tiny/other.safetensors")
    with pytest.raises(ModelError, match="not found in the local Hub cache"):
        hub.resolve_model("hf://someone/unknown-repo")
    with pytest.raises(ModelError, match="bad Hub reference"):
        hub.resolve_model("hf://not-a-repo")
    blob.write_bytes(blob.read_bytes()[:-1] + b"\0")
    with pytest.raises(ChecksumError, match="sha256 mismatch"):
        hub.resolve_model("hf://someone/cmosx-tiny")


def _golden_model():
    torch.manual_seed(1234)
    card = _card("golden")
    return _perturbed_networks(card)


def test_golden_outputs_of_the_seeded_tiny_model():
    """Regenerate with CMOSX_REGEN_GOLDEN=1 after an intentional architecture change."""
    cmos, sr = _golden_model()
    if os.environ.get("CMOSX_REGEN_GOLDEN") == "1":
        lr = torch.rand(1, 3, 23, 31, generator=torch.Generator().manual_seed(5))
        with torch.no_grad():
            maps = cmos(lr)
            out = sr(lr, maps.blur_lr.clamp(0, 5), torch.softmax(maps.logits_lr, 1))
        tensors = {f"cmos.{k}": v.contiguous() for k, v in cmos.state_dict().items()}
        tensors |= {f"sr.{k}": v.contiguous() for k, v in sr.state_dict().items()}
        outputs = {"input.lr": lr, "output.blur_lr": maps.blur_lr, "output.logits_lr": maps.logits_lr, "output.sr": out}
        tensors |= {k: v.contiguous() for k, v in outputs.items()}
        GOLDEN.parent.mkdir(exist_ok=True)
        save_file(tensors, str(GOLDEN))
    stored = load_file(str(GOLDEN))
    cmos.load_state_dict({k[5:]: v for k, v in stored.items() if k.startswith("cmos.")}, strict=True)
    sr.load_state_dict({k[3:]: v for k, v in stored.items() if k.startswith("sr.")}, strict=True)
    lr = stored["input.lr"]
    with torch.no_grad():
        maps = cmos(lr)
        out = sr(lr, maps.blur_lr.clamp(0, 5), torch.softmax(maps.logits_lr, 1))
    torch.testing.assert_close(maps.blur_lr, stored["output.blur_lr"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(maps.logits_lr, stored["output.logits_lr"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out, stored["output.sr"], rtol=1e-5, atol=1e-5)
    assert json.loads(json.dumps(_card().to_dict()))["spec"]["name"] == "tiny"


def test_companion_sr_networks_load_beside_the_model_and_from_the_hub(saved, tmp_path, monkeypatch):
    from cmosx.models.weights_io import save_sr_network

    weights, config, digest, cmos, sr, card = saved
    companion = _perturbed_networks(card)[1]
    sha = save_sr_network(tmp_path / "upper.safetensors", companion, storage_dtype=torch.float16)
    card.companions = {"upper": Companion(weights="upper.safetensors", sha256=sha)}
    config.write_text(card.to_json())
    loaded = hub.resolve_model(str(tmp_path))
    assert hub.load_companion(loaded, "baseline") is None
    upper = hub.load_companion(loaded, "upper")
    for key, value in companion.state_dict().items():  # stored in float16, loaded back as float32
        assert torch.equal(upper.state_dict()[key], value.half().float()), key
    # from an offline Hub cache: the companion is fetched from the same repo folder
    commit = "89abcdef0123456789abcdef0123456789abcdef"
    cache = tmp_path / "hub"
    _hub_cache(cache, weights, config, commit)
    snapshot = cache / "models--someone--cmosx-tiny" / "snapshots" / commit
    blob = cache / "models--someone--cmosx-tiny" / "blobs" / sha
    blob.write_bytes((tmp_path / "upper.safetensors").read_bytes())
    os.symlink(f"../../blobs/{sha}", snapshot / "upper.safetensors")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    from_hub = hub.load_companion(hub.resolve_model("hf://someone/cmosx-tiny"), "upper")
    assert torch.equal(from_hub.state_dict()["conv_first.weight"], upper.state_dict()["conv_first.weight"])
    # a changed file, a missing one and a path outside the model's folder are refused
    (tmp_path / "upper.safetensors").write_bytes((tmp_path / "upper.safetensors").read_bytes()[:-1] + b"\0")
    with pytest.raises(ChecksumError, match="upper.safetensors: sha256 mismatch"):
        hub.load_companion(loaded, "upper")
    (tmp_path / "upper.safetensors").unlink()
    with pytest.raises(ModelError, match="upper.safetensors: weights file not found"):
        hub.load_companion(loaded, "upper")
    loaded.card.companions = {"upper": Companion(weights="../elsewhere.safetensors", sha256=sha)}
    with pytest.raises(ModelError, match="bad companion entry"):
        hub.load_companion(loaded, "upper")


def test_weights_list_shows_the_models_in_the_hub_cache(saved, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from cmosx.cli.main import app

    weights, config, digest, *_ = saved
    commit = "fedcba9876543210fedcba9876543210fedcba98"
    cache = tmp_path / "hub"
    _hub_cache(cache, weights, config, commit)
    other = cache / "models--someone--not-cmosx" / "snapshots" / commit  # another library's model
    other.mkdir(parents=True)
    (other / "config.json").write_text('{"model_type": "bert"}')
    (other / "model.safetensors").write_bytes(weights.read_bytes())
    (cache / "models--someone--not-cmosx" / "refs").mkdir()
    (cache / "models--someone--not-cmosx" / "refs" / "main").write_text(commit)
    (cache / "models--someone--not-cmosx" / "blobs").mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    found = hub.cached_hub_models()
    assert [m.reference for m in found] == [f"hf://someone/cmosx-tiny@{commit}/model.safetensors"]
    assert found[0].refs == ("main",) and found[0].size == weights.stat().st_size
    assert hub.resolve_model(found[0].reference).sha256 == digest  # the listed reference loads
    listing = CliRunner().invoke(app, ["weights", "list"])
    assert listing.exit_code == 0, listing.output
    assert f"hf://someone/cmosx-tiny@{commit}/model.safetensors (main)" in listing.output
    assert "classes:  3 (sky, ground, thing)" in listing.output and "psnr_db=20.5" in listing.output
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "no-cache-here"))
    assert hub.cached_hub_models() == []
