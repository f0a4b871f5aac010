"""Render-speed benchmark and sample previews: ``python -m cmosx.train.data.bench``.

Prints images/s of the layered defocus renderer for 640 x 480 at kernel 21 and 61 (on the same
synthetic scenes), the synthetic-bsr sample rate (scene + render + LR) at 480 x 640 and 192 x 192, and
optionally writes preview PNGs (HR, LR, colour-mapped blur map, labels) with ``--samples DIR``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cmosx.train.data.defocus import render_space_variant, sigma_max_for
from cmosx.train.data.scenes import SYNTHETIC_CLASSES, make_scene
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
        Image.fromarray(np.concatenate([np.concatenate(panels[:2], 1), np.concatenate(panels[2:], 1)], 0)).save(path)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=6, help="scenes per measurement")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (DataLoader workers use 1)")
    parser.add_argument("--samples", type=Path, default=None, help="also write preview PNGs here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    scenes = [make_scene(480, 640, np.random.default_rng(100 + i)) for i in range(args.repeats)]
    print(f"threads {args.threads}, {args.repeats} scenes of 640x480")
    for kernel in (21, 61):
        wall, cpu, layers = time.perf_counter(), time.process_time(), 0
        for i, scene in enumerate(scenes):
            layers += render_space_variant(scene.image, scene.depth, kernel, np.random.default_rng(i)).stats.layers
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        n = len(scenes)
        print(
            f"render kernel {kernel:2d} (sigma <= {sigma_max_for(kernel):g}): {n / wall:5.2f} images/s, "
            f"{wall / n:.3f} s/image wall, {cpu / n:.3f} CPU-s/image, {layers / n:.0f} layers/image"
        )
    for size in ((480, 640), (192, 192)):
        wall = time.perf_counter()
        for i in range(args.repeats):
            synthetic_sample(7, "train", i, size=size, kernel_size=21, space_invariant=False)
        wall = time.perf_counter() - wall
        print(
            f"synthetic-bsr sample {size[0]}x{size[1]} kernel 21: {args.repeats / wall:5.2f} samples/s "
            f"({wall / args.repeats:.3f} s each)"
        )
    if args.samples is not None:
        for path in save_previews(args.samples, 4, seed=0):
            print(f"wrote {path}")
    print(f"classes: {', '.join(SYNTHETIC_CLASSES)}")


if __name__ == "__main__":
    main()
