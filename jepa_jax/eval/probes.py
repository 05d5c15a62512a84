"""Probes of frozen features: the protocol of `evaluate` and of the probe
trajectory (`probe_trajectory`), as functions of plain arrays.

  linear probe   multinomial logistic regression (scikit-learn, L2, C=1,
                 lbfgs, max_iter=5000) on standardised features
                 (StandardScaler fitted on the probe's training rows)
  k-NN           majority vote of the k nearest neighbours, cosine distance

`probe_scores` (eval.json) cross-validates both over train and val together
(`NUM_FOLDS` folds, shuffled with seed 0: every image predicted once by a
probe fitted on the other folds), each accuracy p with its 95% interval
1.96 sqrt(p (1 - p) / N). `linear_probe_holdout` (the trajectory, cheaper)
fits the linear probe on train rows and scores it on val rows. `gains` is
how far a trained encoder's probe is above two references, in points.

The fixed probe set of `evaluate`: at most `max_images` labelled images.

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

Probe scores of reference features, cached on disk (`evaluate`).

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

Code metrics of `evaluate`: how well discrete codes of tokens ground
per-image labels, the k-means baseline of a run without VQ, and the
codebook's usage on the val and train splits.

  code_metrics  NMI (arithmetic normalisation), its label-shuffle baseline
                (images' labels permuted, mean of NUM_SHUFFLES) and AMI of
                token codes against their images' labels (scikit-learn)
  kmeans_codes  codes of val tokens under k-means fitted on train tokens
  bag probe     `probe_scores`' linear probe of each image's bag of codes,
                h_k = (valid tokens with code k) / (valid tokens), fitted
                and scored per image: a plain chance level, where the token
                metrics count an image's tokens, which share its label, as
                independent samples
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from typing import Any, Callable, Dict, Optional, Tuple

import jax.numpy as jnp
import numpy as np

from jepa_jax.vq import codebook as vq_lib
from jepa_jax.vq import health


NUM_FOLDS = 5


def ci95(p: float, n: int) -> float:
  """1.96 sqrt(p (1 - p) / n): the normal-approximation 95% half-interval."""
  return float(1.96 * np.sqrt(p * (1 - p) / max(n, 1)))


def chance(y) -> float:
  """Accuracy of always answering the most frequent label of `y`."""
  counts = np.bincount(y)
  return float(counts.max() / counts.sum())


def _linear_model():
  from sklearn.linear_model import LogisticRegression  # noqa: PLC0415
  from sklearn.pipeline import make_pipeline  # noqa: PLC0415
  from sklearn.preprocessing import StandardScaler  # noqa: PLC0415
  return make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))


def _rows(x) -> np.ndarray:
  return np.asarray(x).reshape(len(x), -1).astype(np.float64)


def probe_scores(train_x, train_y, val_x, val_y, k: int,
                 folds: int = NUM_FOLDS, knn: bool = True) -> Dict[str, float]:
  """Linear-probe and k-NN (k neighbours, at most the rows a fold fits on)
  accuracy of features, cross-validated over train and val together
  (module docstring): {linear_probe_acc, linear_probe_ci95, knn_acc, knn_ci95}
  (knn=False: the linear probe's alone)."""
  from sklearn.model_selection import KFold, cross_val_predict  # noqa: PLC0415
  from sklearn.neighbors import KNeighborsClassifier  # noqa: PLC0415
  x = np.concatenate([_rows(train_x), _rows(val_x)])
  y = np.concatenate([train_y, val_y])
  cv = KFold(folds, shuffle=True, random_state=0)
  n_fit = len(x) * (folds - 1) // folds
  out = {}
  models = [('linear_probe', _linear_model())]
  if knn:
    models.append(('knn', KNeighborsClassifier(n_neighbors=min(k, n_fit), metric='cosine')))
  for name, model in models:
    acc = float(np.mean(cross_val_predict(model, x, y, cv=cv) == y))
    out[f'{name}_acc'], out[f'{name}_ci95'] = acc, ci95(acc, len(y))
  return out


def linear_probe_holdout(train_x, train_y, val_x, val_y) -> float:
  """Accuracy on (val_x, val_y) of the linear probe fitted on (train_x,
  train_y). Labels the training rows lack are mispredicted, never refused;
  a single training class predicts that class."""
  train_y, val_y = np.asarray(train_y), np.asarray(val_y)
  if len(np.unique(train_y)) < 2:               # logistic regression needs two
    return float(np.mean(val_y == train_y[0]))
  model = _linear_model().fit(_rows(train_x), train_y)
  return float(np.mean(model.predict(_rows(val_x)) == val_y))


def subset(num_train: int, num_val: int, max_train: int, max_val: int,
           seed: int) -> Tuple[np.ndarray, np.ndarray]:
  """(train indices, val indices), sorted: at most max_train of range(num_train)
  and max_val of range(num_val), drawn without replacement by
  numpy.random.default_rng(seed) (train first); all when there are fewer."""
  rng = np.random.default_rng(seed)
  tr = np.sort(rng.permutation(num_train)[:max_train])
  va = np.sort(rng.permutation(num_val)[:max_val])
  return tr, va


def gains(trained: Dict[str, Dict[str, float]], pixels: Dict[str, float],
          random_init: Optional[Dict[str, float]]) -> Dict[str, object]:
  """How much the better trained encoder (by linear probe) of `trained`
  ({encoder: probe scores}) is above the pixels' and the random-init
  encoder's probes: 100 x (accuracy - reference accuracy), in points, for
  the linear probe and the k-NN of that encoder."""
  best = max(trained, key=lambda e: trained[e]['linear_probe_acc'])
  acc = trained[best]
  out: Dict[str, object] = {'encoder': best, 'linear_probe_acc': acc['linear_probe_acc'],
                            'knn_acc': acc['knn_acc']}
  for ref_name, ref in (('pixels', pixels), ('random_init', random_init)):
    if ref is None:
      continue
    for probe in ('linear_probe', 'knn'):
      out[f'{probe}_over_{ref_name}_points'] = 100.0 * (
          acc[f'{probe}_acc'] - ref[f'{probe}_acc'])
  return out


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


CODE_METRICS = ('nmi', 'nmi_shuffled', 'ami')
NUM_SHUFFLES = 10


def code_metrics(codes, labels, valid=None, num_shuffles: int = NUM_SHUFFLES,
                 seed: int = 0) -> Dict[str, float]:
  """NMI, its label-shuffle baseline and AMI of token codes (N, T) against
  per-image labels (N,) (valid (N, T): the tokens counted). The shuffle
  permutes the images' labels (each image keeps its tokens together)."""
  from sklearn.metrics import adjusted_mutual_info_score  # noqa: PLC0415
  from sklearn.metrics import normalized_mutual_info_score  # noqa: PLC0415
  codes = np.asarray(codes)
  keep = np.ones(codes.shape, bool) if valid is None else np.asarray(valid, bool)
  flat = codes[keep]
  tok = lambda y: np.broadcast_to(np.asarray(y)[:, None], codes.shape)[keep]  # noqa: E731
  rng = np.random.default_rng(seed)
  shuffled = [normalized_mutual_info_score(tok(rng.permutation(labels)), flat)
              for _ in range(num_shuffles)]
  return {'nmi': float(normalized_mutual_info_score(tok(labels), flat)),
          'nmi_shuffled': float(np.mean(shuffled)),
          'ami': float(adjusted_mutual_info_score(tok(labels), flat))}


PREDICT_ROWS = 65_536   # tokens k-means assigns at once (bounds the float64 copy)


def kmeans_codes(train_tokens, val_tokens, num_codes: int, max_fit: int = 20_000,
                 cosine: bool = False):
  """Codes of val tokens (N, T, D) under k-means with `num_codes` centres
  fitted on train tokens (M, D) (at most max_fit of them, seed 0); given a
  tuple of token arrays, a tuple of their codes from the one fit. Tokens are
  assigned `PREDICT_ROWS` at a time.

  cosine=True: the same fit, then each val token goes to its nearest
  l2-normalised centre (`vq.nearest_codes`, float32), the assignment of a
  layer with l2-normalised codes (`vq.l2_normalize`).
  """
  from sklearn.cluster import KMeans  # noqa: PLC0415
  rng = np.random.default_rng(0)
  fit = train_tokens[rng.permutation(len(train_tokens))[:max_fit]].astype(np.float64)
  km = KMeans(n_clusters=min(num_codes, len(fit)), n_init=1, max_iter=100,
              random_state=0).fit(fit)
  if cosine:
    centres = km.cluster_centers_
    centres = jnp.asarray(centres / np.maximum(
        np.linalg.norm(centres, axis=1, keepdims=True), 1e-12), jnp.float32)

  def assign(rows):
    if cosine:
      return np.asarray(vq_lib.nearest_codes(centres, jnp.asarray(rows))[0])
    return km.predict(rows.astype(np.float64))

  def codes(tokens):
    flat = tokens.reshape(-1, tokens.shape[-1])
    parts = [assign(flat[i:i + PREDICT_ROWS]) for i in range(0, len(flat), PREDICT_ROWS)]
    return (np.concatenate(parts) if parts else np.zeros(0, np.int32)).reshape(
        tokens.shape[:-1])

  return tuple(map(codes, val_tokens)) if isinstance(val_tokens, tuple) else codes(val_tokens)


def bag_of_codes(codes, num_codes: int, valid=None) -> np.ndarray:
  """(N, K) float32: each image's share of its valid tokens per code, from
  codes (N, T) (valid (N, T) bool; None: every token)."""
  codes = np.asarray(codes)
  keep = np.ones(codes.shape, bool) if valid is None else np.asarray(valid, bool)
  rows = np.broadcast_to(np.arange(len(codes))[:, None], codes.shape)
  bag = np.zeros((len(codes), num_codes), np.float32)
  np.add.at(bag, (rows[keep], codes[keep]), 1.0)
  return bag / np.maximum(keep.sum(axis=1, keepdims=True), 1)


def codes_section(codes, valid, label_sets, num_codes, train=None) -> Dict[str, Any]:
  """Code metrics of val codes (means over the label sets), usage summary;
  train = (train codes, train validity): also `code_label_bag_probe`, the
  bag probe (module docstring) over train and val images."""
  per = [code_metrics(codes, va, valid) for _, va in label_sets.values()]
  out = {f'code_label_{k}': float(np.mean([p[k] for p in per])) for k in CODE_METRICS}
  if train is not None:
    bags = bag_of_codes(train[0], num_codes, train[1]), bag_of_codes(codes, num_codes, valid)
    out['code_label_bag_probe'] = float(np.mean([
        probe_scores(bags[0], tr, bags[1], va, k=1, knn=False)['linear_probe_acc']
        for tr, va in label_sets.values()]))
  counts = health.code_counts(codes, num_codes, valid)
  out['codes_used_val'] = int((counts > 0).sum())
  out['codebook'] = {**health.usage_summary(counts, 'vq'),
                     'sorted_counts': health.sorted_counts(counts)}
  return out


def train_usage(train_codes, train_valid, val_codes, val_valid, num_codes):
  """Train-split usage and the val usage expected from the train shares
  (`health.expected_usage`): the ceiling the val split's size puts
  on val usage."""
  train = health.code_counts(train_codes, num_codes, train_valid)
  n_val = int(health.code_counts(val_codes, num_codes, val_valid).sum())
  return {'train_usage_ratio': float((train > 0).mean()),
          'train_perplexity': health.usage_summary(train, 'vq')['vq_perplexity'],
          'val_tokens': n_val,
          'expected_val_usage_ratio': health.expected_usage(train, n_val)}
