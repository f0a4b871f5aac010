"""Procedural RGB + depth + semantic scenes for the offline ``synthetic-bsr`` dataset.

A scene is built like a photograph of a simple world seen by a pinhole camera (horizon row ``yh``, focal
length ``fpx`` pixels, camera height ``hc`` metres):

* **background** (class 0): sky with soft clouds and, outdoors, a far hill silhouette; far and smooth;
* **ground** (1): a textured plane whose depth follows the camera geometry (``z = hc * fpx / (y - yh)``)
  and whose texture shrinks with distance;
* **wall** (2): indoors the back wall, outdoors a building standing on the ground at its distance;
* **picture** (3): pictures / windows on the wall -- same depth as the wall, different class (a semantic
  edge without a depth edge);
* **plant** (4), **box** (5), **ball** (6): objects standing on the ground, sized by their distance and
  painted far to near (dead-leaves style occlusion), each with its own textures and depth profile
  (bumpy foliage, tilted planar faces, spheres).

``make_scene(h, w, rng)`` is deterministic for a given ``numpy.random.Generator`` state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from cmosx.train.data.textures import PhotoTextures, noise, random_colour, texture

SYNTHETIC_CLASSES: list[str] = ["background", "ground", "wall", "picture", "plant", "box", "ball"]
BACKGROUND, GROUND, WALL, PICTURE, PLANT, BOX, BALL = range(7)
SKY_DEPTH_M = 5000.0


@dataclass
class Scene:
    """image: 3 x H x W float [0, 1]; depth: H x W float32 metres (> 0); labels: H x W int64."""

    image: torch.Tensor
    depth: torch.Tensor
    labels: torch.Tensor


class _Canvas:
    """Image, depth and labels being painted, with clipping of local patches to the frame."""

    def __init__(self, h: int, w: int):
        self.h, self.w = h, w
        self.image = torch.zeros(3, h, w)
        self.depth = torch.full((h, w), SKY_DEPTH_M)
        self.labels = torch.zeros(h, w, dtype=torch.int64)

    def paint(self, y0: int, x0: int, mask: torch.Tensor, tex: torch.Tensor, depth, label: int) -> None:
        """Paint a local patch whose top-left corner is (y0, x0); ``mask`` h x w bool, ``tex`` 3 x h x w,
        ``depth`` h x w tensor or a number."""
        ph, pw = mask.shape
        cy0, cy1 = max(0, y0), min(self.h, y0 + ph)
        cx0, cx1 = max(0, x0), min(self.w, x0 + pw)
        if cy1 <= cy0 or cx1 <= cx0:
            return
        ly, lx = slice(cy0 - y0, cy1 - y0), slice(cx0 - x0, cx1 - x0)
        m = mask[ly, lx]
        region = (slice(cy0, cy1), slice(cx0, cx1))
        self.image[:, region[0], region[1]] = torch.where(m, tex[:, ly, lx], self.image[:, region[0], region[1]])
        d = depth[ly, lx] if isinstance(depth, torch.Tensor) else torch.full(m.shape, float(depth))
        self.depth[region] = torch.where(m, d, self.depth[region])
        self.labels[region] = torch.where(m, torch.full_like(m, label, dtype=torch.int64), self.labels[region])


@dataclass
class _Camera:
    h: int
    w: int
    fpx: float  # focal length in pixels
    yh: float  # horizon row
    hc: float  # camera height, metres

    def ground_row(self, z: float) -> float:
        return self.yh + self.hc * self.fpx / z

    def px(self, metres: float, z: float) -> float:
        return metres * self.fpx / z


def _kind(rng: np.random.Generator, choices: dict[str, float], photos: PhotoTextures | None) -> str:
    names = list(choices)
    p = np.array([choices[n] for n in names], dtype=np.float64)
    if photos is not None:
        names.append("photo")
        p = np.append(p, p.sum() * 0.5)
    return str(rng.choice(names, p=p / p.sum()))


def _sky(canvas: _Canvas, cam: _Camera, rng: np.random.Generator) -> None:
    h, w = canvas.h, canvas.w
    tex = texture("sky", h, w, rng)
    top, bottom = random_colour(rng, 0.5, (0.4, 0.9)), random_colour(rng, 0.3, (0.6, 1.0))
    t = torch.linspace(0, 1, h).view(1, h, 1)
    grad = top.view(3, 1, 1) * (1 - t) + bottom.view(3, 1, 1) * t
    canvas.paint(0, 0, torch.ones(h, w, dtype=torch.bool), (0.6 * grad + 0.4 * tex).clamp(0, 1), SKY_DEPTH_M, 0)


def _hills(canvas: _Canvas, cam: _Camera, rng: np.random.Generator, photos) -> None:
    h, w = canvas.h, canvas.w
    profile = noise(1, w, rng, octaves=4, smallest=max(2, w // 64))[0, 0] * rng.uniform(0.02 * h, 0.08 * h)
    top = cam.yh - rng.uniform(0.03 * h, 0.15 * h) + profile
    rows = torch.arange(h, dtype=torch.float32).view(h, 1)
    mask = rows >= top.view(1, w)
    tex = texture(_kind(rng, {"cloudy": 3, "leaves": 1}, photos), h, w, rng)
    canvas.paint(0, 0, mask, tex * 0.8 + 0.2 * random_colour(rng).view(3, 1, 1), rng.uniform(300, 3000), BACKGROUND)


def _ground(canvas: _Canvas, cam: _Camera, rng: np.random.Generator, photos, far: float) -> None:
    h, w = canvas.h, canvas.w
    y0 = int(math.floor(cam.yh)) + 1
    if y0 >= h:
        return
    rows = torch.arange(y0, h, dtype=torch.float32).view(-1, 1)
    cols = torch.arange(w, dtype=torch.float32).view(1, -1)
    z = (cam.hc * cam.fpx / (rows - cam.yh)).expand(-1, w).clamp(max=far)
    x_m = (cols - w / 2) * z / cam.fpx
    period = rng.uniform(1.0, 6.0)  # metres covered by one texture tile
    size = 256
    tex = texture(_kind(rng, {"tiles": 1, "cloudy": 2, "stripes": 1, "leaves": 1}, photos), size, size, rng)
    u = torch.remainder(x_m / period, 1.0) * 2 - 1
    v = torch.remainder(z / period, 1.0) * 2 - 1
    grid = torch.stack([u, v], dim=-1).unsqueeze(0)
    sampled = F.grid_sample(tex.unsqueeze(0), grid, mode="bilinear", padding_mode="reflection", align_corners=False)[0]
    # fade to the mean colour where one texel shrinks below a pixel (no aliasing near the horizon)
    texel_px = cam.fpx * period / size / z
    fade = torch.clamp((1.5 - texel_px) / 1.0, 0, 1).unsqueeze(0)
    mean = tex.mean(dim=(1, 2)).view(3, 1, 1)
    image = sampled * (1 - fade) + mean * fade
    canvas.paint(y0, 0, torch.ones(h - y0, w, dtype=torch.bool), image.clamp(0, 1), z, GROUND)


def _wall_with_pictures(canvas, cam, rng, photos, z_wall: float, x0: int, x1: int, top: int) -> None:
    """A wall (indoor back wall or building) standing on the ground at ``z_wall`` from column x0 to x1."""
    h = canvas.h
    bottom = int(min(h, math.ceil(cam.ground_row(z_wall))))
    top = max(top, -10)
    if bottom <= top or x1 <= x0:
        return
    ph, pw = bottom - top, x1 - x0
    tilt = rng.uniform(-0.15, 0.15)
    cols = torch.arange(x0, x1, dtype=torch.float32).view(1, -1)
    depth = (z_wall * (1 + tilt * (cols - (x0 + x1) / 2) / canvas.w)).expand(ph, -1).clone()
    tex = texture(_kind(rng, {"cloudy": 2, "tiles": 2, "stripes": 1}, photos), ph, pw, rng)
    canvas.paint(top, x0, torch.ones(ph, pw, dtype=torch.bool), tex, depth, WALL)
    for _ in range(int(rng.integers(0, 5))):  # pictures / windows: same depth as the wall
        fh, fw = int(rng.uniform(0.1, 0.45) * ph), int(rng.uniform(0.08, 0.4) * pw)
        if fh < 4 or fw < 4:
            continue
        py, px = int(rng.integers(top, max(top + 1, bottom - fh))), int(rng.integers(x0, max(x0 + 1, x1 - fw)))
        pic = texture(_kind(rng, {"leaves": 3, "stripes": 1, "cloudy": 1}, photos), fh, fw, rng)
        border = int(rng.integers(0, 4))
        if border:
            frame = torch.ones(fh, fw, dtype=torch.bool)
            frame[border:-border, border:-border] = False
            pic = torch.where(frame, random_colour(rng).view(3, 1, 1), pic)
        canvas.paint(py, px, torch.ones(fh, fw, dtype=torch.bool), pic, depth[:fh, px - x0 : px - x0 + fw], PICTURE)


def _box(canvas, cam, rng, photos, z: float, x_m: float) -> None:
    wm, hm = rng.uniform(0.3, 1.6), rng.uniform(0.3, 1.6)
    w_px, h_px = int(cam.px(wm, z)), int(cam.px(hm, z))
    if w_px < 3 or h_px < 3:
        return
    bottom = int(cam.ground_row(z))
    left = int(canvas.w / 2 + cam.px(x_m, z) - w_px / 2)
    split = int(rng.uniform(0.2, 0.8) * w_px)  # two faces with different light and slant
    cols = torch.arange(w_px, dtype=torch.float32).view(1, -1)
    slant_a, slant_b = rng.uniform(0.0, 0.5), rng.uniform(0.0, 0.5)
    depth = torch.where(
        cols < split, z + slant_a * wm * (split - cols) / w_px, z + slant_b * wm * (cols - split) / w_px
    ).expand(h_px, -1)
    tex = texture(_kind(rng, {"stripes": 2, "tiles": 1, "cloudy": 1, "leaves": 1}, photos), h_px, w_px, rng)
    light = torch.where(cols < split, torch.tensor(1.0), torch.tensor(rng.uniform(0.45, 0.9))).unsqueeze(0)
    canvas.paint(bottom - h_px, left, torch.ones(h_px, w_px, dtype=torch.bool), (tex * light).clamp(0, 1), depth, BOX)


def _ball(canvas, cam, rng, photos, z: float, x_m: float) -> None:
    rm = rng.uniform(0.1, 0.6)
    r_px = cam.px(rm, z)
    if r_px < 2:
        return
    size = int(2 * r_px) + 1
    cy = cam.ground_row(z) - r_px
    cx = canvas.w / 2 + cam.px(x_m, z)
    y0, x0 = int(cy - r_px), int(cx - r_px)
    yy = (torch.arange(size, dtype=torch.float32).view(-1, 1) + y0 + 0.5 - cy) / r_px
    xx = (torch.arange(size, dtype=torch.float32).view(1, -1) + x0 + 0.5 - cx) / r_px
    rho2 = yy * yy + xx * xx
    mask = rho2 <= 1
    nz = torch.sqrt((1 - rho2).clamp_min(0))
    lx, ly = rng.uniform(-0.7, 0.7), rng.uniform(-0.7, 0.2)
    light = (0.35 + 0.65 * (nz * 0.6 + (-xx * lx - yy * ly)).clamp(0, 1)).unsqueeze(0)
    tex = texture(_kind(rng, {"cloudy": 2, "stripes": 2, "leaves": 1}, photos), size, size, rng)
    canvas.paint(y0, x0, mask, (tex * light).clamp(0, 1), z - rm * nz, BALL)


def _plant(canvas, cam, rng, photos, z: float, x_m: float) -> None:
    hm = rng.uniform(0.4, 3.0)
    wm = hm * rng.uniform(0.4, 1.0)
    h_px, w_px = int(cam.px(hm, z)), int(cam.px(wm, z))
    if h_px < 4 or w_px < 4:
        return
    bottom = int(cam.ground_row(z))
    left = int(canvas.w / 2 + cam.px(x_m, z) - w_px / 2)
    yy = torch.linspace(-1, 1, h_px).view(-1, 1)
    xx = torch.linspace(-1, 1, w_px).view(1, -1)
    crown = 1 - ((yy + 0.25) / 0.8) ** 2 - xx * xx
    bump = noise(h_px, w_px, rng, octaves=4, smallest=max(1, h_px // 40))[0]
    mask = (crown + 0.35 * bump) > 0.2
    trunk = (yy > 0.3) & (xx.abs() < rng.uniform(0.06, 0.15))
    leaves = texture(_kind(rng, {"foliage": 4, "leaves": 1}, photos), h_px, w_px, rng)
    bark = texture("stripes", h_px, w_px, rng) * 0.5
    tex = torch.where(trunk & ~mask, bark, leaves)
    depth = z + 0.06 * wm * bump.clamp(-2, 2)
    canvas.paint(bottom - h_px, left, mask | trunk, tex, depth, PLANT)


def make_scene(height: int, width: int, rng: np.random.Generator, photos: PhotoTextures | None = None) -> Scene:
    """A random scene of ``height x width`` pixels (see the module docstring)."""
    canvas = _Canvas(height, width)
    fpx = width * rng.uniform(0.7, 1.4)
    indoor = bool(rng.random() < 0.5)
    cam = _Camera(height, width, fpx, yh=height * rng.uniform(0.2, 0.6), hc=rng.uniform(0.8, 1.8))
    if indoor:
        z_back = rng.uniform(2.5, 12.0)
        _sky(canvas, cam, rng)  # seen only through gaps; the wall covers the frame above the floor
        _ground(canvas, cam, rng, photos, far=z_back)
        _wall_with_pictures(canvas, cam, rng, photos, z_back, 0, width, top=0)
    else:
        z_back = rng.uniform(15.0, 80.0)
        _sky(canvas, cam, rng)
        if rng.random() < 0.7:
            _hills(canvas, cam, rng, photos)
        _ground(canvas, cam, rng, photos, far=SKY_DEPTH_M)
        if rng.random() < 0.6:
            bw = int(width * rng.uniform(0.2, 0.8))
            bx = int(rng.integers(-bw // 3, width - bw // 2))
            top = int(cam.ground_row(z_back) - cam.px(rng.uniform(5, 40), z_back))
            _wall_with_pictures(canvas, cam, rng, photos, z_back, max(0, bx), min(width, bx + bw), top)
    # objects on the ground, painted far to near; the nearest stand ~0.6 m from the camera
    z_min = max(0.6, cam.hc * cam.fpx / (height * 1.3 - cam.yh + 1e-6))
    # a long lens over a close wall can put that bound behind the wall: keep objects in front of it
    z_min = min(z_min, 0.8 * z_back)
    count = int(rng.integers(2, 11))
    depths = np.sort(np.exp(rng.uniform(math.log(z_min), math.log(z_back * 0.95), size=count)))[::-1]
    for z in depths:
        x_m = rng.uniform(-0.6, 0.6) * width * z / fpx
        kind = rng.choice([_plant, _box, _ball], p=[0.35, 0.4, 0.25])
        kind(canvas, cam, rng, photos, float(z), float(x_m))
    return Scene(canvas.image.clamp(0, 1), canvas.depth.to(torch.float32), canvas.labels)
