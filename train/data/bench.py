"""Render-speed benchmark and sample previews (``cmosx dataset bench`` prints them).

:func:`render_speed`: images/s of the layered defocus renderer for 640 x 480 at kernel 21 and 61 (on the
same synthetic scenes); :func:`sample_speed`: the synthetic-bsr sample rate (scene + render + LR) at
480 x 640 and 192 x 192; :func:`save_previews`: preview PNGs (HR, LR, colour-mapped blur map, labels).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cmosx.io.atomic import atomic_write
from cmosx.train.data.defocus import render_space_variant, sigma_max_for
from cmosx.train.data.scenes import make_scene
from cmosx.train.data.synthetic import synthetic_sample

_PALETTE = np.array(
    [[70, 130, 180], [128, 64, 128], [190, 153, 153], [250, 170, 30], [107, 142, 35], [220, 20, 60], [0, 0, 142]],
    dtype=np.uint8,
)


def colour_map(values: np.ndarray, vmax: float) -> np.ndarray:
    """H x W values in [0, vmax] -> H x W x 3 uint8, dark blue (sharp) through green and yellow to red."""
    t = np.clip(values / vmax, 0, 1)
    stops = np.array([[0.05, 0.05, 0.35], [0.0, 0.45, 0.85], [0.1, 0.8, 0.4], [0.95, 0.85, 0.1], [0.85, 0.1, 0.05]])
    pos = t * (len(stops) - 1)
    i = np.minimum(pos.astype(int), len(stops) - 2)
    f = (pos - i)[..., None]
    return ((stops[i] * (1 - f) + stops[i + 1] * f) * 255).round().astype(np.uint8)


def label_colours(labels: np.ndarray) -> np.ndarray:
    out = np.zeros((*labels.shape, 3), dtype=np.uint8)
    valid = labels < len(_PALETTE)
    out[valid] = _PALETTE[labels[valid]]
    return out


def _rgb(t: torch.Tensor) -> np.ndarray:
    return (t.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()


def save_previews(folder: Path, count: int, seed: int) -> list[Path]:
    """Write ``count`` previews (HR | blurred-LR upscaled | blur map | labels side by side)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        kernel = 21 if i % 2 == 0 else 61
        sample, record = synthetic_sample(seed, "val", i, kernel_size=kernel, space_invariant=(i == count - 1))
        lr_up = sample["lr"].repeat_interleave(4, 1).repeat_interleave(4, 2)
        panels = [
            _rgb(sample["hr"]),
            _rgb(lr_up),
            colour_map(sample["blur"][0].numpy(), sigma_max_for(kernel)),
            label_colours(sample["labels"].numpy()),
        ]
        path = folder / f"sample{i}_k{kernel}.png"
        grid = np.concatenate([np.concatenate(panels[:2], 1), np.concatenate(panels[2:], 1)], 0)
        atomic_write(path, lambda temp, grid=grid: Image.fromarray(grid).save(temp, format="PNG"))
        paths.append(path)
    return paths


def render_speed(repeats: int) -> list[dict]:
    """Time the defocus renderer on ``repeats`` 480 x 640 scenes at kernel 21 and 61.

    One dict per kernel: ``kernel``, ``sigma_max``, ``images_per_s``, ``wall_s`` and ``cpu_s`` per image,
    ``layers`` (depth layers rendered per image).
    """
    scenes = [make_scene(480, 640, np.random.default_rng(100 + i)) for i in range(repeats)]
    rows = []
    for kernel in (21, 61):
        wall, cpu, layers = time.perf_counter(), time.process_time(), 0
        for i, scene in enumerate(scenes):
            layers += render_space_variant(scene.image, scene.depth, kernel, np.random.default_rng(i)).stats.layers
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        rows.append(
            {
                "kernel": kernel,
                "sigma_max": sigma_max_for(kernel),
                "images_per_s": repeats / wall,
                "wall_s": wall / repeats,
                "cpu_s": cpu / repeats,
                "layers": layers / repeats,
            }
        )
    return rows


def sample_speed(repeats: int) -> list[dict]:
    """Time ``repeats`` synthetic-bsr training samples (kernel 21) at 480 x 640 and 192 x 192.

    One dict per size: ``size`` (H, W), ``samples_per_s``, ``seconds`` per sample.
    """
    rows = []
    for size in ((480, 640), (192, 192)):
        wall = time.perf_counter()
        for i in range(repeats):
            synthetic_sample(7, "train", i, size=size, kernel_size=21, space_invariant=False)
        wall = time.perf_counter() - wall
        rows.append({"size": size, "samples_per_s": repeats / wall, "seconds": wall / repeats})
    return rows
