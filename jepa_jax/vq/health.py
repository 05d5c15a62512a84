"""Codebook health from code assignments and the codebook's bookkeeping (host, NumPy).

Plain functions of arrays, used at every measurement point
(`jepa_jax.eval.measure`) and by `jepa_jax.evaluate`. Definitions:

  counts c_k       tokens assigned to code k (sum of weights with weights)
  usage ratio      #{k: c_k > 0} / K
  perplexity       exp(-sum_k p_k ln p_k),  p_k = c_k / sum_j c_j
                   (1: one code; K: all codes equally)
  dead codes       #{k: c_k = 0}
  codes >= 5       #{k: c_k >= 5}: codes that hold a handful of tokens, not
                   a stray one
  churn            share of a fixed token set whose code differs from the
                   previous measurement point's (weighted: padding ignored)
  window usage     #{k: last_used_k > t - W} / K: codes the train step
                   assigned in the last W steps (from the step's own counts)
  restarts         refresh restarts since the previous point (events), and
                   the share of codes restarted at least once since then;
                   a CVQ re-anchoring step with rate alpha_k >= 0.5 (the code
                   moved at least halfway onto a feature) counts as one
  code age         t - born_k in steps (born: last (re)initialisation);
                   median, and share younger than one epoch
  expected usage   (1/K) sum_k [1 - (1 - p_k)^n]: the usage ratio n tokens
                   drawn from the shares p would show (val usage's ceiling)
  train usage      the usage summary of the train split's whole-image tokens
                   (where the codebook is used), its perplexity / K, and the
                   sampling ceiling of val usage: expected usage of the train
                   shares at the val token count
  restart split    restart events over the whole run / K, split at the
                   warm-up end into warm-up and after-warm-up shares
"""
from __future__ import annotations

import base64
import zlib
from typing import Any, Dict, Optional

import numpy as np


# The share of a run after which restarts are judged (`warmup_end`).
GOAL_BOUNDARY = 0.1


def warmup_end(total_steps: int, refresh_interval: int, refresh_warmup_steps: int) -> int:
  """The step at which the warm-up ends for the restart goals:
  max(floor(GOAL_BOUNDARY x total_steps), refresh_warmup_steps), the
  refresh warm-up counting only when the quantizer refreshes (interval > 0)."""
  return max(int(GOAL_BOUNDARY * total_steps),
             int(refresh_warmup_steps) if refresh_interval else 0)


def code_counts(codes, num_codes: int, weights=None) -> np.ndarray:
  """c_k (K,) float64 over every entry of codes (weights: same shape);
  negative codes (no code: padding) are not counted."""
  flat = np.asarray(codes).reshape(-1)
  w = None if weights is None else np.asarray(weights, np.float64).reshape(-1)
  keep = flat >= 0
  return np.bincount(flat[keep], weights=None if w is None else w[keep],
                     minlength=num_codes).astype(np.float64)


def usage_summary(counts, prefix: str = 'vq') -> Dict[str, float]:
  """Usage ratio, codes used, perplexity, dead codes and codes holding >= 5
  tokens of the counts c (K,) (module docstring)."""
  c = np.asarray(counts, np.float64)
  k = len(c)
  total = c.sum()
  p = c[c > 0] / total if total > 0 else np.zeros(0)
  used = int((c > 0).sum())
  return {f'{prefix}_usage_ratio': used / k, f'{prefix}_codes_used': used,
          f'{prefix}_perplexity': float(np.exp(-np.sum(p * np.log(p)))) if used else 0.0,
          f'{prefix}_dead_codes': k - used,
          f'{prefix}_codes_ge5': int((c >= 5).sum())}


def expected_usage(counts, n: int) -> float:
  """Usage ratio expected of n tokens drawn i.i.d. from the code shares of
  `counts` (K,): (1/K) sum_k [1 - (1 - p_k)^n], p_k = c_k / sum c (the
  expected number of distinct values among n draws; occupancy problem, e.g.
  Feller, An Introduction to Probability Theory, vol. 1, ch. II). With the
  train split's counts and n = the val tokens, it is the val usage that a
  codebook used exactly as on train would show: the ceiling of val usage
  set by the val split's size, not by the codebook. Estimated from a train
  sample, it is biased low when n exceeds the sample's tokens: codes the
  sample missed count as p_k = 0 (docs/assessment.md).
  """
  c = np.asarray(counts, np.float64)
  total = c.sum()
  if total <= 0 or len(c) == 0:
    return 0.0
  return float(np.mean(1.0 - np.power(1.0 - c / total, int(n))))


