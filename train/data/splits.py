"""Seeds, splits and the space-invariant assignment shared by every BSR dataset.

Seed scheme: every random draw of a sample comes from ``numpy.random.SeedSequence([seed, split_code,
index, purpose])`` with ``split_code`` 0 train, 1 val, 2 test and ``purpose`` 0 scene, 1 lens / blur,
2 degradation noise, 3 streamed space-invariant draw, 4 streamed crop position. Streams of different
splits are therefore independent for *any* seeds: the
synthetic-bsr test scenes (split code 2) can never appear in training, which streams split code 0.
The space-variant rendering of an image does not depend on its test group, so the five test groups
differ only in which images are blurred space-invariantly.

Space-invariant images (paper Table 1): ``n // 5`` images of every split -- 159 of 795 and 130 of 654
(NYUv2-BSR), 595 of 2975, 100 of 500 and 305 of 1525 (Cityscapes-BSR). The paper's text says "1/4",
its Table 1 counts are exactly one fifth, which is also what lets five test groups use *disjoint*
subsets: a fixed seeded permutation of the split is cut into fifths and test group g (1..5) blurs the
g-th fifth space-invariantly; train and val use the first fifth.
"""

from __future__ import annotations

import numpy as np

from cmosx.errors import UsageError

SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
TEST_GROUPS = (1, 2, 3, 4, 5)
PURPOSE_SCENE, PURPOSE_BLUR, PURPOSE_NOISE, PURPOSE_INVARIANT, PURPOSE_CROP = 0, 1, 2, 3, 4
_PERMUTATION = 1_000_003  # index slot used for the split's permutation


def split_code(split: str) -> int:
    if split not in SPLIT_CODES:
        raise UsageError(f"unknown split {split!r} (expected one of {', '.join(SPLIT_CODES)})")
    return SPLIT_CODES[split]


def sample_rng(seed: int, split: str, index: int, purpose: int) -> np.random.Generator:
    """The generator for one purpose of one sample (see the module docstring)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), split_code(split), int(index), int(purpose)]))


def invariant_count(n: int) -> int:
    """Space-invariant images in a split of ``n`` (paper Table 1: one fifth, rounded down)."""
    return n // 5


def space_invariant_mask(n: int, seed: int, split: str, group: int | None = None) -> np.ndarray:
    """Bool array (n,): which images of a split are blurred space-invariantly.

    ``group`` 1..5 for the test split (each a different, disjoint fifth); None for train / val.
    """
    if split == "test" and group not in TEST_GROUPS:
        raise UsageError(f"the test split has groups 1-5; got {group!r}")
    if split != "test" and group is not None:
        raise UsageError(f"only the test split has groups; got group {group} for {split!r}")
    order = sample_rng(seed, split, _PERMUTATION, PURPOSE_SCENE).permutation(n)
    c = invariant_count(n)
    g = 1 if group is None else group
    mask = np.zeros(n, dtype=bool)
    mask[order[(g - 1) * c : g * c]] = True
    return mask


def split_folder(split: str, group: int | None) -> str:
    """Relative folder of a split: ``train``, ``val`` or ``test/group3``."""
    split_code(split)
    return f"test/group{group}" if split == "test" else split
