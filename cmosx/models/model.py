"""A model: its networks, its card and where it came from -- the one shape the engine, evaluation and
training hand around.

Loaded from files (:func:`cmosx.models.weights_io.load_model`, :func:`cmosx.models.hub.resolve_model`) both
networks are present and in eval mode on the CPU; taken from a training run (``cmosx.train.runs``) either
may be None (an estimator run holds no SR network, an sr run no CMOS). The card says everything else:
spec, classes, ``sigma_max``, and in its recipe which maps the SR network reads (``conditioning``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from cmosx.errors import ModelError
from cmosx.models.blind import BlindSR
from cmosx.models.card import Conditioning, ModelCard
from cmosx.models.descriptor import ModelDescriptor, describe


@dataclass
class Model:
    """CMOS (``cmos``) and RRDB-SFT (``sr``) with their :class:`ModelCard`."""

    card: ModelCard
    cmos: nn.Module | None  # CMOS, or anything whose forward(lr) gives a CMOSOutput; None: holds none
    sr: nn.Module | None  # RRDB-SFT; None: holds none
    source: str = ""  # the reference it was loaded from (bundled name, path, hf://..., run folder)
    sha256: str = ""  # of the weights file, where loaded from one
    weights_path: Path | None = None  # where the weights were read (companions are resolved beside it)

    @property
    def descriptor(self) -> ModelDescriptor:
        """Scale, tiling geometry and precision safety of the card's spec (what the engine needs)."""
        return describe(self.card.spec, self.card.num_classes)

    @property
    def conditioning(self) -> Conditioning:
        """The maps the SR network reads (a switched-off one is fed as zeros)."""
        return self.card.recipe.reads

    def blind_sr(self) -> BlindSR:
        """CMOS + RRDB-SFT chained, untiled (estimated maps condition the SR network)."""
        if self.cmos is None or self.sr is None:
            raise ModelError(f"{self.source or self.card.name}: needs both networks for blind SR")
        return BlindSR(self.cmos, self.sr, sigma_max=self.card.sigma_max)
