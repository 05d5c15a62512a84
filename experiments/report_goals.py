"""The stable-codebook goals, judged per VQ variant against its matched no-VQ run.

    python -m experiments.report_goals --workdir runs/x --variants a,b,no_vq_gentle \
        --seeds 100,101,102 [--out goals.md]

Each goal is judged on the mean over seeds of a per-run value (the worst seed
is shown next to it where it matters). A VQ variant's baseline is the no-VQ
variant of the same assessment that shares its loss, model, masking, data and
optimiser settings (`report_health.matched_baselines`).

| goal | per-run value | passes when |
|---|---|---|
| usage | minimum over every measurement point from `monitor.usage_from_epoch` (epoch 1) on | >= 90% of K (K <= 1,024), >= 80% (larger K) |
| perplexity | minimum over the same points | >= 50% of K |
| restarts | restart events after the first 10% of training, per epoch, share of K | <= 1% |
| churn | share of val tokens whose code changed between the last two points | <= 5% |
| ranks | final context / target effective rank | >= 90% of the baseline's |
| val loss | final val loss without the VQ terms | <= 105% of the baseline's |
| probe | target-encoder probe (5-fold CV) | >= baseline's - the run's 95% interval |
| AMI | code-label AMI (ARC: mean over grid properties) | above every other VQ variant's and the baseline's k-means AMI |
| alerts | monitor alerts and red flags replayed on the logs; status | none, not aborted |

Shown, not judged: usage at the end on val and on the train split, and the
val usage a codebook used exactly as on train would show with this many val
tokens (`codebook_health.expected_usage`: the ceiling the val split's size
puts on val usage; from `evaluate`'s eval.json).
"""
from __future__ import annotations

import argparse
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from experiments import report_health
from jepa_jax import diagnose

USAGE_GOAL_SMALL, USAGE_GOAL_LARGE, LARGE_K = 0.90, 0.80, 1024
PERPLEXITY_GOAL = 0.50
RESTARTS_GOAL = 0.01
CHURN_GOAL = 0.05
RANK_GOAL = 0.90
VAL_GOAL = 1.05


def goal_values(run: diagnose.Run) -> Dict[str, Any]:
  """Per-run values the goals judge (None where the run does not log them)."""
  from experiments import report  # noqa: PLC0415  (report imports this module)
  k = (run.config.get('vq') or {}).get('codebook_size')
  judged = diagnose.usage_records(run)
  perp = [r['vq_perplexity'] for r in judged if r.get('vq_perplexity') is not None]
  v = report.run_values(run)
  return {
      'k': k,
      'usage_min': v.get('usage_min_judged'),
      'perplexity_min': min(perp) / k if perp and k else None,
      'restarts': v.get('restarts_per_epoch'),
      'churn': v.get('churn_end'),
      'ctx_rank': v.get('ctx_rank_final'), 'tgt_rank': v.get('tgt_rank_final'),
      'val': v.get('final_val_jepa'),
      'probe': v.get('tgt_probe'), 'probe_ci': v.get('tgt_probe_ci95'),
      'ami': v.get('code_label_ami'), 'kmeans_ami': v.get('kmeans_ami'),
      'usage_end': v.get('usage_end'),
      'train_usage': ((run.eval or {}).get('codebook') or {}).get('train_usage_ratio'),
      'val_ceiling': ((run.eval or {}).get('codebook') or {}).get('expected_val_usage_ratio'),
      'alerts': sum(diagnose.alert_counts(run).values()) + len(diagnose.red_flags(run)),
      'aborted': run.status in ('aborted', 'failed'),
  }


def _mean(xs) -> Optional[float]:
  xs = [x for x in xs if x is not None]
  return float(np.mean(xs)) if xs else None


def _pct(x) -> str:
  return '–' if x is None else f'{100 * x:.1f}%'


def _mark(ok: Optional[bool]) -> str:
  return '' if ok is None else (' ✅' if ok else ' ❌')


