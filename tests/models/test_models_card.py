"""The model card as typed fields, and ``conditions()``: the one rule from CMOS output to SR input."""

import json
from pathlib import Path

import pytest
import torch

from cmosx.errors import ModelError
from cmosx.models.card import Companion, Conditioning, Metrics, ModelCard, Recipe
from cmosx.models.cmos import conditions
from cmosx.models.weights_io import read_card

BUNDLED_CARD = Path(__file__).resolve().parents[2] / "weights" / "cmosx-lite.json"


def test_conditions_clamp_the_blur_and_turn_logits_into_probabilities():
    blur = torch.tensor([-1.0, 0.5, 4.0, 9.0]).reshape(1, 1, 2, 2)
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0], [3.0, 2.0, 1.0, 0.0]]).reshape(1, 2, 2, 2)
    clamped, probs = conditions(blur, logits, sigma_max=5.0)
    assert clamped.flatten().tolist() == [0.0, 0.5, 4.0, 5.0]
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(1, 2, 2))
    torch.testing.assert_close(probs, torch.softmax(logits, dim=1))
    assert probs[0, 0, 0, 0] < 0.5 < probs[0, 0, 1, 1]  # larger logit, larger probability
    # blur_scale multiplies before the clamp; 0 says "in focus"
    scaled, _ = conditions(blur, logits, sigma_max=5.0, blur_scale=0.5)
    assert scaled.flatten().tolist() == [0.0, 0.25, 2.0, 4.5]
    assert conditions(blur, logits, 5.0, blur_scale=0.0)[0].abs().sum() == 0
    # without a batch dimension (the engine's C x H x W strips) the classes are still dimension -3
    unbatched = conditions(blur[0], logits[0], 5.0)
    torch.testing.assert_close(unbatched[1], probs[0])
    assert blur.flatten().tolist() == [-1.0, 0.5, 4.0, 9.0]  # inputs untouched


def test_the_bundled_card_round_trips_to_the_same_json_and_reads_as_typed_fields():
    text = BUNDLED_CARD.read_text(encoding="utf-8")
    card = read_card(BUNDLED_CARD)
    assert card.to_json() == text
    assert ModelCard.from_json(card.to_json()) == card
    assert card.recipe.conditioning == Conditioning(blur=True, semantics=True)
    assert card.recipe.stage("estimator").dataset == "photo-bsr"
    assert card.recipe.stage("blind").run == "runs/blind12"
    assert card.recipe.stage("sr").model == "cmosx-lite-synth"
    assert card.recipe.stage("estimator").init.model == "cmosx-lite-synth"
    upper, baseline = card.companions["upper"], card.companions["baseline"]
    assert isinstance(upper, Companion) and upper.weights == "cmosx-lite.upper.safetensors" and upper.size > 0
    assert baseline.conditioning == Conditioning(blur=False, semantics=False)
    assert upper.recipe.config["stage"] == "sr"
    means = card.metrics.means()
    assert set(means) == {"bicubic", "aligned cubic", "baseline", "model", "upper bound"}
    assert means["model"]["psnr_y"] == card.metrics.rows["model"]["mean"]["psnr_y"] > means["bicubic"]["psnr_y"]
    assert card.metrics.dataset == "photo-bsr" and len(card.metrics.groups) == 11


def _bundled_data() -> dict:
    return json.loads(BUNDLED_CARD.read_text(encoding="utf-8"))


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (("recipe", "conditioning", "blur"), "yes", "recipe.conditioning.blur"),
        (("recipe", "stages", "blind", "run"), 12, "recipe.stages.blind.run"),
        (("recipe", "stages", "estimator", "init"), "cmosx-lite-synth", "recipe.stages.estimator.init"),
        (("recipe", "dataset"), ["photo-bsr"], "recipe.dataset"),
        (("companions", "upper", "sha256"), None, "companions.upper.sha256"),
        (("companions", "upper", "size"), "2 MB", "companions.upper.size"),
        (("metrics", "rows", "model", "mean", "psnr_y"), "31.4", "metrics.rows.model.mean.psnr_y"),
        (("metrics", "rows", "model"), [], "metrics.rows.model"),
        (("sigma_max",), "5", "sigma_max"),
    ],
)
def test_a_malformed_field_is_a_model_error_naming_the_file_and_the_field(path, value, field):
    data = _bundled_data()
    where = data
    for key in path[:-1]:
        where = where[key]
    where[path[-1]] = value
    with pytest.raises(ModelError, match=rf"^card\.json: model card field {field}: expected"):
        ModelCard.from_dict(data, "card.json")


def test_an_unknown_recipe_key_is_named():
    data = _bundled_data()
    data["recipe"]["stages"]["blind"]["epochs"] = 3
    with pytest.raises(
        ModelError, match=r"card\.json: model card field recipe\.stages\.blind: unknown key\(s\) epochs"
    ):
        ModelCard.from_dict(data, "card.json")


def test_a_card_without_recipe_metrics_or_companions_reads_as_empty_and_writes_them_empty():
    data = _bundled_data()
    for key in ("recipe", "metrics", "companions"):
        del data[key]
    card = ModelCard.from_dict(data)
    assert card.recipe == Recipe() and card.recipe.reads == Conditioning() and card.recipe.stage("sr") is None
    assert card.metrics == Metrics() and card.metrics.means() == {} and card.companions == {}
    assert {k: card.to_dict()[k] for k in ("recipe", "metrics", "companions")} == {
        "recipe": {},
        "metrics": {},
        "companions": {},
    }
