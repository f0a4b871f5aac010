"""Training samples as a pure function of (seed, global sample number): resumable and DDP-shardable.

Sample ``k`` of a run is: dataset item ``perm_e[k mod N]`` with ``perm_e`` a seeded permutation of epoch
``e = k // N``, then augmented on the pixel grid (zoom, flip, crop: :mod:`cmosx.train.data.augment`) with
generators seeded from ``(seed, k)``. The batch of optimizer step ``s`` on rank ``r`` of ``W`` holds samples
``(s W + r) b ... (s W + r) b + b - 1``. Nothing
depends on what ran before, so the data order and augmentation of a resumed run equal those of an
uninterrupted one, and ranks never see the same sample. For rendered (streamed) data, ``crops_per_item``
lets several consecutive steps cut fresh crops from the same items. A memo avoids rendering them again
within one process; :class:`StepBatches` hands all the steps that share items to one DataLoader worker as
one chunk, so the memo pays off with any number of workers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from cmosx.errors import ArgumentError, DatasetError
from cmosx.train.data.augment import augment
from cmosx.train.data.degrade import Degradation

_MASK63 = (1 << 63) - 1


def mix_seed(*values: int) -> int:
    """A well-spread 63-bit seed from integers (splitmix64 steps)."""
    x = 0x9E3779B97F4A7C15
    for v in values:
        x = (x ^ (int(v) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        x = (x ^ (x >> 31)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 29
    return x & _MASK63


class TrainSamples(Dataset):
    """Map-style view of an underlying dataset indexed by the global sample number ``k`` (any int >= 0)."""

    def __init__(
        self,
        dataset: Dataset,
        *,
        seed: int,
        crop: tuple[int, int],
        scale: int = 4,
        flip: bool = True,
        zoom_ratios: tuple[float, ...] = (1.0,),
        degradation: Degradation | None = None,
        keep: Callable[[dict[str, Any]], bool] | None = None,
        max_tries: int = 64,
        shuffle: bool = True,
        crops_per_item: int = 1,
        group: int = 1,
    ) -> None:
        self.dataset = dataset
        self.size = len(dataset)  # type: ignore[arg-type]
        if self.size == 0:
            raise DatasetError("the training dataset is empty")
        self.seed, self.crop, self.scale, self.flip = seed, tuple(crop), scale, flip
        self.zoom_ratios, self.degradation = tuple(zoom_ratios), degradation
        self.keep, self.max_tries, self.shuffle = keep, max_tries, shuffle
        self.crops_per_item, self.group = max(1, crops_per_item), max(1, group)
        self._cache: dict[int, dict[str, Any]] = {}  # the last few items read (memo only; no effect on results)

    def __len__(self) -> int:  # nominal; indices are unbounded
        return self.size

    def base_index(self, k: int) -> int:
        """Dataset index of sample ``k``: a seeded permutation per epoch, or ``k`` itself for a stream."""
        epoch, pos = divmod(k, self.size)
        if not self.shuffle:
            return pos
        perm = torch.randperm(self.size, generator=torch.Generator().manual_seed(mix_seed(self.seed, 1, epoch)))
        return int(perm[pos])

    def item_number(self, k: int) -> int:
        """Which item sample ``k`` is cut from: ``crops_per_item`` consecutive groups of ``group`` samples
        (one step's batch) reuse the same ``group`` items with fresh crops -- cheap when items are rendered.
        """
        block, pos = divmod(k, self.group * self.crops_per_item)
        return block * self.group + pos % self.group

    def _read(self, index: int) -> dict[str, Any]:
        if index not in self._cache:
            if len(self._cache) >= 4 * self.group:
                self._cache.pop(next(iter(self._cache)))
            self._cache[index] = self.dataset[index]
        return self._cache[index]

    def __getitem__(self, k: int) -> dict[str, Any]:
        # ``keep`` (e.g. space-invariant only) rejects items; the next candidate is a seeded far-away one.
        for attempt in range(self.max_tries):
            kk = k if attempt == 0 else mix_seed(self.seed, 3, k, attempt) % (1 << 40)
            item = self._read(self.base_index(self.item_number(kk)))
            if self.keep is None or self.keep(item):
                return self.augment(item, kk)
        raise DatasetError(f"no sample passed the training filter in {self.max_tries} tries")

    def augment(self, item: dict[str, Any], k: int) -> dict[str, Any]:
        """Sample ``k``'s crop, flip and zoom of ``item`` (:func:`cmosx.train.data.augment.augment`)."""
        gen = torch.Generator().manual_seed(mix_seed(self.seed, 2, k))
        noise_rng = np.random.default_rng(mix_seed(self.seed, 4, k))
        sample = augment(
            item,
            gen,
            size=self.crop,
            scale=self.scale,
            flip=self.flip,
            zoom_ratios=self.zoom_ratios,
            degradation=self.degradation,
            noise_rng=noise_rng,
        )
        out = {key: sample[key].contiguous() for key in ("hr", "lr", "blur", "labels")}
        out["space_invariant"] = torch.as_tensor(bool(item.get("space_invariant", False)))
        return out


class StepBatches(Sampler[list[int]]):
    """Sample numbers of optimizer steps ``start, start + 1, ..., end - 1`` for one rank, in chunks.

    Each yielded list holds the samples of up to ``steps_per_chunk`` consecutive steps (``batch_size``
    samples per step, step order kept), cut at multiples of ``steps_per_chunk`` so a chunk never spans two
    blocks of steps that share rendered items (``TrainSamples.crops_per_item``). A DataLoader gives each
    chunk to one worker; split it back into steps with :func:`split_steps`. Which samples a step gets does
    not depend on the chunking, so runs resumed mid-chunk or with other worker counts see the same data.
    """

    def __init__(
        self, start: int, end: int, batch_size: int, rank: int = 0, world_size: int = 1, steps_per_chunk: int = 1
    ) -> None:
        self.start, self.end, self.batch, self.rank, self.world = start, end, batch_size, rank, world_size
        self.chunk = max(1, steps_per_chunk)

    def step_samples(self, step: int) -> list[int]:
        first = (step * self.world + self.rank) * self.batch
        return list(range(first, first + self.batch))

    def chunks(self) -> list[tuple[int, int]]:
        """``(first_step, stop_step)`` of every chunk, in order."""
        bounds, step = [], self.start
        while step < self.end:
            stop = min(self.end, (step // self.chunk + 1) * self.chunk)
            bounds.append((step, stop))
            step = stop
        return bounds

    def __len__(self) -> int:
        return len(self.chunks())

    def __iter__(self) -> Iterator[list[int]]:
        for first, stop in self.chunks():
            yield [k for step in range(first, stop) for k in self.step_samples(step)]


def split_steps(samples: list[Any], batch_size: int) -> list[list[Any]]:
    """A chunk's samples (as :class:`StepBatches` ordered them) -> one list per optimizer step."""
    if len(samples) % batch_size:
        raise ArgumentError(f"a chunk of {len(samples)} samples is not whole steps of {batch_size}")
    return [samples[i : i + batch_size] for i in range(0, len(samples), batch_size)]
