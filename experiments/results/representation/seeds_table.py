"""The `ijepa.py` shapes screen over seeds: paired gains over random init.

    python -m experiments.results.representation.seeds_table [--seeds 0,1,2,3,4] [--run ijepa]
    python -m experiments.results.representation.seeds_table --run ijepa_ema99 --against ijepa

Reads, per seed S, the files this study keeps (`shapes_s0/` for seed 0,
`shapes_s1_s4/` for the others): the in-run holdout trajectory
(`RUN_sS_probe_metrics.jsonl`, RUN = `--run`: `ijepa` for the 3-epoch
runs, `ijepa_6ep` for the 6-epoch ones; end against step 0), and the
`shapes_baselines` probes of the final target encoder against the random
init of the same seed on the mean token, on the main object's own tokens,
and on the mean token of bigger objects than it was trained on
(`mean_pool_`, `object_pool_`, `big_scale_5000_mean_pool_RUN_sS.json`).
Prints one markdown row per probe: each seed's gain in points, their mean
with its 95% bootstrap interval and the worst seed
(`jepa_jax.eval.metrics.paired`); then the trajectory's end as a share of
the supervised ceiling of the same seed (`supervised_sS.json`: the same
architecture trained on the labels, probed on the same holdout rows), with
its mean, interval and worst seed (`metrics.summarize`); `--ceiling`
names it: `supervised` is trained for 3 epochs at width 64, the budget of
the `ijepa` runs, `supervised_w128_6ep` for 6 epochs at width 128.

`--against BASE` compares two recipes instead (a screen's runs that have
no `shapes_baselines` probes): the in-run trajectories of RUN and BASE at
the same seeds, one row per probe point they share (and one for their
ends when those differ), target and context encoders; each cell RUN vs
BASE, then the paired difference RUN - BASE with its interval and worst
seed.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from jepa_jax.eval import metrics
from jepa_jax.run import files as run_files

HERE = os.path.dirname(os.path.abspath(__file__))
PROBES = (('mean token, 2,000 / 1,000', 'mean_pool'),
          ('main object\'s own tokens, 2,000 / 1,000', 'object_pool'),
          ('mean token on bigger objects, 5,000 / 2,000', 'big_scale_5000_mean_pool'))


def _folder(seed: int) -> str:
  return os.path.join(HERE, 'shapes_s0' if seed == 0 else 'shapes_s1_s4')


def _probe(seed: int, prefix: str, run: str):
  """(trained, random init) of one shapes_baselines file, in %."""
  with open(os.path.join(_folder(seed), f'{prefix}_{run}_s{seed}.json')) as f:
    shape = json.load(f)['probe']['shape']
  return 100 * shape['trained_encoder'], 100 * shape['random_encoder']


def _trajectory(seed: int, run: str):
  """(end, step 0) of the in-run trajectory's target encoder, in %."""
  rows = run_files.read_jsonl(os.path.join(_folder(seed), f'{run}_s{seed}_probe_metrics.jsonl'))
  return 100 * rows[-1]['linear_target'], 100 * rows[0]['linear_target']


def _points(seed: int, run: str, encoder: str):
  """{step: probe %} of one run's in-run trajectory (`linear_ENCODER`)."""
  rows = run_files.read_jsonl(os.path.join(_folder(seed), f'{run}_s{seed}_probe_metrics.jsonl'))
  return {r['step']: 100 * r[f'linear_{encoder}'] for r in rows}


def against(seeds, run: str, base: str):
  """[(row name, {seed: (run, base)})]: each probe step both trajectories
  hold at every seed, then their ends where a run's last step is not such
  a point, for the target and context encoders."""
  out = []
  for encoder in ('target', 'context'):
    a = {s: _points(s, run, encoder) for s in seeds}
    b = {s: _points(s, base, encoder) for s in seeds}
    shared = sorted(set.intersection(*(set(a[s]) & set(b[s]) for s in seeds)))
    for step in shared:
      out.append((f'{encoder}, step {step}', {s: (a[s][step], b[s][step]) for s in seeds}))
    if any(max(a[s]) != max(b[s]) or max(a[s]) not in shared for s in seeds):
      ends = {s: (a[s][max(a[s])], b[s][max(b[s])]) for s in seeds}
      out.append((f'{encoder}, end', ends))
  return out


def _print_paired(table) -> None:
  """One markdown row per (name, {seed: (a, b)}): cells 'a vs b (a - b)',
  then `metrics.paired`'s mean, interval and worst seed."""
  for name, values in table:
    gain = metrics.paired({s: v[0] for s, v in values.items()},
                          {s: v[1] for s, v in values.items()})
    cells = [f'{a:.1f} vs {b:.1f} ({a - b:+.1f})' for a, b in values.values()]
    low, high = gain['ci']
    print(f'| {name} | ' + ' | '.join(cells) + f" | {gain['mean']:+.1f} [{low:+.1f}, "
          f"{high:+.1f}] ({gain['worst']:+.1f}, seed {gain['worst_seed']}) |")


def _ceiling(seed: int, name: str = 'supervised') -> float:
  """The supervised ceiling's end, in %, on the trajectory's holdout rows
  (`NAME_sS.json`)."""
  with open(os.path.join(_folder(seed), f'{name}_s{seed}.json')) as f:
    return 100 * json.load(f)['trajectory'][-1]['linear']


def rows(seeds, run: str = 'ijepa'):
  """[(probe name, {seed: (trained, init)})] for every probe of the table."""
  out = [('in-run trajectory, end (target)', {s: _trajectory(s, run) for s in seeds})]
  for name, prefix in PROBES:
    out.append((name, {s: _probe(s, prefix, run) for s in seeds}))
  return out


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--seeds', default='0,1,2,3,4')
  ap.add_argument('--run', default='ijepa',
                  help="the runs' name before _sS: ijepa, ijepa_6ep, ijepa_w128_6ep")
  ap.add_argument('--ceiling', default='supervised',
                  help="the supervised runs' name before _sS: supervised (3 epochs, 64 wide), "
                       "supervised_w128_6ep")
  ap.add_argument('--against', default=None,
                  help="another run's name (e.g. ijepa): pair the two trajectories instead")
  args = ap.parse_args(argv)
  seeds = [int(s) for s in args.seeds.split(',')]
  print(f"| {'probe point' if args.against else 'probe'} | " + ' | '.join(f'seed {s}' for s in seeds)
        + ' | mean gain [95% CI] (worst seed) |')
  print('|---' * (len(seeds) + 2) + '|')
  if args.against:
    _print_paired(against(seeds, args.run, args.against))
    return 0
  table = rows(seeds, args.run)
  _print_paired(table)
  shares = {s: (end, _ceiling(s, args.ceiling)) for s, (end, _) in table[0][1].items()}
  share = metrics.summarize([100 * e / c for e, c in shares.values()], list(shares))
  cells = [f'{100 * e / c:.1f} ({e:.1f} of {c:.1f})' for e, c in shares.values()]
  low, high = share['ci']
  print(f'| trajectory end, % of the supervised ceiling (`{args.ceiling}`) | ' + ' | '.join(cells)
        + f" | {share['mean']:.1f} [{low:.1f}, {high:.1f}] ({share['worst']:.1f}, "
        f"seed {share['worst_seed']}) |")
  return 0


if __name__ == '__main__':
  sys.exit(main())
