"""Dataset registry and the deterministic epoch iterator.

A dataset source is a function `cfg -> Dataset`, registered by name with
`@register('name')` and picked by `config.data.name`. Every source returns
images as float32 (N, H, W, C) arrays in host memory, split into train/val.

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

  @property
  def image_shape(self) -> Tuple[int, int, int]:
    return tuple(self.train_images.shape[1:])


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


def split_indices(num_examples: int, val_fraction: float, split_seed: int):
  """A fixed train/val split: (train_idx, val_idx), sorted."""
  perm = np.random.default_rng(split_seed).permutation(num_examples)
  n_val = int(round(num_examples * val_fraction))
  return np.sort(perm[n_val:]), np.sort(perm[:n_val])


from jepa_jax.data import digits  # noqa: E402,F401  (registers 'digits')
