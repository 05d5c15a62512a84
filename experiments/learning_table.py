"""Does the encoder learn? One table over seeds, from an assessment's runs.

    python -m experiments.learning_table --workdir runs/repr_digits \
        [--variants no_vq_gentle,ijepa,lejepa] [--out table.md]

Reads WORKDIR/<variant>/seed_<s>/eval.json (written by `experiments.assess`
or `python -m jepa_jax.evaluate`) and prints, per variant, over its seeds:

  target / context   the trained encoders' linear probe (eval.json's 5-fold
                     protocol): mean, 95% bootstrap interval, worst seed
  random init, pixels
                     the same probe of the encoder at its initialisation
                     (the run's architecture and seed) and of the raw input
  over random init, over pixels
                     the paired per-seed gain of the target encoder, in
                     points, with its interval and worst seed
                     (`jepa_jax.eval.metrics.paired`)
  end - best         the probe trajectory's last point minus its best point
                     (probe_metrics.jsonl's holdout protocol), in points: 0
                     when the probe never falls below its best
  chance             the most frequent class's share
  over BASE          with `--versus BASE`: the paired per-seed gain of the
                     target encoder over BASE's at the same seeds (points)

Every number is a mean over the seeds the variant has; a row names its seeds.
With `--label NAME` the probes are those of one label of eval.json's
`probes` (e.g. an ARC grid property or a shapes factor) instead of their
mean, and end - best is left out (the trajectory is the mean's).
"""
from __future__ import annotations

import glob
import json
import os
import re
from typing import Dict, List, Optional

from jepa_jax import errors
from jepa_jax.eval import metrics as seed_stats


def _probe(ev: Dict, name: str) -> Optional[float]:
  entry = ev.get(name)
  return None if not isinstance(entry, dict) else entry.get('linear_probe_acc')


def _trajectory_drop(ev: Dict) -> Optional[float]:
  points = [p['linear_target'] for p in ev.get('probe_trajectory') or []
            if p.get('linear_target') is not None]
  return 100.0 * (points[-1] - max(points)) if points else None


def load(workdir: str, variant: str) -> Dict[int, Dict]:
  """{seed: eval.json} of WORKDIR/<variant>/seed_<s>/ (two-stage: its last stage)."""
  out = {}
  for path in sorted(glob.glob(os.path.join(workdir, variant, 'seed_*'))):
    match = re.fullmatch(r'seed_(\d+)', os.path.basename(path))
    evals = sorted(glob.glob(os.path.join(path, '**', 'eval.json'), recursive=True))
    if match and evals:
      with open(evals[-1]) as f:
        out[int(match.group(1))] = json.load(f)
  return out


def for_label(evals: Dict[int, Dict], label: str) -> Dict[int, Dict]:
  """{seed: eval.json} with the probes of `probes[label]` in place of the
  mean ones (no trajectory); KeyError naming the first seed without it."""
  out = {}
  for seed, ev in evals.items():
    probes = ev.get('probes') or {}
    if not isinstance(probes.get(label), dict):
      raise KeyError(f'seed {seed} has no probe of label {label!r} '
                     f'(labels: {", ".join(sorted(probes)) or "none"})')
    out[seed] = probes[label]
  return out


def _fmt(summary: Optional[Dict], scale: float = 100.0, sign: bool = False) -> str:
  if summary is None:
    return '–'
  f = '{:+.1f}' if sign else '{:.1f}'
  low, high = summary['ci']
  return (f"{f.format(scale * summary['mean'])} [{f.format(scale * low)}, "
          f"{f.format(scale * high)}] (worst {f.format(scale * summary['worst'])}, "
          f"seed {summary['worst_seed']})")


