"""A VQ variant against its matched no-VQ run on the in-run probe trajectory, paired by seed.

    python -m experiments.results.codebook_shapes.trajectory_pairs \
        --workdir experiments/results/codebook_shapes/logs --variant ijepa_vq \
        --baseline ijepa --seeds 0,1,2,3,4

Reads WORKDIR/VARIANT/seed_S/probe_metrics.jsonl (the holdout linear probe
of a fixed subset that training logs, `train.probe_every_steps`) for both
variants and prints one markdown row per quantity: the target encoder's
probe at the end, its best over the run, end − best and end − step 0 (the
gain over the run's random init), per seed (variant vs baseline, %), and the paired difference variant − baseline in points with its
mean, 95% bootstrap interval and worst seed (`jepa_jax.eval.metrics.paired`).
A missing or empty log is one error line, exit status 2, before anything is
printed.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, List, Tuple

from jepa_jax.eval import metrics
from jepa_jax.eval import trajectory
from jepa_jax.run import files as run_files

KEY = 'linear_target'


def quantities(workdir: str, variant: str, seed: int) -> Dict[str, float]:
  """The end, the best, end - best and end - step 0 (the gain over the run's
  random init, its first point) of one run's target trajectory, in points
  (`jepa_jax.eval.trajectory.summary` of its logged points)."""
  run = os.path.join(workdir, variant, f'seed_{seed}')
  p = trajectory.summary(trajectory.points(run))
  if not p:
    raise ValueError(f'{os.path.join(run, run_files.PROBE_METRICS)}: no probe trajectory '
                     '(missing or empty)')
  end, best, start = (100 * p[f'{KEY}_{k}'] for k in ('end', 'best', 'start'))
  return {'end': end, 'best': best, 'end - best': end - best, 'end - step 0': end - start}


def rows(workdir: str, variant: str, baseline: str, seeds: List[int]
         ) -> List[Tuple[str, Dict[int, Tuple[float, float]], Dict]]:
  """[(quantity, {seed: (variant, baseline)}, paired summary)]."""
  return metrics.paired_by_name({s: quantities(workdir, variant, s) for s in seeds},
                                {s: quantities(workdir, baseline, s) for s in seeds},
                                ('end', 'best', 'end - best', 'end - step 0'))


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(prog='python -m experiments.results.codebook_shapes.trajectory_pairs',
                               description=__doc__.split('\n')[0])
  ap.add_argument('--workdir', required=True)
  ap.add_argument('--variant', required=True)
  ap.add_argument('--baseline', required=True)
  ap.add_argument('--seeds', default='0,1,2,3,4')
  args = ap.parse_args(argv)
  try:
    seeds = [int(s) for s in args.seeds.split(',')]
    table = rows(args.workdir, args.variant, args.baseline, seeds)
  except ValueError as err:
    ap.exit(2, f'error: {err}\n')
  print(f'| target probe, % ({args.variant} vs {args.baseline}) | '
        + ' | '.join(f'seed {s}' for s in seeds) + ' | paired Δ, points: mean [95% CI] (worst) |')
  print('|---' * (len(seeds) + 2) + '|')
  for name, values, d in table:
    cells = [f'{values[s][0]:.1f} vs {values[s][1]:.1f} ({values[s][0] - values[s][1]:+.1f})'
             for s in seeds]
    low, high = d['ci']
    print(f'| {name} | ' + ' | '.join(cells) + f" | {d['mean']:+.1f} [{low:+.1f}, {high:+.1f}] "
          f"({d['worst']:+.1f}, seed {d['worst_seed']}) |")
  return 0


if __name__ == '__main__':
  sys.exit(main())
