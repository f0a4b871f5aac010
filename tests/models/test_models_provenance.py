"""Where a model's semantic classes come from: read from the card's recipe, for any model name."""

from pathlib import Path
from types import SimpleNamespace

from cmosx.models.card import Recipe
from cmosx.models.provenance import estimator_dataset, semantic_provenance
from cmosx.models.weights_io import read_card

BUNDLED_CARD = Path(__file__).resolve().parents[2] / "weights" / "cmosx-lite.json"


def test_the_bundled_models_classes_are_marked_synthetic():
    card = read_card(BUNDLED_CARD)
    about = semantic_provenance(card)
    # photo-bsr: real photos carry no labels, so the classes come from its procedural (synthetic) scenes
    assert about["dataset"] == "photo-bsr" and about["synthetic"]
    assert "synthetic scenes" in about["note"] and "wall" in about["note"]


def test_the_estimator_stage_decides_and_a_card_without_recipe_makes_no_claim():
    names = ["floor", "wall"]
    # a blind stage fine-tuned on synthetic data whose estimator was taken from a model trained on NYUv2
    recipe = Recipe.from_dict({
        "dataset": "synthetic-bsr",
        "stages": {"estimator": {"model": "real-est"}, "blind": {"config": {"dataset": "synthetic-bsr"}}},
        "models": {"real-est": {"recipe": {"stages": {"estimator": {"config": {"dataset": "nyuv2-bsr"}}}}}},
    })  # fmt: skip
    assert estimator_dataset(recipe) == "nyuv2-bsr"
    real = semantic_provenance(SimpleNamespace(recipe=recipe, class_names=names))
    assert real == {"dataset": "nyuv2-bsr", "synthetic": False, "note": None}
    renamed = SimpleNamespace(recipe=Recipe(dataset="synthetic-bsr"), class_names=names, name="my-photo-model")
    assert semantic_provenance(renamed)["synthetic"]  # the data decides, not the name
    assert semantic_provenance(SimpleNamespace(recipe=Recipe(), class_names=names))["dataset"] is None