def train_usage(train_counts, num_val_tokens: int) -> Dict[str, float]:
  """The train-token usage summary (`usage_summary`, prefix 'vq_train'), its
  perplexity as a share of K (vq_train_perplexity_ratio = perplexity / K),
  the train tokens counted, and val usage's sampling ceiling
  (vq_val_usage_ceiling = `expected_usage`(train_counts, num_val_tokens)).
  Evenness is judged by the perplexity: K when every code holds an equal
  share, whatever the token count."""
  c = np.asarray(train_counts, np.float64)
  out = usage_summary(c, 'vq_train')
  out['vq_train_perplexity_ratio'] = out['vq_train_perplexity'] / len(c)
  out['vq_train_tokens'] = int(c.sum())
  out['vq_val_usage_ceiling'] = expected_usage(c, num_val_tokens)
  return out


def restart_split(events: int, warmup_events: Optional[int], warmup_end: int,
                  num_codes: int) -> Dict[str, Any]:
  """Restart events over the whole run split at the warm-up end: `events`
  (the run's vq_restarts_total), `warmup_events` (the total at the last point
  at or before step `warmup_end`; None: unknown), after_warmup_events =
  events - warmup_events, each also / K (`*_per_codebook`: 1.0 = as many
  restarts as the codebook has codes)."""
  k = float(num_codes)
  after = None if warmup_events is None else int(events) - int(warmup_events)
  return {'events': int(events), 'per_codebook': int(events) / k,
          'warmup_events': warmup_events,
          'warmup_per_codebook': None if warmup_events is None else warmup_events / k,
          'after_warmup_events': after,
          'after_warmup_per_codebook': None if after is None else after / k,
          'warmup_end_step': int(warmup_end)}


def warmup_total(steps, totals, warmup_end: int) -> int:
  """The cumulative restart total at the last point with step <= warmup_end
  (0 before the first point): the warm-up's events, from logged points."""
  before = [t for s, t in zip(steps, totals) if s <= warmup_end]
  return int(before[-1]) if before else 0


def churn(previous, codes, weights=None) -> float:
  """Share of tokens whose code changed: sum_i w_i [prev_i != code_i] / sum_i w_i."""
  prev, cur = np.asarray(previous).reshape(-1), np.asarray(codes).reshape(-1)
  if prev.shape != cur.shape:
    raise ValueError(f'churn: {prev.shape} previous codes, {cur.shape} now')
  w = np.ones(cur.shape) if weights is None else np.asarray(weights, np.float64).reshape(-1)
  return float(np.sum(w * (prev != cur)) / max(w.sum(), 1e-300))


def window_usage(last_used, step: int, window: int) -> float:
  """Share of codes the train step assigned in its last `window` steps:
  #{k: last_used_k > step - window, last_used_k > 0} / K."""
  last = np.asarray(last_used)
  return float(np.mean((last > step - window) & (last > 0)))


def age_summary(born, step: int, steps_per_epoch: int) -> Dict[str, float]:
  """Median code age (steps since the last (re)initialisation) and the share
  of codes younger than one epoch."""
  age = step - np.asarray(born, np.int64)
  return {'vq_code_age_median': float(np.median(age)),
          'vq_young_share': float(np.mean(age < steps_per_epoch))}


def restarts_since(restarts, born, previous_total: int, previous_step: int
                   ) -> Dict[str, float]:
  """Restart events since the previous point and the share of codes restarted
  at least once since then (born after previous_step)."""
  total = int(np.sum(restarts))
  return {'vq_restarts': total - previous_total, 'vq_restarts_total': total,
          'vq_restarted_share': float(np.mean(np.asarray(born) > previous_step))}


def sorted_counts(counts) -> list:
  """The usage histogram: token counts per code, largest first (ints)."""
  return [int(x) for x in np.sort(np.asarray(counts))[::-1]]


def pack_codes(codes) -> Optional[str]:
  """int codes -> a short JSON-able string (zlib + base64 of int32), for the
  checkpoints (churn needs the previous point's codes after a resume)."""
  if codes is None:
    return None
  raw = np.ascontiguousarray(np.asarray(codes, np.int32)).tobytes()
  return base64.b64encode(zlib.compress(raw, 6)).decode('ascii')


def unpack_codes(text: Optional[str], shape) -> Optional[np.ndarray]:
  """Inverse of `pack_codes` (None stays None)."""
  if text is None:
    return None
  raw = zlib.decompress(base64.b64decode(text.encode('ascii')))
  return np.frombuffer(raw, np.int32).reshape(shape).copy()
