"""One run's codebook usage under several definitions, at every checkpoint.

    python -m experiments.results.reference_fidelity.usage_definitions \
        --workdir RUN [--steps 25,50] [--thresholds 1e-5,1e-3,0.1] [--out F]

The reference's no-refresh run logged a usage that declined slowly, 17.7%
-> 4.4% of 768 codes over 2,850 steps, where this project's `vq_no_refresh`
falls to 1-3 codes in 50 steps. A usage count depends on what is counted;
this script counts, from the saved states of one run (`checkpoint.every_steps`
small, `checkpoint.keep` large), the shares of the K codes that are:

  val          hit by the val split's whole-image tokens (the project's
               embedding metric `vq_usage_ratio`, recomputed)
  train        hit by the train split's whole-image tokens
  ever         hit by any train-step assignment so far: usage_k > 0, where
               `usage` counts assignments since the last refresh (a run
               without refresh: since step 0)
  not_dead     above the refresh rule's line over that window:
               usage_k >= threshold * mean_j usage_j (`codebook.dead_codes`
               with the config's `vq.refresh_usage_threshold`), i.e. a share
               of the window's assignments >= threshold / K
  ema>T        an EMA cluster size N_k above T, for each T of --thresholds
               (N_k starts at 1 and decays by `vq.ema_decay` each step a code
               gets nothing: a code unused since step 0 falls below T at
               step ln(T) / ln(decay))

EMA runs only for the `ema>T` columns (a gradient codebook has no N_k).
Unpadded data only, as `usage_bound` (whose checkpoint walk this shares).
"""
from __future__ import annotations

from typing import Dict, Sequence

import numpy as np

from experiments import json_rows
from experiments.results.usage_bound import usage_bound


def state_shares(usage, cluster_size, refresh_threshold: float,
                 thresholds: Sequence[float]) -> Dict[str, float]:
  """The `ever`, `not_dead` and `ema>T` shares of the module docstring from
  the quantizer state's `usage` counts and EMA `cluster_size` (None for a
  gradient codebook: no `ema>T`)."""
  usage = np.asarray(usage, np.float64)
  total = usage.sum()
  out = {'ever': float(np.mean(usage > 0)),
         'not_dead': float(np.mean(usage >= refresh_threshold * usage.mean()))
                     if total > 0 else 1.0}
  if cluster_size is not None:
    sizes = np.asarray(cluster_size, np.float64)
    for t in thresholds:
      out[f'ema>{t:g}'] = float(np.mean(sizes > t))
  return out


def definitions_at(dataset, setup, state, fns, refresh_threshold: float,
                   thresholds: Sequence[float]) -> Dict[str, float]:
  """Every share of the module docstring for one train state (`fns` from
  `usage_bound.make_fns`; the codes from `usage_bound.state_codes`)."""
  spec, vq = setup.quantizer, state['vq']
  codes = usage_bound.state_codes(dataset, setup, state, fns)
  return {'val': len(np.unique(codes['val_codes'])) / spec.num_codes,
          'train': len(np.unique(codes['train_codes'])) / spec.num_codes,
          **state_shares(vq.usage, vq.cluster_size if spec.ema else None,
                         refresh_threshold, thresholds)}


def main(argv=None) -> int:
  ap = json_rows.parser('experiments.results.reference_fidelity.usage_definitions', __doc__)
  ap.add_argument('--steps', default='', help='checkpoint steps (default: all saved)')
  ap.add_argument('--thresholds', default='1e-5,1e-3,0.1',
                  help='EMA cluster-size thresholds T of the ema>T columns')
  args = ap.parse_args(argv)
  try:
    thresholds = [float(t) for t in args.thresholds.split(',') if t.strip()]
  except ValueError:
    ap.error(f'--thresholds {args.thresholds}: comma-separated numbers, e.g. 1e-5,0.1')
  with usage_bound.checkpoints(ap, args) as (cfg, dataset, setup, saved):
    fns = usage_bound.make_fns(setup, cfg.seed)
    usage_bound.walk(saved, lambda state: definitions_at(
        dataset, setup, state, fns, cfg.vq.refresh_usage_threshold, thresholds), args.out)
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
