"""Rendering of the procedural `shapes` images: object outlines as signed
distances, background textures, and the compositing of whole scenes.

Everything here is plain numpy on plain arguments and vectorised over a
batch of n scenes: a batch costs about as many numpy calls as one image.

Geometry. Pixel (row y, col x) has its centre at (x + 0.5, y + 0.5) in pixel
units. An object has a centre (cx, cy), a radius r (pixels), and a rotation
given by its cosine and sine; a pixel's *local* coordinates are
u = (c dx + s dy) / r, v = (-s dx + c dy) / r with (dx, dy) its offset from
the centre, so every outline is defined once, at radius 1, and lies inside
the unit circle (`shape_distance`). Coverage of a pixel by an object is
clip(0.5 - d r, 0, 1) for the signed distance d (negative inside): a one
pixel wide anti-aliased edge.

Determinism: the per-pixel arithmetic is +, -, *, /, abs, min, max, floor,
sqrt and comparisons only (each correctly rounded element by element), and
the sines and cosines are computed per object by the caller, so a pixel's
value does not depend on which other scenes share its batch.
"""
from __future__ import annotations

import math
from typing import Dict, Tuple

import numpy as np

# The object classes, in label order; `shape_distance` defines each.
SHAPES = ('disc', 'ring', 'square', 'triangle', 'plus', 'ell', 'hexagram',
          'half_disc', 'bar', 'frame')
# The background textures, in label order (`background`).
BACKGROUNDS = ('flat', 'gradient', 'stripes', 'checker', 'noise')
# Object colours, in label order: saturated and bright, against backgrounds
# whose channels stay below BACKGROUND_MAX.
PALETTE = np.array([
    (1.00, 0.15, 0.10),   # red
    (0.10, 0.85, 0.20),   # green
    (0.25, 0.45, 1.00),   # blue
    (1.00, 0.90, 0.10),   # yellow
    (0.95, 0.20, 0.90),   # magenta
    (0.10, 0.90, 0.95),   # cyan
    (1.00, 0.55, 0.05),   # orange
    (0.95, 0.95, 0.95),   # white
], np.float32)
COLOUR_NAMES = ('red', 'green', 'blue', 'yellow', 'magenta', 'cyan', 'orange', 'white')
BACKGROUND_MAX = 0.55
# Unit normals of the triangle's sides (its vertices point along -normals).
_TRI = tuple((math.cos(math.radians(90 + 120 * k)), math.sin(math.radians(90 + 120 * k)))
             for k in range(3))


def _box(u, v, a, b):
  """Signed distance (exact inside and across the sides) to the box
  |u| <= a, |v| <= b."""
  return np.maximum(np.abs(u) - a, np.abs(v) - b)


def _triangle(u, v):
  """Equilateral triangle of circumradius 1 (inradius 0.5) centred at 0."""
  d = _TRI[0][0] * u + _TRI[0][1] * v
  for nx, ny in _TRI[1:]:
    d = np.maximum(d, nx * u + ny * v)
  return d - 0.5


