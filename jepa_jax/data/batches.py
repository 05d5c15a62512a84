"""Batches of an epoch: the deterministic data order and the in-memory
batch iterator (`grain_pipeline` reads the same batches through Grain).

Data order: the permutation for epoch e is a function of (seed, e) alone
(`numpy.random.default_rng([seed, e])`), so any run, and any resumed run, sees
the same batches in the same order.
"""
from __future__ import annotations

from typing import Iterator, Optional, Tuple

import numpy as np


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
