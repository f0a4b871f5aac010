"""Seeded random weights for the paths a freshly built network leaves neutral (probes, tests, benchmarks).

A new CMOS or RRDB-SFT starts with its GIA gates ``alpha`` and ``beta`` at 0, its flow predictors at zero
and its BatchNorm statistics at mean 0, variance 1, so the paths that could widen the receptive field or
break tiling do nothing. :func:`open_neutral_paths` opens them, as training would.
"""

from __future__ import annotations

import torch
from torch import nn


def open_neutral_paths(
    module: nn.Module,
    generator: torch.Generator,
    gate: float,
    flow_std: float,
    bn_mean_std: float | None = None,
    bn_var_range: tuple[float, float] = (0.5, 1.5),
) -> nn.Module:
    """Set every GIA gate (``alpha``, ``beta``) to ``gate`` and every flow predictor weight to
    N(0, ``flow_std``); with ``bn_mean_std`` also draw BatchNorm running means N(0, ``bn_mean_std``) and
    variances uniform in ``bn_var_range``. Draws come from ``generator`` (BatchNorm layers first, in module
    order, then parameters), in place; returns ``module``.
    """
    with torch.no_grad():
        if bn_mean_std is not None:
            low, high = bn_var_range
            for layer in module.modules():
                if isinstance(layer, nn.BatchNorm2d):
                    layer.running_mean.copy_(torch.randn(layer.num_features, generator=generator) * bn_mean_std)
                    layer.running_var.copy_(torch.rand(layer.num_features, generator=generator) * (high - low) + low)
        for name, param in module.named_parameters():
            if name.endswith(("alpha", "beta")):
                param.fill_(gate)
            elif name.endswith("flow.weight"):
                param.copy_(torch.randn(param.shape, generator=generator) * flow_std)
    return module


def probe_weights(module: nn.Module, seed: int = 1) -> nn.Module:
    """Open every GIA path for a receptive-field probe: gates 1, random flow, random BN statistics; eval mode."""
    generator = torch.Generator().manual_seed(seed)
    open_neutral_paths(module, generator, gate=1.0, flow_std=0.05, bn_mean_std=0.1, bn_var_range=(0.5, 2.0))
    return module.eval()


def random_model(spec_name: str, num_classes: int = 8, seed: int = 0, lively: bool = True):
    """A :class:`~cmosx.models.model.Model` with seeded random weights (no training).

    ``lively`` also opens what a fresh network leaves neutral (:func:`open_neutral_paths`: BatchNorm
    statistics, GIA gates 0.5, flow predictors), so that every path that could break tiling is active, as
    in a trained network.
    """
    from cmosx.models.card import ModelCard
    from cmosx.models.model import Model
    from cmosx.models.specs import get_spec
    from cmosx.models.weights_io import build_networks

    spec = get_spec(spec_name)
    card = ModelCard(
        name=f"random-{spec_name}",
        spec=spec,
        num_classes=num_classes,
        class_names=[f"class{i}" for i in range(num_classes)],
        description=f"seeded random weights (seed {seed}) for tests and benchmarks; not trained",
    )
    torch.manual_seed(seed)
    cmos, sr = build_networks(card)
    if lively:
        g = torch.Generator().manual_seed(seed + 1)
        for net in (cmos, sr):
            open_neutral_paths(net, g, gate=0.5, flow_std=0.01, bn_mean_std=0.1, bn_var_range=(0.5, 1.5))
    return Model(card=card, cmos=cmos.eval(), sr=sr.eval(), source="random")
