"""Procedural textures for the synthetic scenes (and random crops of user photos).

Every texture is a float tensor 3 x h x w in [0, 1] drawn from a ``numpy.random.Generator`` (all torch
randomness goes through a ``torch.Generator`` seeded from it, so scenes are reproducible). Textures mix
multi-scale noise, stripes, tiles and dead-leaves discs with edges of varying contrast, so that a
super-resolution network trained on them sees real high-frequency detail, not flat colours.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

PHOTO_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


def torch_generator(rng: np.random.Generator) -> torch.Generator:
    """A torch generator seeded from ``rng``."""
    return torch.Generator().manual_seed(int(rng.integers(0, 2**62)))


def random_colour(rng: np.random.Generator, saturation: float = 0.6, value: tuple = (0.15, 0.95)) -> torch.Tensor:
    """A random RGB colour (3,) with bounded saturation and value."""
    hue = rng.random()
    sat = rng.random() * saturation
    val = rng.uniform(*value)
    # HSV -> RGB written out: kornia.color.hsv_to_rgb (float64) gives the same colours bit for bit, but
    # one call per dead-leaves disc made scenes 1.4-1.5x slower (2-core Xeon, loaded; 240 vs 70 us a call).
    rgb = np.clip(np.abs(((hue * 6 + np.array([0.0, 4.0, 2.0])) % 6) - 3) - 1, 0, 1)
    return torch.tensor(val * (1 - sat + sat * rgb), dtype=torch.float32)


def noise(h: int, w: int, rng: np.random.Generator, octaves: int = 5, smallest: int = 2, persistence=0.6):
    """Multi-scale value noise, 1 x h x w, roughly zero-mean with unit standard deviation."""
    gen = torch_generator(rng)
    out = torch.zeros(1, 1, h, w)
    amp, total = 1.0, 0.0
    cell = smallest * 2 ** (octaves - 1)
    for _ in range(octaves):
        gh, gw = max(2, math.ceil(h / cell) + 1), max(2, math.ceil(w / cell) + 1)
        grid = torch.randn(1, 1, gh, gw, generator=gen)
        up = F.interpolate(grid, size=(gh * cell, gw * cell), mode="bicubic", align_corners=False)
        out += amp * up[..., :h, :w]
        total += amp * amp
        amp *= persistence
        cell = max(1, cell // 2)
    return (out / math.sqrt(total))[0]


def _mix(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return a.view(3, 1, 1) * (1 - t) + b.view(3, 1, 1) * t


def _coords(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.arange(h, dtype=torch.float32).view(h, 1).expand(h, w)
    x = torch.arange(w, dtype=torch.float32).view(1, w).expand(h, w)
    return y, x


def stripes(h: int, w: int, rng: np.random.Generator) -> torch.Tensor:
    """Warped stripes (fabric, wood grain) between two colours, edges from soft to hard."""
    y, x = _coords(h, w)
    theta = rng.uniform(0, math.pi)
    period = rng.uniform(4, 40)
    warp = noise(h, w, rng, octaves=4, smallest=8)[0] * rng.uniform(0, 6)
    phase = (x * math.cos(theta) + y * math.sin(theta)) * 2 * math.pi / period + warp
    hardness = rng.uniform(0.5, 8)
    t = torch.sigmoid(hardness * torch.sin(phase)).unsqueeze(0)
    return _mix(random_colour(rng), random_colour(rng), t)


def tiles(h: int, w: int, rng: np.random.Generator) -> torch.Tensor:
    """Bricks or tiles: rectangles with per-tile colour jitter and thin grout lines."""
    y, x = _coords(h, w)
    th, tw = rng.uniform(8, 40), rng.uniform(8, 80)
    row = torch.floor(y / th)
    offset = (row % 2) * tw * rng.choice([0.0, 0.5])
    col = torch.floor((x + offset) / tw)
    base, grout = random_colour(rng), random_colour(rng, saturation=0.2)
    gen = torch_generator(rng)
    jitter = torch.rand(int(row.max()) + 2, int(col.max()) + 2, generator=gen) * 0.3 - 0.15
    tile_val = jitter[row.long(), col.long()].unsqueeze(0)
    fy = y / th - row
    fx = (x + offset) / tw - col
    line = rng.uniform(0.03, 0.12)
    is_grout = ((fy < line) | (fx < line * th / tw)).unsqueeze(0).float()
    tile = (base.view(3, 1, 1) + tile_val).clamp(0, 1)
    return tile * (1 - is_grout) + grout.view(3, 1, 1) * is_grout


def dead_leaves(h: int, w: int, rng: np.random.Generator, count: int = 60, rmax: float | None = None):
    """Dead-leaves discs: overlapping random discs with log-uniform radii (sharp edges, many scales)."""
    out = random_colour(rng).view(3, 1, 1).expand(3, h, w).clone()
    rmax = max(3.0, rmax or max(h, w) / 3)
    rmin = 1.5
    for _ in range(count):
        r = math.exp(rng.uniform(math.log(rmin), math.log(rmax)))
        cy, cx = rng.uniform(-r, h + r), rng.uniform(-r, w + r)
        y0, y1 = max(0, int(cy - r)), min(h, int(cy + r) + 1)
        x0, x1 = max(0, int(cx - r)), min(w, int(cx + r) + 1)
        if y1 <= y0 or x1 <= x0:
            continue
        yy = torch.arange(y0, y1, dtype=torch.float32).view(-1, 1) - cy
        xx = torch.arange(x0, x1, dtype=torch.float32).view(1, -1) - cx
        m = ((yy * yy + xx * xx) <= r * r).float()
        colour = random_colour(rng, saturation=0.9).view(3, 1, 1)
        out[:, y0:y1, x0:x1] = out[:, y0:y1, x0:x1] * (1 - m) + colour * m
    return out


def cloudy(h: int, w: int, rng: np.random.Generator, smooth: bool = False) -> torch.Tensor:
    """Two colours mixed by multi-scale noise (plaster, stone, grass, clouds when ``smooth``)."""
    n = noise(h, w, rng, octaves=4 if smooth else 6, smallest=16 if smooth else 1, persistence=0.55)
    t = torch.sigmoid(n * rng.uniform(0.8, 3.0))
    return _mix(random_colour(rng), random_colour(rng), t)


def foliage(h: int, w: int, rng: np.random.Generator) -> torch.Tensor:
    """Leaves: green-yellow hues modulated by fine noise, with dark sharp-edged gaps between leaves."""
    hue = torch.tensor([rng.uniform(0.1, 0.5), rng.uniform(0.35, 0.85), rng.uniform(0.05, 0.35)]).view(3, 1, 1)
    other = (hue * torch.tensor([rng.uniform(1.0, 1.8), 1.0, 0.6]).view(3, 1, 1)).clamp(0, 1)
    cells = noise(h, w, rng, octaves=3, smallest=int(rng.integers(1, 4)))
    shade = torch.sigmoid(2.5 * noise(h, w, rng, octaves=4, smallest=1))
    leaf = hue * (1 - shade) + other * shade
    gaps = (cells > rng.uniform(0.6, 1.2)).float()
    return (leaf * (1 - gaps) + 0.25 * hue * gaps).clamp(0, 1)


def add_grain(tex: torch.Tensor, rng: np.random.Generator, strength: tuple = (0.0, 0.06)) -> torch.Tensor:
    """Fine luminance grain on a texture (pixel-scale detail)."""
    _, h, w = tex.shape
    s = rng.uniform(*strength)
    if s <= 0:
        return tex
    return (tex + s * noise(h, w, rng, octaves=2, smallest=1)).clamp(0, 1)


def shading(h: int, w: int, rng: np.random.Generator) -> torch.Tensor:
    """A smooth illumination gradient 1 x h x w around 1 (large-scale light fall-off)."""
    y, x = _coords(h, w)
    gy, gx = rng.uniform(-0.4, 0.4), rng.uniform(-0.4, 0.4)
    return (1 + gy * (y / max(h, 1) - 0.5) + gx * (x / max(w, 1) - 0.5)).unsqueeze(0)


class PhotoTextures:
    """Random crops from a folder of photos (any of :data:`PHOTO_SUFFIXES`), loaded lazily and cached."""

    def __init__(self, folder: str | Path, max_side: int = 512):
        from cmosx.errors import DatasetError

        self.folder = Path(folder)
        self.paths = sorted(p for p in self.folder.rglob("*") if p.suffix.lower() in PHOTO_SUFFIXES)
        if not self.paths:
            raise DatasetError(f"{self.folder}: no photos ({', '.join(sorted(PHOTO_SUFFIXES))}) for textures")
        self.max_side = max_side
        self._cache: dict[int, torch.Tensor] = {}

    def _load(self, index: int) -> torch.Tensor:
        if index not in self._cache:
            from cmosx.errors import DatasetError

            try:
                with Image.open(self.paths[index]) as im:
                    im = im.convert("RGB")
                    im.thumbnail((self.max_side, self.max_side))
                    arr = np.asarray(im, dtype=np.uint8)
            except OSError as error:
                raise DatasetError(f"{self.paths[index]}: cannot read texture photo ({error})") from error
            self._cache[index] = torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 255.0
        return self._cache[index]

    def crop(self, h: int, w: int, rng: np.random.Generator) -> torch.Tensor:
        """A random crop resized to h x w, 3 x h x w in [0, 1]."""
        photo = self._load(int(rng.integers(len(self.paths))))
        _, ph, pw = photo.shape
        ch, cw = int(rng.integers(max(8, ph // 4), ph + 1)), int(rng.integers(max(8, pw // 4), pw + 1))
        y0, x0 = int(rng.integers(0, ph - ch + 1)), int(rng.integers(0, pw - cw + 1))
        crop = photo[:, y0 : y0 + ch, x0 : x0 + cw].unsqueeze(0)
        return F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False, antialias=True)[0].clamp(0, 1)


def texture(kind: str, h: int, w: int, rng: np.random.Generator, photos: PhotoTextures | None = None):
    """A texture of a named kind: cloudy, stripes, tiles, leaves, foliage, sky, or photo (else leaves)."""
    h, w = max(1, h), max(1, w)
    if kind == "photo" and photos is not None:
        tex = photos.crop(h, w, rng)
    elif kind in ("photo", "leaves"):
        tex = dead_leaves(h, w, rng, count=int(rng.integers(30, 120)))
    elif kind == "foliage":
        tex = foliage(h, w, rng)
    elif kind == "stripes":
        tex = stripes(h, w, rng)
    elif kind == "tiles":
        tex = tiles(h, w, rng)
    elif kind == "sky":
        tex = cloudy(h, w, rng, smooth=True)
    else:
        tex = cloudy(h, w, rng)
    return add_grain((tex * shading(h, w, rng)).clamp(0, 1), rng)
