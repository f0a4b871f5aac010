"""Networks as the product runs them: an evaluation row's networks wrapped for the engine's ``Upscaler``.

The engine takes a :class:`~cmosx.models.weights_io.LoadedModel` (an estimator called ``cmos`` and an
SR network) and applies the same framing, tiling and precision policy as ``cmosx upscale``. A row of
``cmosx eval`` is such a model, built here from :class:`~cmosx.train.runs.Networks`:

- :class:`ConditionedSR`: an SR network fed zeros for the maps its conditioning switches off (as in
  training, :func:`cmosx.train.stages.condition`; e.g. the blur-unaware baseline takes no maps at all);
- :class:`NoEstimator`: stands in for CMOS where a row uses no estimated map (blur 0, equal logits),
  so the engine spends nothing on estimating maps the row never reads.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from cmosx.errors import ModelError
from cmosx.models.cmos import CMOSOutput
from cmosx.models.descriptor import describe
from cmosx.models.weights_io import LoadedModel, ModelCard
from cmosx.train.runs import Networks
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


def engine_model(nets: Networks, estimator: nn.Module | None, name: str) -> LoadedModel:
    """A model the engine runs: ``estimator`` (None: :class:`NoEstimator`) and ``nets.sr`` as conditioned."""
    if nets.sr is None:
        raise ModelError(f"{nets.source}: holds no SR network")
    sr = nets.sr
    if not (nets.use_blur and nets.use_semantics):
        sr = ConditionedSR(sr, nets.use_blur, nets.use_semantics)
    card = ModelCard(
        name=name,
        spec=nets.spec,
        num_classes=nets.num_classes,
        class_names=list(nets.class_names),
        scale=nets.spec.scale,
        sigma_max=nets.sigma_max,
    )
    return LoadedModel(
        cmos=estimator if estimator is not None else NoEstimator(nets.num_classes, nets.spec.scale),
        sr=sr,
        card=card,
        descriptor=describe(nets.spec, nets.num_classes),
        source=nets.source,
    )
