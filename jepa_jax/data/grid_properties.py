"""Properties of categorical grids (ARC), computed from the grid alone.

ARC has no class labels; these properties stand in for them when probing
what a frozen encoder's embeddings (or its VQ codes) know about a grid. Each
is a small integer class per grid:

  num_colours   number of distinct colour ids in the grid (1..10, background
                included)
  symmetric     1 if the grid equals its left-right or its up-down mirror
                image, else 0
  object_count  number of objects, an object being a 4-connected region of
                cells of one non-background colour (colour 0 is background,
                as in ARC), capped at OBJECT_COUNT_CAP ("that many or more")

Inputs are canvases as the `arc` source stores them: (H, W) or (H, W, 1)
colour ids with padding cells < 0; the grid is the top-left block of
non-padding cells (`arc.trim`).
"""
from __future__ import annotations

from typing import Dict

import numpy as np

from jepa_jax.data import arc

BACKGROUND = 0
OBJECT_COUNT_CAP = 10
NAMES = ('num_colours', 'symmetric', 'object_count')


def num_colours(grid: np.ndarray) -> int:
  """Distinct colour ids in the grid, background included."""
  return int(np.unique(grid).size)


def symmetric(grid: np.ndarray) -> int:
  """1 if grid == fliplr(grid) or grid == flipud(grid), else 0."""
  return int(np.array_equal(grid, grid[:, ::-1]) or np.array_equal(grid, grid[::-1]))


def object_count(grid: np.ndarray) -> int:
  """4-connected single-colour regions of non-background cells (uncapped)."""
  from scipy import ndimage  # noqa: PLC0415
  total = 0
  for colour in np.unique(grid):
    if colour == BACKGROUND:
      continue
    _, n = ndimage.label(grid == colour)   # default structure: 4-connectivity
    total += int(n)
  return total


def grid_properties(images) -> Dict[str, np.ndarray]:
  """Property classes of a batch of canvases (N, H, W[, 1]) -> {name: (N,) int32}."""
  out = {name: [] for name in NAMES}
  for canvas in np.asarray(images):
    grid = arc.trim(canvas)
    out['num_colours'].append(num_colours(grid))
    out['symmetric'].append(symmetric(grid))
    out['object_count'].append(min(object_count(grid), OBJECT_COUNT_CAP))
  return {k: np.asarray(v, np.int32) for k, v in out.items()}
