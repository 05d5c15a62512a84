"""scikit-learn's bundled handwritten digits (1,797 8x8 images, 10 classes).

Shipped inside scikit-learn, so nothing is downloaded. Pixels (0..16) are
scaled to [0, 1] and standardized with the train split's mean and std.
"""
from __future__ import annotations

import numpy as np

from jepa_jax.data import dataset


@dataset.register('digits')
def load_digits(cfg) -> dataset.Dataset:
  from sklearn.datasets import load_digits as _load  # lazy: keep import light
  raw = _load()
  images = (raw.images.astype(np.float32) / 16.0)[..., None]  # (N, 8, 8, 1)
  labels = raw.target.astype(np.int32)
  tr, va = dataset.split_indices(len(images), cfg.data.val_fraction, cfg.data.split_seed)
  mean, std = images[tr].mean(), images[tr].std()
  images = (images - mean) / std
  return dataset.Dataset(train_images=images[tr], val_images=images[va],
                      train_labels=labels[tr], val_labels=labels[va], name='digits')
