"""Verdicts over seeds: means with 95% bootstrap intervals, paired
differences against a matched baseline, and the worst seed.

A study runs a method and its matched baseline at the same seeds; each seed
gives one number per run. A verdict such as "the VQ costs at most 1 probe
point" is then judged on the per-seed differences d_s = a_s - b_s, not on
the difference of two means, so the seed-to-seed spread they share cancels.

Formulas:

  mean            m = (1/n) sum_s x_s
  bootstrap CI    percentile interval of the mean: draw B resamples of the n
                  values with replacement (numpy's PCG64 seeded with `seed`),
                  take each resample's mean m*_b, and report the
                  (1 - level)/2 and (1 + level)/2 quantiles of {m*_b}
                  (Efron & Tibshirani 1993, ch. 13). With n values the
                  resample means take at most C(2n-1, n) distinct values, so
                  at n = 5 the interval is coarse; it is reported with n.
  worst seed      the seed whose value is worst for the stated direction
                  (the minimum when higher is better).

A "within X" goal holds when the interval's far end is inside X
(`within`): the mean alone never decides it.
"""
from __future__ import annotations

from typing import Dict, Sequence

import numpy as np

NUM_RESAMPLES = 10_000
LEVEL = 0.95


def bootstrap_ci(values: Sequence[float], level: float = LEVEL,
                 num_resamples: int = NUM_RESAMPLES, seed: int = 0):
  """(low, high): the percentile bootstrap interval of the mean of `values`
  (module docstring). One value gives (x, x)."""
  x = np.asarray(values, np.float64).reshape(-1)
  if x.size == 0:
    raise ValueError('bootstrap_ci: no values')
  if not 0 < level < 1:
    raise ValueError(f'bootstrap_ci: level must be in (0, 1), got {level}')
  rng = np.random.default_rng(seed)
  means = x[rng.integers(0, x.size, size=(num_resamples, x.size))].mean(axis=1)
  low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
  return float(low), float(high)


def summarize(values: Sequence[float], seeds: Sequence[int] = None,
              higher_is_better: bool = True, level: float = LEVEL) -> Dict:
  """{'n', 'mean', 'ci': [low, high], 'worst', 'worst_seed', 'values'} of
  one number per seed (`seeds` name them; default 0..n-1)."""
  x = np.asarray(values, np.float64).reshape(-1)
  seeds = list(range(x.size)) if seeds is None else [int(s) for s in seeds]
  if len(seeds) != x.size:
    raise ValueError(f'summarize: {x.size} values but {len(seeds)} seeds')
  i = int(np.argmin(x) if higher_is_better else np.argmax(x))
  low, high = bootstrap_ci(x, level)
  return {'n': int(x.size), 'mean': float(x.mean()), 'ci': [low, high],
          'worst': float(x[i]), 'worst_seed': seeds[i],
          'values': dict(zip(seeds, x.tolist()))}


def paired(a: Dict[int, float], b: Dict[int, float],
           higher_is_better: bool = True, level: float = LEVEL) -> Dict:
  """`summarize` of the per-seed differences a_s - b_s over the seeds both
  hold (a: the method, b: its matched baseline, each {seed: value}).
  Raises when they share no seed."""
  common = sorted(set(a) & set(b))
  if not common:
    raise ValueError('paired: the two runs share no seed')
  diff = [float(a[s]) - float(b[s]) for s in common]
  return summarize(diff, common, higher_is_better, level)


def within(summary: Dict, bound: float, higher_is_better: bool = True) -> bool:
  """Whether a paired difference a - b stays within `bound` (>= 0) of the
  baseline in the direction that hurts: the interval's far end on that side
  is inside it (low >= -bound when higher is better, high <= bound when
  lower is better). Being better than the baseline never fails it."""
  low, high = summary['ci']
  return low >= -bound if higher_is_better else high <= bound
