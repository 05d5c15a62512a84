"""Images decoded on demand: a random-access stand-in for an in-memory array.

`LazyImages` behaves like the float32 (N, H, W, C) arrays the in-memory
sources return where the trainer reads them (`len`, `.shape`, `.dtype`,
`x[i]`, `x[a:b]`, `x[ids]`), but decodes each image only when it is read, so
host memory does not grow with the dataset. A reader (a picklable callable
`i -> float32 (H, W, C) in [0, 1]`) fetches one image: `FileReader` from an
image file, `records.RecordReader` from ArrayRecord shards.

Standardisation: the per-channel mean and std of the train split are
computed by `sample_stats` over at most `STATS_SAMPLE` train images (all of
them when the split is that small, which gives exactly the statistics, and
so exactly the values, of the in-memory `folder` source); each decoded
image is then mapped by the same formula as `data.standardize`.
"""
from __future__ import annotations

import io
from typing import Callable, Optional, Sequence

import numpy as np

from jepa_jax.data import dataset

STATS_SAMPLE = 2048     # train images the mean / std are computed over, at most
STATS_BYTES = 256 << 20  # a sample this large (float32) is reduced in chunks


def decode(source, size, mode: str, where: str) -> np.ndarray:
  """One image (a path or encoded bytes) as float32 (H, W, C) in [0, 1]:
  converted to `mode` ('L' or 'RGB'), resized to `size` (rows, cols) with
  bilinear filtering. Raises DataError naming `where` if it cannot."""
  from PIL import Image  # noqa: PLC0415  (only image sources need Pillow)
  try:
    fp = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    with Image.open(fp) as img:
      img = img.convert(mode).resize((size[1], size[0]), Image.Resampling.BILINEAR)
      x = np.asarray(img, np.float32) / 255.0
  except Exception as err:  # noqa: BLE001  (any unreadable image: one line)
    raise dataset.DataError(f'cannot read image {where}: {err}') from None
  return x[..., None] if x.ndim == 2 else x


class FileReader:
  """Reads image i from `paths[i]` (picklable, for worker processes)."""

  def __init__(self, paths: Sequence[str], size, mode: str):
    self.paths, self.size, self.mode = list(paths), tuple(size), mode

  def __len__(self) -> int:
    return len(self.paths)

  def __call__(self, i: int) -> np.ndarray:
    return decode(self.paths[i], self.size, self.mode, self.paths[i])


class LazyImages:
  """Images `reader(indices[k])`, k = 0..len-1, standardised with (mean, std)
  when given; read-only, array-like (see the module docstring)."""

  def __init__(self, reader: Callable[[int], np.ndarray], indices, image_shape,
               mean: Optional[np.ndarray] = None, std: Optional[np.ndarray] = None):
    self.reader = reader
    self.indices = np.asarray(indices, np.int64)
    self.image_shape = tuple(image_shape)
    self.mean, self.std = mean, std

  dtype = np.dtype(np.float32)
  ndim = 4

  @property
  def shape(self):
    return (len(self.indices),) + self.image_shape

  def __len__(self) -> int:
    return len(self.indices)

  def image(self, k: int) -> np.ndarray:
    """Image k, decoded (and standardised)."""
    x = self.reader(int(self.indices[k]))
    if self.mean is not None:
      x = ((x - self.mean) / self.std).astype(np.float32)
    return x

  def __getitem__(self, key):
    if isinstance(key, (int, np.integer)):
      return self.image(int(key) % len(self))
    ks = (range(len(self))[key] if isinstance(key, slice)
          else np.asarray(key).reshape(-1))
    if len(ks) == 0:
      return np.zeros((0,) + self.image_shape, np.float32)
    return np.stack([self.image(int(k)) for k in ks])

  def materialize(self) -> np.ndarray:
    """Every image, decoded, as one float32 array."""
    return self[:]

  def with_stats(self, mean, std) -> 'LazyImages':
    return LazyImages(self.reader, self.indices, self.image_shape, mean, std)


def sample_stats(images: LazyImages, split_seed: int):
  """Per-channel (mean, std) of the train images: over all of them when
  there are at most STATS_SAMPLE, else over a fixed sample of STATS_SAMPLE
  (chosen by `split_seed`). When the sample's pixels fit in STATS_BYTES it
  is stacked and reduced exactly as `data.standardize` does (the same values
  as the in-memory source); otherwise it is read in chunks of 64 images and
  the chunks' means and squared deviations are merged (Chan et al.), so the
  memory used stays that of 64 images."""
  n = len(images)
  ks = (np.arange(n) if n <= STATS_SAMPLE else np.sort(
      np.random.default_rng([split_seed, 0x57a7]).choice(n, STATS_SAMPLE, replace=False)))
  if len(ks) * int(np.prod(images.image_shape)) * 4 <= STATS_BYTES:
    sample = images[ks]
    axes = tuple(range(sample.ndim - 1))
    mean = sample.mean(axis=axes, dtype=np.float64)
    std = sample.std(axis=axes, dtype=np.float64)
  else:
    count, mean, m2 = 0, 0.0, 0.0
    for start in range(0, len(ks), 64):
      chunk = images[ks[start:start + 64]].reshape(-1, images.image_shape[-1])
      c = len(chunk)
      c_mean = chunk.mean(axis=0, dtype=np.float64)
      c_m2 = ((chunk - c_mean) ** 2).sum(axis=0)
      delta = c_mean - mean
      mean = mean + delta * c / (count + c)
      m2 = m2 + c_m2 + delta ** 2 * count * c / (count + c)
      count += c
    std = np.sqrt(m2 / count)
  return mean, np.where(std > 0, std, 1.0)


def split_lazy(cfg, reader, num_images: int, labels, name: str) -> 'dataset.Dataset':
  """The train/val split of lazily read images (`data.split_indices`):
  train stays lazy, standardised with `sample_stats`; val is decoded into
  memory (validation and the embedding metrics read it whole)."""
  tr, va = dataset.split_indices(num_images, cfg.data.val_fraction, cfg.data.split_seed)
  shape = tuple(cfg.data.image_size) + (cfg.data.channels,)
  train = LazyImages(reader, tr, shape)
  mean, std = sample_stats(train, cfg.data.split_seed)
  train = train.with_stats(mean, std)
  val = LazyImages(reader, va, shape, mean, std).materialize()
  return dataset.Dataset(
      train_images=train, val_images=val,
      train_labels=None if labels is None else labels[tr],
      val_labels=None if labels is None else labels[va], name=name)