def judge(var: str, vals: List[Dict[str, Any]], base: Optional[List[Dict[str, Any]]],
          other_ami: Sequence[float]) -> Dict[str, str]:
  """Cells of one variant's row: {goal: 'value ✅/❌'}."""
  m = lambda key: _mean([v[key] for v in vals])  # noqa: E731
  worst = lambda key: min((v[key] for v in vals if v[key] is not None), default=None)  # noqa: E731
  k = vals[0]['k'] or 0
  usage_goal = USAGE_GOAL_SMALL if k <= LARGE_K else USAGE_GOAL_LARGE
  cells = {}
  u = m('usage_min')
  cells['usage'] = (f"{_pct(u)} (worst {_pct(worst('usage_min'))})"
                    + _mark(None if u is None else u >= usage_goal))
  cells['end'] = f"{_pct(m('usage_end'))} / {_pct(m('train_usage'))} ({_pct(m('val_ceiling'))})"
  p = m('perplexity_min')
  cells['perplexity'] = _pct(p) + _mark(None if p is None else p >= PERPLEXITY_GOAL)
  r = m('restarts')
  cells['restarts'] = _pct(r) + _mark(None if r is None else r <= RESTARTS_GOAL)
  c = m('churn')
  cells['churn'] = _pct(c) + _mark(None if c is None else c <= CHURN_GOAL)
  bm = (lambda key: _mean([v[key] for v in base])) if base else (lambda key: None)  # noqa: E731
  for key in ('ctx_rank', 'tgt_rank'):
    a, b = m(key), bm(key)
    cells[key] = ('–' if a is None else f'{a:.2f}') + (
        '' if a is None or b is None else f' ({100 * (a - b) / b:+.1f}%)'
        + _mark(a >= RANK_GOAL * b))
  a, b = m('val'), bm('val')
  cells['val'] = ('–' if a is None else f'{a:.4f}') + (
      '' if a is None or b is None else f' ({100 * (a - b) / b:+.1f}%)' + _mark(a <= VAL_GOAL * b))
  a, ci, b = m('probe'), m('probe_ci'), bm('probe')
  cells['probe'] = ('–' if a is None else f'{_pct(a)} ± {_pct(ci)}') + (
      '' if None in (a, ci, b) else f' (base {_pct(b)})' + _mark(a >= b - ci))
  a, km = m('ami'), bm('kmeans_ami')
  beats = [x for x in other_ami if x is not None]
  ok = None if a is None else (a > max(beats, default=-1.0) and (km is None or a > km))
  cells['ami'] = ('–' if a is None else f'{a:.3f}') + (
      '' if km is None else f' (k-means {km:.3f})') + _mark(ok)
  n_alert = sum(v['alerts'] for v in vals)
  n_abort = sum(v['aborted'] for v in vals)
  cells['alerts'] = f'{n_alert} / {n_abort}' + _mark(n_alert == 0 and n_abort == 0)
  return cells


COLUMNS = (('usage', 'Usage min after epoch 1'),
           ('end', 'Usage at the end: val / train (val ceiling)'), ('perplexity', 'Perplexity min / K'),
           ('restarts', 'Restarts / epoch after 10%'), ('churn', 'Churn, last points'),
           ('ctx_rank', 'Context rank (Δ)'), ('tgt_rank', 'Target rank (Δ)'),
           ('val', 'Val loss, no VQ terms (Δ)'), ('probe', 'Probe'),
           ('ami', 'AMI'), ('alerts', 'Alerts / aborted'))


def goals_section(runs: Dict[str, List[diagnose.Run]]) -> List[str]:
  """The goals table of every VQ variant in `runs` (variant -> runs over seeds)."""
  matched = report_health.matched_baselines(runs)
  vals = {var: [goal_values(r) for r in rs] for var, rs in runs.items() if rs}
  vq = [var for var, rs in runs.items() if rs and rs[0].vq_enabled]
  lines = ['## Stable-codebook goals', '',
           'Means over seeds; ✅ / ❌ against the goal (see `experiments/report_goals.py`: '
           'usage >= 90% of K (80% above 1,024 codes) and perplexity >= 50% of K at every '
           'point after epoch 1; restarts after the first 10% <= 1% of K per epoch; churn '
           '<= 5%; ranks >= 90% and val loss <= 105% of the matched no-VQ run; probe within '
           'its 95% interval of it; AMI above every other VQ variant here and the '
           "baseline's k-means; no alert, no abort).", '',
           '| Variant (seeds) | Baseline | ' + ' | '.join(label for _, label in COLUMNS) + ' |',
           '|---|---|' + '---|' * len(COLUMNS)]
  for var in vq:
    base = matched.get(var)
    others = [_mean([v['ami'] for v in vals[o]]) for o in vq if o != var]
    cells = judge(var, vals[var], vals.get(base) if base else None, others)
    lines.append(f'| {var} ({len(vals[var])}) | {base or "none"} | '
                 + ' | '.join(cells[key] for key, _ in COLUMNS) + ' |')
  return lines + ['']


def load_runs(workdir: str, variants: Sequence[str], seeds: Sequence[int]):
  from experiments import report  # noqa: PLC0415
  runs = {}
  for var in variants:
    found = []
    for seed in seeds:
      path = report.run_dir(workdir, var, seed)
      try:
        found.append(diagnose.load_run(path))
      except (OSError, ValueError):
        continue
    runs[var] = [r for r in found if r.epochs]
  return runs


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(prog='python -m experiments.report_goals',
                               description=__doc__.splitlines()[0])
  ap.add_argument('--workdir', required=True)
  ap.add_argument('--variants', required=True)
  ap.add_argument('--seeds', default='0')
  ap.add_argument('--out', default=None, help='write the table here (default: print it)')
  a = ap.parse_args(argv)
  seeds = [int(s) for s in a.seeds.split(',')]
  text = '\n'.join(goals_section(load_runs(a.workdir, a.variants.split(','), seeds)))
  if a.out:
    with open(a.out, 'w') as f:
      f.write(text + '\n')
  print(text)
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
