"""Where a model's semantic classes come from, read from its card's training recipe.

A model trained on synthetic scenes (``synthetic-bsr``: rendered rooms of background, ground, wall,
picture, plant, box and ball) labels a real photo with those scene classes: the patches follow texture
and layout, not what the objects are (a cat's fur comes out as "wall", "box" and "ball"). Commands
that show semantic maps say so, from the recipe, for any model -- not from a model name.
"""

from __future__ import annotations

from typing import Any

SYNTHETIC_PREFIX = "synthetic"  # dataset names of rendered scenes (synthetic-bsr)
# photo-bsr scenes of real photos carry no class labels (255): its classes come from the procedural scenes
# mixed into its stream, i.e. from synthetic scenes too
SYNTHETIC_CLASS_DATASETS = ("photo-bsr",)


def estimator_dataset(recipe: dict[str, Any], depth: int = 0) -> str | None:
    """The dataset the estimator (CMOS: blur + semantics) was trained on, or None when the card does not say.

    Follows ``recipe["stages"]["estimator"]``: its own ``config.dataset``, else the recipe of the model it
    was taken from (``"model"`` in ``recipe["models"]``), else the recipe's top-level ``dataset``.
    """
    if not isinstance(recipe, dict) or depth > 8:
        return None
    stage = (recipe.get("stages") or {}).get("estimator") or {}
    dataset = (stage.get("config") or {}).get("dataset") if isinstance(stage, dict) else None
    if dataset is None and isinstance(stage, dict) and stage.get("model"):
        source = (recipe.get("models") or {}).get(stage["model"]) or {}
        if isinstance(source, dict) and source.get("recipe") is not recipe:
            dataset = estimator_dataset(source.get("recipe") or {}, depth + 1)
    if dataset is None:
        dataset = recipe.get("dataset")
    return str(dataset) if dataset else None


def semantic_provenance(card: Any) -> dict[str, Any]:
    """``{"dataset", "synthetic", "note"}`` for a model card: where its semantic classes were learnt.

    ``note`` is one line for users when the classes come from synthetic scenes, else None.
    """
    dataset = estimator_dataset(getattr(card, "recipe", None) or {})
    synthetic = bool(
        dataset and (dataset.lower().startswith(SYNTHETIC_PREFIX) or dataset.lower() in SYNTHETIC_CLASS_DATASETS)
    )
    note = None
    if synthetic:
        classes = ", ".join(getattr(card, "class_names", []))
        note = (
            f"semantic classes ({classes}) were learnt from synthetic scenes ({dataset}): on a real photo they "
            "mark texture/layout patches, not what the objects are"
        )
    return {"dataset": dataset, "synthetic": synthetic, "note": note}
