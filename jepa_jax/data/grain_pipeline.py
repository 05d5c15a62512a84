"""The Grain input path (`data.pipeline='grain'`): the batches of
`data.epoch_batches`, read through a Grain dataset.

Order and sharding are those of the in-memory path, bit for bit: the epoch's
permutation is `data.epoch_permutation(N, seed, epoch)`, batch i holds its
positions [i*B, (i+1)*B), and a process reads only the rows (start, stop) of
each global batch (`parallel.Plan.process_rows`). `sample_positions` lists
the sample ids a process reads, in order; Grain then maps each id to its
image (`images[id]`: an in-memory array, or `lazy.LazyImages` decoding a file
or an ArrayRecord on demand), reads ahead with `data.read_threads` threads
(at most two batches buffered) and, with `data.workers` > 0, decodes in that
many worker processes (`IterDataset.mp_prefetch`).

Resume: the stream is a function of (seed, epoch, start_step, rows) alone.
The loop's checkpoint already holds the data position (epoch,
step_in_epoch), so a resumed run rebuilds the iterator at that batch and
reads exactly the batches the uninterrupted run would have; no Grain
iterator state needs saving.
"""
from __future__ import annotations

from typing import Iterator, Optional, Tuple

import numpy as np

from jepa_jax.data import batches


def sample_positions(num_examples: int, batch_size: int, seed: int, epoch: int,
                     num_steps: int, start_step: int = 0,
                     rows: Optional[Tuple[int, int]] = None) -> np.ndarray:
  """The sample ids this process reads for batches start_step..num_steps-1
  of the epoch, in order: rows [lo, hi) of each global batch of the (seed,
  epoch) permutation. Shape ((num_steps - start_step) * (hi - lo),)."""
  perm = batches.epoch_permutation(num_examples, seed, epoch)
  lo, hi = rows if rows is not None else (0, batch_size)
  steps = np.arange(start_step, num_steps, dtype=np.int64)
  pos = steps[:, None] * batch_size + lo + np.arange(hi - lo, dtype=np.int64)[None, :]
  return perm[pos.reshape(-1)]


class _Load:
  """Sample id -> (image, id as int32); picklable for worker processes."""

  def __init__(self, images):
    self.images = images

  def __call__(self, i):
    return self.images[int(i)], np.int32(i)


def _stack(items):
  return (np.stack([x for x, _ in items]),
          np.asarray([i for _, i in items], np.int32))


def _absl_flags_parsed() -> None:
  """Grain's worker processes read its absl flags, which fail unless flags
  were parsed: outside an absl app (tests, a notebook) they are marked parsed,
  so every flag keeps its default."""
  from absl import flags  # noqa: PLC0415
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def make_dataset(images, order: np.ndarray, rows_per_batch: int,
                 read_threads: int = 1, workers: int = 0):
  """A Grain IterDataset of (images (rows, H, W, C) float32, ids (rows,)
  int32) batches over the sample ids `order`, in that order."""
  import grain  # noqa: PLC0415  (only grain runs need it)
  ds = grain.MapDataset.source(order).map(_Load(images))
  it = ds.to_iter_dataset(grain.ReadOptions(
      num_threads=read_threads, prefetch_buffer_size=2 * rows_per_batch))
  it = it.batch(rows_per_batch, drop_remainder=True, batch_fn=_stack)
  if workers:
    _absl_flags_parsed()
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
  return it


def epoch_batches(images, batch_size: int, seed: int, epoch: int, num_steps: int,
                  start_step: int = 0, rows: Optional[Tuple[int, int]] = None,
                  read_threads: int = 1, workers: int = 0
                  ) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
  """`data.epoch_batches` through Grain: the same (images, sample_ids)
  batches, in the same order, for the same arguments."""
  lo, hi = rows if rows is not None else (0, batch_size)
  order = sample_positions(len(images), batch_size, seed, epoch, num_steps,
                           start_step, rows)
  if len(order) == 0:
    return iter(())
  return iter(make_dataset(images, order, hi - lo, read_threads, workers))
