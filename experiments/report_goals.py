"""The stable-codebook goals, judged per VQ variant over seeds against its matched no-VQ run.

    python -m experiments.report_goals --workdir runs/x --variants a,b,no_vq_gentle \
        --seeds 100,101,102,103,104 [--out goals.md]

Each goal is judged on one value per run (seed), `jepa_jax.eval.goals.run_values`
and eval.json, with `jepa_jax.eval.metrics`: the mean, its 95% percentile
bootstrap interval and the worst seed are shown, and the goal holds when the
interval's far end is inside it (the mean alone never decides). Goals
against the baseline are paired: per-seed differences against the matched
no-VQ run (`report_health.matched_baselines`) at the same seeds. At least 5
seeds are recommended; a row with fewer says so (the interval of n < 5
values is coarse, that of 1 value is the value itself).

| goal | per-run value | passes when |
|---|---|---|
| usage (train) | min usage of the train split's whole-image tokens over the points after epoch 1 | CI low end >= 90% of K (K <= 1,024), 80% above |
| usage (window) | min training-window usage over the windows after the warm-up end | the same |
| perplexity | min train-token perplexity / K over the points after epoch 1 | CI low end >= 50% |
| restarts | restart events over the whole run / K (after the warm-up end shown) | CI high end <= 1 |
| churn | churn over the last epoch (`jepa_jax.eval.goals`; its span in epochs shown) | CI high end <= 5% |
| probe | target-encoder linear probe, paired difference to the baseline | CI low end >= -1 point (`seed_stats.within`) |
| val loss | val loss without the VQ terms, paired relative gap a_s / b_s - 1 | CI high end <= 5% |
| AMI | code-label AMI minus k-means' AMI on the same tokens (the run's eval.json `kmeans`; runs evaluated before it: the baseline's at the same seed, marked) | CI low end > 0 |
| NMI over shuffle | the same comparison on NMI minus its image-shuffle baseline (eval.json's `code_label_nmi` − `code_label_nmi_shuffled`, the run's and k-means') | CI low end > 0 |
| bag probe | the same comparison on the linear probe of each image's bag of codes (eval.json's `code_label_bag_probe`) | CI low end > 0 |
| alerts | monitor alerts and red flags replayed on the logs; status | none, none aborted |

Why the second code-label row: each image gives T tokens that share its
label, so tokens are not independent samples, and the AMI's chance
correction (scikit-learn's, which assumes they are) misses what the
grouping alone gives. The shuffle baseline permutes the images' labels with
each image's tokens kept together, so NMI minus it counts only what the
codes say about the label beyond which image a token came from; the bag
probe asks per image, with a plain chance level.

Shown, not judged: val usage at the end next to its sampling ceiling (the
val usage the train shares predict for the val token count) and the train
usage at the end.
"""
from __future__ import annotations

import argparse
from typing import Any, Dict, List, Optional, Sequence

from experiments import report_health
from experiments import report_values
from experiments.report_tables import mean_or_none
from jepa_jax import diagnose
from jepa_jax.eval import goals
from jepa_jax.eval import metrics as seed_stats

MIN_SEEDS = 5


def goal_values(run: diagnose.Run) -> Dict[str, Any]:
  """Per-run values the goals judge (None where the run does not log them)."""
  v = report_values.run_values(run)
  ev = run.eval or {}
  own_km = (ev.get('kmeans') or {}).get('code_label_ami') if run.vq_enabled else None
  return {
      **goals.run_values(run), 'seed': int(run.config.get('seed', 0)),
      'val': v.get('final_val_jepa'), 'probe': v.get('tgt_probe'),
      'ami': v.get('code_label_ami'), 'kmeans_ami': v.get('kmeans_ami'),
      'own_kmeans': own_km is not None,
      'nmi_excess': nmi_excess(ev) if run.vq_enabled else None,
      'kmeans_nmi_excess': nmi_excess(ev.get('kmeans') or {}),
      'bag_probe': ev.get('code_label_bag_probe') if run.vq_enabled else None,
      'kmeans_bag_probe': (ev.get('kmeans') or {}).get('code_label_bag_probe'),
      'alerts': sum(diagnose.alert_counts(run).values()) + len(diagnose.red_flags(run)),
      'aborted': run.status in ('aborted', 'failed'),
  }