def row(variant: str, evals: Dict[int, Dict]) -> Dict:
  """The table's numbers for one variant (fractions; gains in fractions too)."""
  def per_seed(fn):
    return {s: v for s, v in ((s, fn(ev)) for s, ev in evals.items()) if v is not None}
  def summary(values, higher=True):
    return seed_stats.summarize(list(values.values()), list(values), higher) if values else None
  target = per_seed(lambda ev: _probe(ev, 'target_encoder'))
  random_init = per_seed(lambda ev: _probe(ev, 'random_init'))
  pixels = per_seed(lambda ev: _probe(ev, 'pixels'))
  drop = per_seed(_trajectory_drop)
  return {
      'variant': variant, 'seeds': sorted(evals),
      'target': summary(target),
      'context': summary(per_seed(lambda ev: _probe(ev, 'context_encoder'))),
      'random_init': summary(random_init), 'pixels': summary(pixels),
      'over_random_init': seed_stats.paired(target, random_init) if random_init else None,
      'over_pixels': seed_stats.paired(target, pixels) if pixels else None,
      'end_minus_best_points': summary(drop),
      'chance': summary(per_seed(lambda ev: ev.get('chance'))),
  }


def add_versus(rows: List[Dict], evals: Dict[str, Dict[int, Dict]], base: str) -> None:
  """Each row gets 'over_base': the paired gain of its target encoder's probe
  over `base`'s at the seeds both have (None for `base` itself)."""
  def target(v):
    return {s: _probe(ev, 'target_encoder') for s, ev in evals[v].items()
            if _probe(ev, 'target_encoder') is not None}
  for r in rows:
    common = set(target(r['variant'])) & set(target(base))
    r['over_base'] = (None if r['variant'] == base or not common
                      else seed_stats.paired(target(r['variant']), target(base)))


def markdown(rows: List[Dict], base: Optional[str] = None) -> str:
  extra = [f'target over {base} (points)'] if base else []
  head = ('| ' + ' | '.join(['variant', 'seeds', 'target', 'context', 'random init', 'pixels',
                              'target over random init (points)',
                              'target over pixels (points)',
                              'trajectory end − best (points)', 'chance', *extra]) + ' |\n'
          + '|---' * (10 + len(extra)) + '|\n')
  lines = []
  for r in rows:
    tail = [_fmt(r.get('over_base'), sign=True)] if base else []
    lines.append('| ' + ' | '.join([
        r['variant'], ','.join(map(str, r['seeds'])), _fmt(r['target']), _fmt(r['context']),
        _fmt(r['random_init']), _fmt(r['pixels']),
        _fmt(r['over_random_init'], sign=True), _fmt(r['over_pixels'], sign=True),
        _fmt(r['end_minus_best_points'], scale=1.0, sign=True), _fmt(r['chance']),
        *tail]) + ' |')
  return head + '\n'.join(lines) + '\n'


def main(argv=None) -> int:
  ap = errors.ArgumentParser(prog='python -m experiments.learning_table',
                             description=__doc__.split('\n\n')[0])
  ap.add_argument('--workdir', required=True, help='an assessment folder')
  ap.add_argument('--variants', help='comma-separated (default: every folder that has runs)')
  ap.add_argument('--versus', help='a variant every row is paired against (its target probe)')
  ap.add_argument('--label', help="one label's probes (eval.json's `probes`), not their mean")
  ap.add_argument('--out', help='also write the table (Markdown) and rows (JSON) here')
  args = ap.parse_args(argv)
  if not os.path.isdir(args.workdir):
    ap.error(f'--workdir {args.workdir}: no such folder')
  variants = ([v.strip() for v in args.variants.split(',') if v.strip()] if args.variants
              else sorted(d for d in os.listdir(args.workdir)
                          if os.path.isdir(os.path.join(args.workdir, d))))
  evals = {v: ev for v in variants if (ev := load(args.workdir, v))}
  if args.label:
    try:
      evals = {v: for_label(ev, args.label) for v, ev in evals.items()}
    except KeyError as e:
      ap.error(f'--label {args.label}: {e.args[0]}')
  rows = [row(v, ev) for v, ev in evals.items()]
  if not rows:
    ap.error(f'--workdir {args.workdir}: no eval.json under <variant>/seed_<s>/')
  if args.versus:
    if args.versus not in evals:
      ap.error(f'--versus {args.versus}: no eval.json under {args.workdir}/{args.versus}/seed_<s>/')
    add_versus(rows, evals, args.versus)
  table = markdown(rows, args.versus)
  print(table, end='')
  if args.out:
    with open(args.out, 'w') as f:
      f.write(table)
    with open(os.path.splitext(args.out)[0] + '.json', 'w') as f:
      json.dump(rows, f, indent=1)
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
