"""Probe scores of reference features, cached on disk (`evaluate`).

The raw-input ('pixels') probes of `evaluate` are a function of the dataset
only, not of the run, and the random-init encoder's ('random_init') of the
dataset, architecture and seed (shared by every variant with those), yet
each costs as much as a trained encoder's probes (on ARC: a five-fold
logistic regression per grid property, minutes per run). `cached`
keeps their scores in a folder, keyed by a SHA-256 of everything they depend
on: the feature and label arrays (dtype, shape, bytes), the probe's keyword
arguments, `PROTOCOL` and scikit-learn's version. A hit returns the stored
scores (JSON keeps Python floats exactly); a miss computes and stores them.

Folder: `$JEPA_JAX_PROBE_CACHE`, else `~/.cache/jepa_jax/probes`; set the
variable to '' for no cache. A folder that cannot be written only costs the
saving: the scores are computed as without a cache.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from typing import Callable, Dict, Optional

import numpy as np

ENV = 'JEPA_JAX_PROBE_CACHE'
DEFAULT_DIR = os.path.join('~', '.cache', 'jepa_jax', 'probes')
# Bump when the probes' protocol changes (folds, models, metrics).
PROTOCOL = 1


def cache_dir() -> Optional[str]:
  """The cache folder, or None when `$JEPA_JAX_PROBE_CACHE` is ''."""
  path = os.environ.get(ENV, DEFAULT_DIR)
  return os.path.expanduser(os.path.expandvars(path)) if path else None


def key(*arrays, **kwargs) -> str:
  """SHA-256 over the arrays (dtype, shape, bytes), the keyword arguments,
  PROTOCOL and scikit-learn's version."""
  import sklearn  # noqa: PLC0415
  h = hashlib.sha256()
  for a in arrays:
    a = np.ascontiguousarray(a)
    h.update(f'{a.dtype.str}{a.shape}'.encode())
    h.update(a.tobytes())
  h.update(json.dumps(kwargs, sort_keys=True).encode())
  h.update(f'protocol={PROTOCOL} sklearn={sklearn.__version__}'.encode())
  return h.hexdigest()


def cached(fn: Callable[..., Dict[str, float]], *arrays, **kwargs) -> Dict[str, float]:
  """fn(*arrays, **kwargs), read from the cache when it holds it."""
  folder = cache_dir()
  if folder is None:
    return fn(*arrays, **kwargs)
  path = os.path.join(folder, key(*arrays, **kwargs) + '.json')
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    pass
  scores = fn(*arrays, **kwargs)
  try:
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix='.tmp')   # unique: concurrent runs
    with os.fdopen(fd, 'w') as f:
      json.dump(scores, f)
    os.replace(tmp, path)
  except OSError:
    pass
  return scores