def nmi_excess(section: Dict[str, Any]) -> Optional[float]:
  """NMI minus its image-shuffle baseline of an eval.json code section (the
  run's top level or its `kmeans`); None when either is missing."""
  nmi, shuffled = section.get('code_label_nmi'), section.get('code_label_nmi_shuffled')
  return None if nmi is None or shuffled is None else float(nmi) - float(shuffled)


def _pct(x) -> str:
  return '–' if x is None else f'{100 * x:.1f}%'


def _pts(x) -> str:
  return f'{100 * x:+.1f} pts'


def _mark(ok: Optional[bool]) -> str:
  return '' if ok is None else (' ✅' if ok else ' ❌')


def _by_seed(vals, key) -> Dict[int, float]:
  return {v['seed']: float(v[key]) for v in vals if v.get(key) is not None}


def _stat_cell(xs: Dict[int, float], higher: bool, fmt, ok, note: str = '') -> str:
  """'mean [low, high], worst w (seed s)' + note + the mark of ok(summary)."""
  if not xs:
    return '–'
  s = seed_stats.summarize(list(xs.values()), list(xs), higher)
  lo, hi = s['ci']
  worst = f", worst {fmt(s['worst'])} (seed {s['worst_seed']})" if s['n'] > 1 else ''
  return f"{fmt(s['mean'])} [{fmt(lo)}, {fmt(hi)}]{worst}{note}" + _mark(ok(s))


def _at_least(goal):
  return lambda s: s['ci'][0] >= goal


def _at_most(goal):
  return lambda s: s['ci'][1] <= goal


def _paired(a: Dict[int, float], b: Dict[int, float], fmt, ok, note: str = '') -> str:
  """`_stat_cell` of the differences a_s - b_s at the seeds both hold."""
  if not (a and b):
    return '–'
  if not set(a) & set(b):
    return 'no common seed'
  d = {s: a[s] - b[s] for s in sorted(set(a) & set(b))}
  return _stat_cell(d, True, fmt, ok, note)


def judge(var: str, vals: List[Dict[str, Any]], base: Optional[List[Dict[str, Any]]]
          ) -> Dict[str, str]:
  """Cells of one variant's row: {goal: 'mean [CI], worst ... ✅/❌'}; vals
  and base: one `goal_values` per seed."""
  del var
  k = vals[0]['k'] or 0
  usage = goals.usage_goal(k)
  m = lambda key: mean_or_none([v.get(key) for v in vals])  # noqa: E731
  cells = {
      'usage': _stat_cell(_by_seed(vals, 'train_usage_min'), True, _pct, _at_least(usage)),
      'window': _stat_cell(_by_seed(vals, 'window_usage_min'), True, _pct, _at_least(usage)),
      'perplexity': _stat_cell(_by_seed(vals, 'perplexity_min'), True, _pct,
                               _at_least(goals.PERPLEXITY_GOAL)),
      'churn': _stat_cell(_by_seed(vals, 'churn'), False, _pct, _at_most(goals.CHURN_GOAL),
                          '' if m('churn_span_epochs') is None else
                          f" (over {m('churn_span_epochs'):.1f} epochs)"),
      'end': f"{_pct(m('val_usage_end'))} ({_pct(m('val_ceiling_end'))}) / "
             f"{_pct(m('train_usage_end'))}"}
  x2 = lambda x: f'{x:.2f}x'  # noqa: E731
  after = m('restarts_after_warmup')
  cells['restarts'] = _stat_cell(_by_seed(vals, 'restarts'), False, x2,
                                 _at_most(goals.RESTARTS_GOAL),
                                 '' if after is None else f'; after warm-up {x2(after)}')
  b = (lambda key: _by_seed(base, key)) if base else (lambda key: {})  # noqa: E731
  cells['probe'] = _paired(_by_seed(vals, 'probe'), b('probe'), _pts,
                           lambda s: seed_stats.within(s, goals.PROBE_WITHIN))
  a, bv = _by_seed(vals, 'val'), b('val')
  gap = {s: a[s] / bv[s] - 1 for s in sorted(set(a) & set(bv)) if bv[s]}
  cells['val'] = ('–' if not (a and bv) else 'no common seed' if not gap else _stat_cell(
      gap, False, lambda x: f'{100 * x:+.1f}%',
      lambda s: seed_stats.within(s, goals.VAL_GAP_GOAL, higher_is_better=False)))
  for key, own, fmt in (('ami', 'kmeans_ami', lambda x: f'{x:+.3f}'),
                        ('nmi_excess', 'kmeans_nmi_excess', lambda x: f'{x:+.4f}'),
                        ('bag_probe', 'kmeans_bag_probe', _pts)):
    km = {v['seed']: v[own] for v in vals if v.get('own_kmeans') and v.get(own) is not None}
    borrowed = {s: x for s, x in b(own).items() if s not in km}
    mine = _by_seed(vals, key)
    cells[key] = _paired(mine, {**borrowed, **km}, fmt, lambda s: s['ci'][0] > 0,
                         ' (k-means of the baseline)' if set(borrowed) & set(mine) else '')
  n_alert = sum(v['alerts'] for v in vals)
  n_abort = sum(v['aborted'] for v in vals)
  cells['alerts'] = f'{n_alert} / {n_abort}' + _mark(n_alert == 0 and n_abort == 0)
  return cells


