"""The fixed probe set of `evaluate`: at most `max_images` labelled images.

On large data (the procedural `shapes` set: 50,000 train + 12,800 val
images, rendered when read) probing every image is too slow (five-fold
logistic regression on 62,800 x 3,072 raw pixels) and encoding every image
too long. `choose` draws, once per run from its seed, at most `max_images`
images: `round(max_images * num_train / total)` of the train split and the
rest of the val split (the splits' proportions kept), without replacement
by `numpy.random.default_rng([seed, SEED_TAG])`, sorted. Every probe of the
run (both encoders, the random init, the pixels) and its code metrics use
this one set. Data with at most `max_images` images (digits: 1,797; ARC) keep
all of them, in order: their numbers are those of the uncapped protocol.

`MAX_IMAGES` = 10,000: the 95% interval of an accuracy over N images is at
most 1.96 sqrt(0.25 / N) = +/-1.0 point at N = 10,000 (finer than the gaps
the report reads), and the pixel probe's features (10,000 x 3,072 float64,
0.25 GB) and the encoders' tokens fit a laptop's memory.
"""
from __future__ import annotations

import dataclasses
from typing import Tuple

import numpy as np

MAX_IMAGES = 10_000
SEED_TAG = 0x9e7a       # the probe set's own stream of the run's seed
READ_BATCH = 1024       # images read (rendered / decoded) at once


def choose(num_train: int, num_val: int, max_images: int,
           seed: int) -> Tuple[np.ndarray, np.ndarray]:
  """(train indices, val indices) of the probe set (module docstring):
  every index when num_train + num_val <= max_images."""
  total = num_train + num_val
  if total <= max_images:
    return np.arange(num_train), np.arange(num_val)
  n_tr = min(max(int(round(max_images * num_train / total)), 1), max_images - 1)
  n_va = max_images - n_tr
  rng = np.random.default_rng([seed, SEED_TAG])
  tr = np.sort(rng.choice(num_train, min(n_tr, num_train), replace=False))
  va = np.sort(rng.choice(num_val, min(n_va, num_val), replace=False))
  return tr, va


def take(images, ids: np.ndarray, batch: int = READ_BATCH) -> np.ndarray:
  """images[ids] as one float32 array, read `batch` images at a time (a lazy
  split is never read whole); an in-memory array of which every index is
  taken is returned as it is."""
  if isinstance(images, np.ndarray) and np.array_equal(ids, np.arange(len(images))):
    return images
  if len(ids) == 0:
    return np.zeros((0,) + tuple(images.shape[1:]), np.float32)
  return np.concatenate([np.asarray(images[ids[i:i + batch]])
                         for i in range(0, len(ids), batch)])


def _pick(x, ids):
  return None if x is None else np.asarray(x)[ids]


def restrict(ds, max_images: int, seed: int):
  """(dataset of the probe set's images, labels, groups and factors, in
  memory; {'probe_images', 'probe_train_images', 'probe_val_images'})."""
  tr, va = choose(len(ds.train_images), len(ds.val_images), max_images, seed)
  factors = lambda f, ids: None if f is None else {k: v[ids] for k, v in f.items()}  # noqa: E731
  sub = dataclasses.replace(
      ds, train_images=take(ds.train_images, tr), val_images=take(ds.val_images, va),
      train_labels=_pick(ds.train_labels, tr), val_labels=_pick(ds.val_labels, va),
      train_groups=_pick(ds.train_groups, tr), val_groups=_pick(ds.val_groups, va),
      train_factors=factors(ds.train_factors, tr), val_factors=factors(ds.val_factors, va))
  return sub, {'probe_images': int(len(tr) + len(va)),
               'probe_train_images': int(len(tr)), 'probe_val_images': int(len(va))}
