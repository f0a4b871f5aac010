"""cmosx: blind super-resolution of defocused photos (CMOS + RRDB-SFT, CVPR 2023).

Importing this package is cheap: it must not import torch, so that ``cmosx --help`` and
``cmosx --version`` stay fast. Heavy modules are imported where they are used.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