COLUMNS = (('usage', 'Usage min after epoch 1, train tokens'),
           ('window', 'Usage min, windows after warm-up'),
           ('perplexity', 'Perplexity min / K, train tokens'),
           ('restarts', 'Restarts / K, whole run'), ('churn', 'Churn, last epoch'),
           ('probe', 'Probe Δ (paired)'), ('val', 'Val-loss gap, no VQ terms (paired)'),
           ('ami', 'AMI − k-means AMI (paired)'),
           ('nmi_excess', 'NMI over image shuffle − k-means\' (paired)'),
           ('bag_probe', 'Bag-of-codes probe − k-means\' (paired)'),
           ('alerts', 'Alerts / aborted'),
           ('end', 'Usage at the end: val (ceiling) / train'))


def goals_section(runs: Dict[str, List[diagnose.Run]]) -> List[str]:
  """The goals table of every VQ variant in `runs` (variant -> runs over seeds)."""
  matched = report_health.matched_baselines(runs)
  vals = {var: [goal_values(r) for r in rs] for var, rs in runs.items() if rs}
  vq = [var for var, rs in runs.items() if rs and rs[0].vq_enabled]
  lines = ['## Stable-codebook goals', '',
           'One value per seed; cells: mean [95% bootstrap CI], worst seed; ✅ / ❌ by the '
           "CI's far end (`experiments/report_goals.py`, `jepa_jax/eval/metrics.py`): usage "
           ">= 90% of K (80% above 1,024 codes) on the train split's whole-image tokens at "
           'every point after epoch 1 and in every training window after the warm-up; '
           'perplexity >= 50% of K; restarts over the whole run <= 1x K (after the '
           'warm-up shown); churn over the last epoch <= 5%; paired against the matched no-VQ run at the same '
           'seeds: probe within 1 point, JEPA val-loss gap <= 5%, AMI above k-means\' on '
           'the same tokens, and NMI over its image-shuffle baseline above k-means\' (the '
           "AMI's chance correction takes tokens as independent; the shuffle keeps each "
           "image's tokens together) and the linear probe of each image's bag of codes "
           f"above k-means'; no alert, no abort. Fewer than {MIN_SEEDS} seeds: coarse "
           'intervals, marked.', '',
           '| Variant (seeds) | Baseline | ' + ' | '.join(label for _, label in COLUMNS) + ' |',
           '|---|---|' + '---|' * len(COLUMNS)]
  for var in vq:
    base = matched.get(var)
    cells = judge(var, vals[var], vals.get(base) if base else None)
    n = len(vals[var])
    seeds = f'{n}' + (f', fewer than {MIN_SEEDS}' if n < MIN_SEEDS else '')
    lines.append(f'| {var} ({seeds}) | {base or "none"} | '
                 + ' | '.join(cells[key] for key, _ in COLUMNS) + ' |')
  return lines + ['']


def load_runs(workdir: str, variants: Sequence[str], seeds: Sequence[int]):
  runs = {}
  for var in variants:
    found = []
    for seed in seeds:
      path = report_values.run_dir(workdir, var, seed)
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
