"""A user's own data: an `.npz` file of arrays, or an image folder.

`npz` (`config.data.path` = a .npz file):
  images  (N, H, W) or (N, H, W, C), a real-number (or integer) dtype,
          finite values. Continuous images are standardised per channel
          with the train split's mean and std. With
          `config.model.patch_embed='colour'` the array holds colour ids
          instead: an integer dtype, values in -1..num_colours-1 (negative =
          padding), at most one channel, used as they are.
  labels  optional (N,) integer class labels.

`folder` (`config.data.path` = a folder): one subfolder per class (sorted
  names give labels 0, 1, ...), each holding image files that Pillow reads.
  Images are converted to grayscale (`data.channels=1`) or RGB (3), resized
  to `data.image_size` (rows, cols) with bilinear filtering, scaled to [0, 1]
  and standardised per channel with the train split's statistics. With
  `data.pipeline='grain'` the train split is decoded lazily instead
  (`lazy.split_lazy`: the same values for folders of <= 2,048 train images).

Both are split by sample with `data.val_fraction` and `data.split_seed`.
Every problem with the input raises `data.DataError` with one line naming
the file or array.
"""
from __future__ import annotations

import os

import numpy as np

from jepa_jax.data import dataset
from jepa_jax.data import lazy

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.gif', '.tif', '.tiff',
                    '.webp', '.ppm', '.pgm')


def _path(cfg, kind: str) -> str:
  path = cfg.data.path
  if not path:
    raise dataset.DataError(f"data.name={cfg.data.name!r} needs config.data.path ({kind})")
  return os.path.expanduser(str(path))


def _split(cfg, images, labels, name, num_colours=None):
  tr, va = dataset.split_indices(len(images), cfg.data.val_fraction, cfg.data.split_seed)
  train_images, val_images = images[tr], images[va]
  if num_colours is None:
    train_images, val_images = dataset.standardize(train_images, val_images)
  return dataset.Dataset(
      train_images=train_images, val_images=val_images,
      train_labels=None if labels is None else labels[tr],
      val_labels=None if labels is None else labels[va],
      name=name, num_colours=num_colours)


def check_images(images, where: str, categorical_colours=None) -> np.ndarray:
  """Validates an images array; returns it as float32 (N, H, W, C).

  Raises DataError naming `where` for a wrong shape, dtype or value.
  """
  images = np.asarray(images)
  kind = images.dtype.kind
  if kind not in 'iuf':
    raise dataset.DataError(f'{where}: images have dtype {images.dtype}; '
                         'need an integer or floating-point array')
  if images.ndim == 3:
    images = images[..., None]
  if images.ndim != 4 or min(images.shape) < 1:
    raise dataset.DataError(f'{where}: images have shape {images.shape}; '
                         'need (N, H, W) or (N, H, W, C) with no empty axis')
  if kind == 'f' and not np.all(np.isfinite(images)):
    bad = int(np.sum(~np.isfinite(images).reshape(len(images), -1).all(axis=1)))
    raise dataset.DataError(f'{where}: images contain NaN or infinite values '
                         f'({bad} of {len(images)} images)')
  if categorical_colours is not None:
    if kind == 'f':
      raise dataset.DataError(f'{where}: colour-id images have dtype {images.dtype}; '
                           'need an integer dtype')
    if images.shape[-1] != 1:
      raise dataset.DataError(f'{where}: colour-id images have shape {images.shape}; '
                           'need one channel')
    lo, hi = int(images.min()), int(images.max())
    if lo < -1 or hi >= categorical_colours:
      raise dataset.DataError(f'{where}: colour ids span {lo}..{hi}; need -1 (padding) '
                           f'to {categorical_colours - 1} (model.num_colours)')
  return images.astype(np.float32)


def check_labels(labels, num_images: int, where: str) -> np.ndarray:
  labels = np.asarray(labels)
  if labels.dtype.kind not in 'iu':
    raise dataset.DataError(f'{where}: labels have dtype {labels.dtype}; need integers')
  if labels.shape != (num_images,):
    raise dataset.DataError(f'{where}: labels have shape {labels.shape}; '
                         f'need ({num_images},), one per image')
  return labels.astype(np.int32)


@dataset.register('npz')
def load_npz(cfg) -> dataset.Dataset:
  path = _path(cfg, 'an .npz file with an `images` array')
  if not os.path.isfile(path):
    raise dataset.DataError(f'npz file not found: {path}')
  try:
    arrays = np.load(path, allow_pickle=False)
    keys = set(arrays.files)
  except Exception as err:  # noqa: BLE001  (any unreadable file: one line)
    raise dataset.DataError(f'cannot read {path} as .npz: {err}') from None
  if 'images' not in keys:
    raise dataset.DataError(f'{path}: no `images` array (found: {", ".join(sorted(keys)) or "none"})')
  try:
    raw = arrays['images']
    raw_labels = arrays['labels'] if 'labels' in keys else None
  except ValueError as err:    # object arrays need pickle: refused
    raise dataset.DataError(f'{path}: {err}') from None
  colours = cfg.model.num_colours if cfg.model.patch_embed == 'colour' else None
  images = check_images(raw, f'{path}', colours)
  labels = None if raw_labels is None else check_labels(raw_labels, len(images), path)
  return _split(cfg, images, labels, 'npz', colours)


def list_folder(root: str):
  """(paths, labels) of an image folder with one subfolder per class (sorted
  class names give labels 0, 1, ...; files sorted by name within a class).
  Raises DataError naming the folder when it has no classes or a class has
  no image files."""
  if not os.path.isdir(root):
    raise dataset.DataError(f'image folder not found: {root}')
  classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
  if not classes:
    raise dataset.DataError(f'{root}: no class subfolders (need one subfolder per class)')
  paths, labels = [], []
  for label, name in enumerate(classes):
    folder = os.path.join(root, name)
    files = sorted(f for f in os.listdir(folder)
                   if f.lower().endswith(IMAGE_EXTENSIONS)
                   and os.path.isfile(os.path.join(folder, f)))
    if not files:
      raise dataset.DataError(f'{folder}: class folder holds no image files '
                           f'({", ".join(IMAGE_EXTENSIONS)})')
    paths.extend(os.path.join(folder, f) for f in files)
    labels.extend([label] * len(files))
  return paths, np.asarray(labels, np.int32)


@dataset.register('folder')
def load_folder(cfg) -> dataset.Dataset:
  """The image folder, decoded into memory; with data.pipeline='grain' the
  train split is read lazily instead (`lazy.split_lazy`)."""
  root = _path(cfg, 'a folder with one subfolder of images per class')
  paths, labels = list_folder(root)
  mode = {1: 'L', 3: 'RGB'}[cfg.data.channels]
  size = tuple(cfg.data.image_size)
  reader = lazy.FileReader(paths, size, mode)
  if cfg.data.pipeline == 'grain':
    return lazy.split_lazy(cfg, reader, len(paths), labels, 'folder')
  images = np.stack([reader(i) for i in range(len(paths))])
  return _split(cfg, images, labels, 'folder')