def shape_distance(name: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
  """Signed distance (negative inside, in units of the radius) from local
  coordinates (u, v) to the outline of class `name` at radius 1. Every
  outline lies inside the unit circle."""
  if name == 'disc':
    return np.sqrt(u * u + v * v) - 0.95
  if name == 'ring':                          # outer radius 0.98, hole 0.42
    return np.abs(np.sqrt(u * u + v * v) - 0.70) - 0.28
  if name == 'square':
    return _box(u, v, 0.70, 0.70)
  if name == 'triangle':
    return _triangle(u, v)
  if name == 'plus':
    return np.minimum(_box(u, v, 0.95, 0.28), _box(u, v, 0.28, 0.95))
  if name == 'ell':                           # upright stem and a foot along v > 0
    return np.minimum(_box(u + 0.35, v, 0.25, 0.75), _box(u, v - 0.50, 0.60, 0.25))
  if name == 'hexagram':                      # two opposed triangles
    return np.minimum(_triangle(u, v), _triangle(-u, -v))
  if name == 'half_disc':                     # radius 0.95, flat side at v = -0.35
    w = v + 0.35
    return np.maximum(np.sqrt(u * u + w * w) - 0.95, -w)
  if name == 'bar':
    return _box(u, v, 0.95, 0.28)
  if name == 'frame':                         # a square outline
    return np.maximum(_box(u, v, 0.70, 0.70), -_box(u, v, 0.36, 0.36))
  raise ValueError(f'unknown shape {name!r} (known: {", ".join(SHAPES)})')


def pixel_grid(size: Tuple[int, int]):
  """(x, y) pixel-centre coordinates, each float32 of shape (1, rows, cols)."""
  rows, cols = size
  y, x = np.meshgrid(np.arange(rows, dtype=np.float32) + 0.5,
                     np.arange(cols, dtype=np.float32) + 0.5, indexing='ij')
  return x[None], y[None]


def coverage(names, cls, cx, cy, r, cos, sin, size) -> np.ndarray:
  """Coverage in [0, 1], shape (n, rows, cols), of n objects: class index
  `cls` into `names`, centre (cx, cy) and radius r in pixels, rotation
  (cos, sin); every argument but `names` and `size` is an (n,) array."""
  x, y = pixel_grid(size)
  col = lambda a: np.asarray(a, np.float32)[:, None, None]  # noqa: E731
  dx, dy, rr, c, s = x - col(cx), y - col(cy), col(r), col(cos), col(sin)
  u, v = (c * dx + s * dy) / rr, (c * dy - s * dx) / rr
  out = np.zeros((len(cls),) + tuple(size), np.float32)
  for k in np.unique(cls):
    at = np.asarray(cls) == k
    out[at] = shape_distance(names[int(k)], u[at], v[at])
  return np.clip(0.5 - out * rr, 0.0, 1.0)


def _lerp(c0, c1, t):
  """c0 + t (c1 - c0): colours (n, 3), weights (n, rows, cols) -> (n, rows, cols, 3)."""
  return c0[:, None, None, :] + t[..., None] * (c1 - c0)[:, None, None, :]


def background(kind, c0, c1, cos, sin, period, phase, noise) -> np.ndarray:
  """n backgrounds (n, rows, cols, 3) between colours c0 and c1 (n, 3).

  kind (n,) indexes BACKGROUNDS: 'flat' is c0; 'gradient' goes from c0 to
  c1 along the direction (cos, sin); 'stripes' is a triangle wave of that
  projection with `period` pixels, shifted by `phase` periods; 'checker'
  has squares of `period` pixels, shifted by `phase` squares; 'noise' is
  `noise` (n, rows, cols, values in [0, 1]) smoothed by a 3x3 box filter.
  """
  rows, cols = noise.shape[1:]
  x, y = pixel_grid((rows, cols))
  col = lambda a: np.asarray(a, np.float32)[:, None, None]  # noqa: E731
  proj = (x - cols / 2) * col(cos) + (y - rows / 2) * col(sin)
  t = np.zeros((len(kind), rows, cols), np.float32)
  kind = np.asarray(kind)
  grad = kind == BACKGROUNDS.index('gradient')
  t[grad] = np.clip(0.5 + proj[grad] / max(rows, cols), 0.0, 1.0)
  stripes = kind == BACKGROUNDS.index('stripes')
  f = proj[stripes] / col(period)[stripes] + col(phase)[stripes]
  t[stripes] = np.abs(2.0 * (f - np.floor(f)) - 1.0)
  check = kind == BACKGROUNDS.index('checker')
  p, ph = col(period)[check], col(phase)[check]
  cells = np.floor(x / p + ph) + np.floor(y / p + ph)
  t[check] = cells - 2.0 * np.floor(cells / 2.0)
  smooth = kind == BACKGROUNDS.index('noise')
  t[smooth] = box_blur(noise[smooth])
  return _lerp(np.asarray(c0, np.float32), np.asarray(c1, np.float32), t)


def box_blur(a: np.ndarray) -> np.ndarray:
  """Mean over each pixel's 3x3 neighbourhood (edges repeated); a (n, rows, cols)."""
  p = np.pad(a, ((0, 0), (1, 1), (1, 1)), mode='edge')
  rows, cols = a.shape[1:]
  total = np.zeros_like(a)
  for i in range(3):
    for j in range(3):
      total = total + p[:, i:i + rows, j:j + cols]
  return total / 9.0


def render(scenes: Dict[str, np.ndarray], size, names=SHAPES):
  """Images (n, rows, cols, 3) float32 in [0, 1] and object ids (n, rows,
  cols) int8 of n scenes.

  `scenes` holds arrays with a leading axis n: the background's (`bg_kind`,
  `bg_c0`, `bg_c1` (n, 3), `bg_cos`, `bg_sin`, `bg_period`, `bg_phase`,
  `bg_noise` (n, rows, cols)) and, with a second axis of object slots, the
  objects' (`present`, `cls`, `cx`, `cy`, `r`, `cos`, `sin`, `rgb` (n, slots,
  3)). Slot 0 is the main object; slots are painted from the last to the
  first, each over what is below (alpha = coverage), so slot 0 is on top.
  The id of a pixel is the slot of the topmost object covering more than
  half of it, or -1.
  """
  img = background(scenes['bg_kind'], scenes['bg_c0'], scenes['bg_c1'],
                   scenes['bg_cos'], scenes['bg_sin'], scenes['bg_period'],
                   scenes['bg_phase'], scenes['bg_noise'])
  n, slots = scenes['cls'].shape
  ids = np.full((n,) + tuple(size), -1, np.int8)
  for j in reversed(range(slots)):
    at = np.asarray(scenes['present'][:, j], bool)
    if not at.any():
      continue
    a = np.zeros((n,) + tuple(size), np.float32)   # absent objects cover nothing
    a[at] = coverage(names, scenes['cls'][at, j], scenes['cx'][at, j], scenes['cy'][at, j],
                     scenes['r'][at, j], scenes['cos'][at, j], scenes['sin'][at, j], size)
    rgb = np.asarray(scenes['rgb'][:, j], np.float32)[:, None, None, :]
    img += a[..., None] * (rgb - img)               # = img (1 - a) + rgb a
    ids[a > 0.5] = j
  return img, ids
