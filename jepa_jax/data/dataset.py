"""The `Dataset` record every data source returns, the registry of sources
(`register`, `available`) and the split helpers the sources share.

A source is a function `cfg -> Dataset`, registered by name with
`@register('name')`; `jepa_jax.data.load_dataset` picks it by
`config.data.name`. Images are float32 (N, H, W, C) arrays in host memory (or
array-like `lazy.LazyImages`), split into train/val.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Dict, Optional, Tuple

import numpy as np

from jepa_jax.errors import DataError  # noqa: F401  (re-exported: data.DataError)

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
  # Optional labels of other generating factors, {name: (N,) int array} per
  # split, besides the primary label (`shapes`: shapes.FACTORS). None: none.
  train_factors: Optional[Dict[str, np.ndarray]] = None
  val_factors: Optional[Dict[str, np.ndarray]] = None

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


def source(name: str) -> Callable:
  """The registered source `name` (ValueError naming the known ones)."""
  if name not in _REGISTRY:
    raise ValueError(f'unknown dataset {name!r}; available: {", ".join(available())}')
  return _REGISTRY[name]


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
