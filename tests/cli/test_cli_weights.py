"""``cmosx weights list`` and ``cmosx weights verify`` against a bundled folder built in tmp."""

import pytest
from typer.testing import CliRunner

from cmosx.cli.main import app
from cmosx.models import hub
from cmosx.models.card import Metrics, ModelCard, Recipe
from cmosx.models.specs import SPECS
from cmosx.models.weights_io import build_networks, save_model

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def bundle(tmp_path, monkeypatch):
    (tmp_path / "manifest.json").write_text('{"models": {}}')
    monkeypatch.setattr(hub, "bundled_dir", lambda: tmp_path)
    return tmp_path


def test_list_and_verify_with_no_bundled_model(bundle):
    for command in (["weights", "list"], ["weights", "verify"]):
        result = runner.invoke(app, command)
        assert result.exit_code == 0
        assert "No bundled model is installed yet" in result.output


def test_list_and_verify_a_bundled_model(bundle):
    card = ModelCard(
        name="m",
        spec=SPECS["tiny"],
        num_classes=2,
        class_names=["near", "far"],
        recipe=Recipe(dataset="synthetic-bsr 64 scenes"),
        metrics=Metrics({"psnr_db": 21.25, "miou": 0.5}),
    )
    cmos, sr = build_networks(card)
    save_model(bundle / "m.safetensors", bundle / "m.json", cmos, sr, card)
    hub.register_bundled("m", "m.safetensors", "m.json")
    listed = runner.invoke(app, ["weights", "list"])
    assert listed.exit_code == 0
    assert "m (default)" in listed.output and "synthetic-bsr 64 scenes" in listed.output
    assert "2 (near, far)" in listed.output and "psnr_db=21.25" in listed.output
    ok = runner.invoke(app, ["weights", "verify"])
    assert ok.exit_code == 0 and ok.output.startswith("OK  m  sha256 ")
    data = (bundle / "m.safetensors").read_bytes()
    (bundle / "m.safetensors").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    bad = runner.invoke(app, ["weights", "verify"])
    assert bad.exit_code == 1 and "sha256 mismatch" in bad.stderr
    unknown = runner.invoke(app, ["weights", "verify", "zzz"])
    assert unknown.exit_code == 2
