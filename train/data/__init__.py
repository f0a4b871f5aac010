"""BSR datasets: defocus renderer, synthetic scenes, NYUv2-BSR and Cityscapes-BSR, on-disk format.

Main entry points: :class:`SyntheticBSR` (streamed synthetic training data), :data:`SYNTHETIC_CLASSES`,
:func:`open_dataset` (datasets written by ``cmosx dataset generate``).
"""

from cmosx.train.data.scenes import SYNTHETIC_CLASSES
from cmosx.train.data.storage import open_dataset
from cmosx.train.data.synthetic import SyntheticBSR

__all__ = ["SYNTHETIC_CLASSES", "SyntheticBSR", "open_dataset"]
