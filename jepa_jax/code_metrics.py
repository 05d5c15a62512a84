"""Code metrics of `evaluate`: how well discrete codes of tokens ground
per-image labels, the k-means baseline of a run without VQ, and the
codebook's usage on the val and train splits.

  code_metrics  NMI (arithmetic normalisation), its label-shuffle baseline
                (images' labels permuted, mean of NUM_SHUFFLES) and AMI of
                token codes against their images' labels (scikit-learn)
  kmeans_codes  codes of val tokens under k-means fitted on train tokens
"""
from __future__ import annotations

from typing import Any, Dict

import jax.numpy as jnp
import numpy as np

from jepa_jax import codebook_health as health
from jepa_jax import vq as vq_lib


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


def kmeans_codes(train_tokens, val_tokens, num_codes: int, max_fit: int = 20_000,
                 cosine: bool = False):
  """Codes of val tokens (N, T, D) under k-means with `num_codes` centres
  fitted on train tokens (M, D) (at most max_fit of them, seed 0).

  cosine=True: the same fit, then each val token goes to its nearest
  l2-normalised centre (`vq.nearest_codes`, float32), the assignment of a
  layer with l2-normalised codes (`vq.l2_normalize`).
  """
  from sklearn.cluster import KMeans  # noqa: PLC0415
  rng = np.random.default_rng(0)
  fit = train_tokens[rng.permutation(len(train_tokens))[:max_fit]].astype(np.float64)
  km = KMeans(n_clusters=min(num_codes, len(fit)), n_init=1, max_iter=100,
              random_state=0).fit(fit)
  shape, flat = val_tokens.shape[:-1], val_tokens.reshape(-1, val_tokens.shape[-1])
  if not cosine:
    return km.predict(flat.astype(np.float64)).reshape(shape)
  centres = km.cluster_centers_
  centres = centres / np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-12)
  codes = vq_lib.nearest_codes(jnp.asarray(centres, jnp.float32), jnp.asarray(flat))[0]
  return np.asarray(codes).reshape(shape)


def codes_section(codes, valid, label_sets, num_codes) -> Dict[str, Any]:
  """Code metrics of val codes (means over the label sets), usage summary."""
  per = [code_metrics(codes, va, valid) for _, va in label_sets.values()]
  out = {f'code_label_{k}': float(np.mean([p[k] for p in per])) for k in CODE_METRICS}
  counts = health.code_counts(codes, num_codes, valid)
  out['codes_used_val'] = int((counts > 0).sum())
  out['codebook'] = {**health.usage_summary(counts, 'vq'),
                     'sorted_counts': health.sorted_counts(counts)}
  return out


def train_usage(train_codes, train_valid, val_codes, val_valid, num_codes):
  """Train-split usage and the val usage expected from the train shares
  (`codebook_health.expected_usage`): the ceiling the val split's size puts
  on val usage."""
  train = health.code_counts(train_codes, num_codes, train_valid)
  n_val = int(health.code_counts(val_codes, num_codes, val_valid).sum())
  return {'train_usage_ratio': float((train > 0).mean()),
          'train_perplexity': health.usage_summary(train, 'vq')['vq_perplexity'],
          'val_tokens': n_val,
          'expected_val_usage_ratio': health.expected_usage(train, n_val)}
