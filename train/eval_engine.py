"""Networks as the product runs them: an evaluation row's networks wrapped for the engine's ``Upscaler``.

The engine takes a :class:`~cmosx.models.model.Model` (an estimator called ``cmos`` and an SR network)
and applies the same framing, tiling and precision policy as ``cmosx upscale``. A row of ``cmosx eval``
is such a model, built here from the row's networks (a model or run, :func:`cmosx.train.runs.load_networks`):

- :class:`ConditionedSR`: an SR network fed zeros for the maps its conditioning switches off (as in
  training, :func:`cmosx.train.stages.condition`; e.g. the blur-unaware baseline takes no maps at all);
- :class:`NoEstimator`: stands in for CMOS where a row uses no estimated map (blur 0, equal logits),
  so the engine spends nothing on estimating maps the row never reads.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from cmosx.errors import ModelError
from cmosx.models.cmos import CMOSOutput
from cmosx.models.model import Model
from cmosx.train.stages import condition


class ConditionedSR(nn.Module):
    """``forward(lr, blur_lr, semantic_lr)`` of ``sr`` with the switched-off maps replaced by zeros."""

    def __init__(self, sr: nn.Module, use_blur: bool, use_semantics: bool) -> None:
        super().__init__()
        self.sr, self.use_blur, self.use_semantics = sr, use_blur, use_semantics
        self.spec = sr.spec

    def forward(self, lr: Tensor, blur_lr: Tensor, semantic_lr: Tensor, **pooled) -> Tensor:
        """``pooled=``: the whole image's means for a tile of a globally pooling SR network."""
        blur_lr, semantic_lr = condition(blur_lr, semantic_lr, self.use_blur, self.use_semantics)
        return self.sr(lr, blur_lr, semantic_lr, **pooled)

    def steps(self, lr: Tensor, blur_lr: Tensor, semantic_lr: Tensor):
        """The SR network's step generator on the conditioned maps (:mod:`cmosx.models.gia`)."""
        blur_lr, semantic_lr = condition(blur_lr, semantic_lr, self.use_blur, self.use_semantics)
        return self.sr.steps(lr, blur_lr, semantic_lr)


class NoEstimator(nn.Module):
    """``forward(lr: B x 3 x h x w)`` -> :class:`CMOSOutput` of blur 0 and all-zero logits (uniform classes)."""

    def __init__(self, num_classes: int, scale: int) -> None:
        super().__init__()
        self.num_classes, self.scale = num_classes, scale
        self.spec = ("no estimator", num_classes)  # keeps the engine's per-model caches apart from CMOS
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)  # follows .to(device)

    def forward(self, lr: Tensor) -> CMOSOutput:
        b, _, h, w = lr.shape
        blur = self._anchor.new_zeros(b, 1, h, w)
        logits = self._anchor.new_zeros(b, self.num_classes, h, w)
        return CMOSOutput(blur_lr=blur, logits_lr=logits, aux_blur_lr=blur, aux_logits_lr=logits, scale=self.scale)


def engine_model(nets: Model, estimator: nn.Module | None, name: str) -> Model:
    """A model the engine runs: ``estimator`` (None: :class:`NoEstimator`) and ``nets.sr`` as conditioned."""
    if nets.sr is None:
        raise ModelError(f"{nets.source}: holds no SR network")
    sr, reads = nets.sr, nets.conditioning
    if not (reads.blur and reads.semantics):
        sr = ConditionedSR(sr, reads.blur, reads.semantics)
    card = nets.card
    return Model(
        card=dataclasses.replace(card, name=name),
        cmos=estimator if estimator is not None else NoEstimator(card.num_classes, card.spec.scale),
        sr=sr,
        source=nets.source,
    )
