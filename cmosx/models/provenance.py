"""Where a model's semantic classes come from, read from its card's training recipe.

A model trained on synthetic scenes (``synthetic-bsr``: rendered rooms of background, ground, wall,
picture, plant, box and ball) labels a real photo with those scene classes: the patches follow texture
and layout, not what the objects are (a cat's fur comes out as "wall", "box" and "ball"). Commands
that show semantic maps say so, from the recipe, for any model -- not from a model name.
"""

from __future__ import annotations

from typing import Any

from cmosx.models.card import ModelCard, Recipe

SYNTHETIC_PREFIX = "synthetic"  # dataset names of rendered scenes (synthetic-bsr)
# photo-bsr scenes of real photos carry no class labels (255): its classes come from the procedural scenes
# mixed into its stream, i.e. from synthetic scenes too
SYNTHETIC_CLASS_DATASETS = ("photo-bsr",)


def estimator_dataset(recipe: Recipe, depth: int = 0) -> str | None:
    """The dataset the estimator (CMOS: blur + semantics) was trained on, or None when the card does not say.

    Follows the recipe's ``estimator`` stage: its own config's dataset, else the recipe of the model it was
    taken from (its entry in the recipe's ``models``), else the recipe's top-level ``dataset``.
    """
    if depth > 8:
        return None
    stage = recipe.stage("estimator")
    dataset = stage.dataset if stage is not None else None
    if dataset is None and stage is not None and stage.model:
        source = recipe.models.get(stage.model)
        if source is not None and source.recipe is not recipe:
            dataset = estimator_dataset(source.recipe, depth + 1)
    return dataset or recipe.dataset


def semantic_provenance(card: ModelCard) -> dict[str, Any]:
    """``{"dataset", "synthetic", "note"}`` for a model card: where its semantic classes were learnt.

    ``note`` is one line for users when the classes come from synthetic scenes, else None.
    """
    dataset = estimator_dataset(card.recipe)
    synthetic = bool(
        dataset and (dataset.lower().startswith(SYNTHETIC_PREFIX) or dataset.lower() in SYNTHETIC_CLASS_DATASETS)
    )
    note = None
    if synthetic:
        classes = ", ".join(card.class_names)
        note = (
            f"semantic classes ({classes}) were learnt from synthetic scenes ({dataset}): on a real photo they "
            "mark texture/layout patches, not what the objects are"
        )
    return {"dataset": dataset, "synthetic": synthetic, "note": note}
