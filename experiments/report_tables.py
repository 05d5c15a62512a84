"""The assessment report's tables: cell formatting, one `Row` per metric, and
the rows of each table (experiments/report.py assembles the report).

Several seeds: a cell shows mean ± sample standard deviation (ddof=1) over the
seeds that produced the value; the Winner column compares the means.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from jepa_jax import diagnose

def _num(x: float, spec: str) -> str:
  if spec == '%':
    return f'{100 * x:.1f}%'
  return format(x, spec)


def mean_std(xs: Sequence[Optional[float]], spec: str) -> Optional[str]:
  xs = [x for x in xs if x is not None]
  if not xs:
    return None
  if len(xs) == 1:
    return _num(xs[0], spec)
  m, s = float(np.mean(xs)), float(np.std(xs, ddof=1))
  if spec == '%':
    return f'{100 * m:.1f} ± {100 * s:.1f}%'
  return f'{_num(m, spec)} ± {_num(s, spec)}'


def mean_or_none(xs) -> Optional[float]:
  """The mean of the values that are not None, or None."""
  xs = [x for x in xs if x is not None]
  return float(np.mean(xs)) if xs else None


class Row:
  """One table row: `cell(values_of_seeds) -> (text, score)`; the Winner is the
  variant with the best score (`better` 'max' / 'min'; None: no winner)."""

  def __init__(self, label: str, cell: Callable, better: Optional[str] = None):
    self.label, self.cell, self.better = label, cell, better


def scalar(key: str, spec: str, mark: Optional[Callable] = None):
  def cell(vs):
    xs = [v.get(key) for v in vs]
    text = mean_std(xs, spec)
    if text is None:
      return 'N/A', None
    m = mean_or_none(xs)
    return (f'{text} {mark(m)}' if mark else text), m
  return cell


def rank_mark(must: float, alert: float = 3.0):
  return lambda x: '✅' if x > must else ('⚠️' if x >= alert else '❌')


def usage_mark(x):
  return '✅' if x > 0.15 else ('⚠️' if x >= 0.10 else '❌')


def ranged(prefix: str, spec: str, mark=None):
  """'final (min–max)': the final value over seeds, and the lowest and highest
  value any seed logged."""
  def cell(vs):
    fin = [v.get(f'{prefix}_final') for v in vs]
    if mean_or_none(fin) is None:
      return 'N/A', None
    lo = min(v[f'{prefix}_min'] for v in vs if v.get(f'{prefix}_min') is not None)
    hi = max(v[f'{prefix}_max'] for v in vs if v.get(f'{prefix}_max') is not None)
    text = f'{mean_std(fin, spec)} ({_num(lo, spec)}–{_num(hi, spec)})'
    return (f'{text} {mark(mean_or_none(fin))}' if mark else text), mean_or_none(fin)
  return cell


def epochs_cell(vs):
  done = [v['epochs'] for v in vs]
  planned = vs[0]['num_epochs']
  frac = mean_or_none([d / planned for d in done]) if planned else None
  count = str(done[0]) if len(set(done)) == 1 else mean_std(done, '.1f')
  text = f'{count}/{planned}' + (f' ({frac:.0%})' if frac is not None else '')
  return text, frac


def early_stop_cell(vs):
  eps = [v['early_stop_epoch'] for v in vs if v['early_stop_epoch'] is not None]
  if not eps:
    return f'No (0/{len(vs)})', 0.0
  return (f'Yes ({len(eps)}/{len(vs)}: epoch {", ".join(map(str, eps))})',
          -len(eps) / len(vs))


def status_cell(vs):
  c = Counter(v['status'] for v in vs)
  return ', '.join(f'{k} {n}/{len(vs)}' for k, n in sorted(c.items())), None


def spike_cell(vs):
  sp = [v['val_spike'] for v in vs if v['val_spike'] is not None]
  if not sp:
    return 'N/A', None
  worst = max(range(len(vs)), key=lambda i: vs[i]['val_spike'] or 0)
  if max(sp) <= 1.0:
    return 'None (never above the best before)', -1.0
  flag = ' ❌' if max(sp) > 1.5 else ''
  rises = sum(x > 1.0 for x in sp)
  return (f'x{vs[worst]["val_spike"]:.3f} at epoch {vs[worst]["val_spike_epoch"]}'
          f'{" (worst seed)" if len(vs) > 1 else ""}; rose in {rises}/{len(vs)} seeds'
          f'{flag}', -max(sp))


def best_val_cell(vs):
  text = mean_std([v.get('best_val_loss') for v in vs], '.4f')
  if text is None:
    return 'N/A', None
  return (f'{text} (epoch {", ".join(str(v["best_val_epoch"]) for v in vs)})',
          mean_or_none([v.get('best_val_loss') for v in vs]))


def label_cell(key):
  def cell(vs):
    c = Counter(v.get(key) for v in vs)
    if set(c) <= {None, diagnose.NA}:
      return 'N/A', None
    if len(c) == 1:
      return str(next(iter(c))), None
    return ', '.join(f'{k} ({n}/{len(vs)})' for k, n in c.most_common()), None
  return cell


def codes_cell(start_end: str):
  def cell(vs):
    u = [v.get(f'usage_{start_end}') for v in vs]
    if mean_or_none(u) is None:
      return 'N/A', None
    codes = mean_std([v.get(f'codes_{start_end}') for v in vs], '.0f')
    return f'{mean_std(u, "%")} ({codes} codes) {usage_mark(mean_or_none(u))}', mean_or_none(u)
  return cell


def render_table(title: str, rows: Sequence[Row], variants: Sequence[str],
                 values: Dict[str, List[Dict[str, Any]]]) -> List[str]:
  head = ['Metric', *variants, 'Winner']
  lines = [f'### {title}', '', '| ' + ' | '.join(head) + ' |',
           '|' + '|'.join('---' for _ in head) + '|']
  for row in rows:
    cells, scores = [], {}
    for var in variants:
      vs = values.get(var) or []
      if not vs:
        cells.append('missing')
        continue
      text, score = row.cell(vs)
      cells.append(text)
      if score is not None:
        scores[var] = score
    winner = '–'
    if row.better and scores:
      best = (max if row.better == 'max' else min)(scores.values())
      winner = ' / '.join(v for v, s in scores.items() if np.isclose(s, best))
    lines.append(f'| **{row.label}** | ' + ' | '.join(cells) + f' | {winner} |')
  return lines + ['']


# ---------------------------------------------------------------- sections

STABILITY = [Row('Epochs completed', epochs_cell, 'max'),
             Row('Status', status_cell),
             Row('Early stopping', early_stop_cell, 'max'),
             Row('Val loss spike (worst val loss / best before)', spike_cell, 'max')]
LOSSES = [Row('Final train loss', scalar('final_train_loss', '.4f'), 'min'),
          Row('Final val loss', scalar('final_val_loss', '.4f'), 'min'),
          Row('Best val loss', best_val_cell, 'min'),
          Row('Final val loss without the VQ terms', scalar('final_val_jepa', '.4f'), 'min'),
          Row('Final val InfoNCE', scalar('final_val_infonce', '.4f'), 'min')]
EMBEDDING = [Row('Context effective rank, final (range)',
                 ranged('ctx_rank', '.2f', rank_mark(5.0)), 'max'),
             Row('Target effective rank, final (range)',
                 ranged('tgt_rank', '.2f', rank_mark(10.0)), 'max'),
             # No winner: the strict λmin/λmax reads ~0 for every 64-D run here.
             Row('Context spread (covariance effective rank), final',
                 scalar('ctx_spread_final', '.2f'), 'max'),
             Row('Target spread (covariance effective rank), final',
                 scalar('tgt_spread_final', '.2f'), 'max'),
             # No winner: λmin/λmax (float64) is ~1e-14 or below for every run here.
             Row('Context isotropy, final (range)', ranged('ctx_iso', '.2e')),
             Row('Target isotropy, final (range)', ranged('tgt_iso', '.2e'))]
CODEBOOK = [Row('VQ usage (start)', codes_cell('start'), 'max'),
            Row('VQ usage (end)', codes_cell('end'), 'max'),
            Row('VQ usage (min after epoch 1)', scalar('usage_min_judged', '%', usage_mark),
                'max'),
            Row('Val usage sampling ceiling (end: expected from the train shares)',
                scalar('val_ceiling_end', '%')),
            Row('Train-token usage (min after epoch 1)', scalar('train_usage_min', '%'),
                'max'),
            Row('Train-token usage (end)', scalar('train_usage_end', '%'), 'max'),
            Row('Training-window usage (min after warm-up)', scalar('window_usage_min', '%'),
                'max'),
            Row('Train-token perplexity / K (min after epoch 1)',
                scalar('perplexity_min', '%'), 'max'),
            Row('VQ usage (max over run)', scalar('usage_max', '%'), 'max'),
            Row('Training-window usage (end)', scalar('window_usage_end', '%'), 'max'),
            Row('Masked-context usage (end)', scalar('context_usage_end', '%'), 'max'),
            Row('Codes holding ≥ 5 val tokens (end)', scalar('codes_ge5_end', '.0f'), 'max'),
            Row('Code perplexity (end)', scalar('perplexity_end', '.1f'), 'max'),
            Row('Churn at the last point (share of val tokens)', scalar('churn_end', '%'),
                'min'),
            Row('Restarts over the whole run / K', scalar('restarts', '.2f'), 'min'),
            Row('Restarts after the warm-up end / K', scalar('restarts_after_warmup', '.2f'),
                'min'),
            Row('Restarts after 10% of training, per epoch (share of codebook)',
                scalar('restarts_per_epoch', '%'), 'min'),
            Row('Codes younger than one epoch (end)', scalar('young_share_end', '%'), 'min'),
            Row('VQ usage trajectory (2nd half)', label_cell('trajectory'))]
def probe_cell(prefix: str):
  def cell(vs):
    acc = mean_or_none([v.get(f'{prefix}_probe') for v in vs])
    if acc is None:
      return 'N/A', None
    ci = mean_or_none([v.get(f'{prefix}_probe_ci95') for v in vs])
    text = mean_std([v.get(f'{prefix}_probe') for v in vs], '%')
    return (text + (f' (CI ±{100 * ci:.1f})' if ci is not None else '')), acc
  return cell


DOWNSTREAM = [Row('Linear probe acc., target encoder', probe_cell('tgt'), 'max'),
              Row('k-NN acc., target encoder', scalar('tgt_knn', '%'), 'max'),
              Row('Linear probe acc., context encoder', probe_cell('ctx'), 'max'),
              Row('k-NN acc., context encoder', scalar('ctx_knn', '%'), 'max'),
              Row('Code–label AMI (val tokens; chance 0)', scalar('code_label_ami', '.3f'),
                  'max'),
              Row('Code–label NMI (val tokens)', scalar('nmi', '.3f')),
              Row('Code–label NMI with shuffled labels (chance level)',
                  scalar('code_label_nmi_shuffled', '.3f')),
              Row("k-means AMI on the run's own tokens (K = codebook size)",
                  scalar('kmeans_ami', '.3f'), 'max'),
              Row('Codes used on val images', scalar('codes_used_val', '.0f'), 'max'),
              Row('Raw pixels: linear probe / k-NN (baseline)',
                  lambda vs: (f"{mean_std([v.get('pix_probe') for v in vs], '%')} / "
                              f"{mean_std([v.get('pix_knn') for v in vs], '%')}", None)),
              Row('Random-init encoder: linear probe / k-NN (baseline)',
                  lambda vs: (f"{mean_std([v.get('rnd_probe') for v in vs], '%')} / "
                              f"{mean_std([v.get('rnd_knn') for v in vs], '%')}", None)),
              Row('Chance (majority class)', scalar('chance', '%'))]
def property_rows(props: Sequence[str]) -> List[Row]:
  """Rows of the grid-property probe table (ARC evaluations)."""
  rows = []
  for p in props:
    rows += [Row(f'`{p}`: linear probe, target encoder', scalar(f'{p}_tgt_probe', '%'), 'max'),
             Row(f'`{p}`: linear probe, context encoder', scalar(f'{p}_ctx_probe', '%'), 'max'),
             Row(f'`{p}`: code–property NMI', scalar(f'{p}_nmi', '.3f'), 'max'),
             Row(f'`{p}`: one-hot cells probe / chance (baseline)',
                 lambda vs, p=p: (f"{mean_std([v.get(f'{p}_pix_probe') for v in vs], '%')} / "
                                  f"{mean_std([v.get(f'{p}_chance') for v in vs], '%')}", None)),
             Row(f'`{p}`: random-init encoder probe (baseline)',
                 scalar(f'{p}_rnd_probe', '%'))]
  return rows


SPEED = [Row('Wall time per run [s]', scalar('wall_time_s', '.0f'), 'min'),
         Row('Steps/s (excl. compile)', scalar('steps_per_s', '.2f'), 'max')]


