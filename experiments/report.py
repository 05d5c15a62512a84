"""The assessment report: tables in the reference's shape and plots, from run folders.

`write_report(workdir, variants, seeds, meta)` reads WORKDIR/<variant>/seed_<s>/
(config.json, summary.json, the JSONL logs, eval.json), and writes
WORKDIR/report.md and WORKDIR/plots/*.png. Every number comes from those files.

Several seeds: a cell shows mean ± sample standard deviation (ddof=1) over the
seeds that produced the value; the Winner column compares the means.
"""
from __future__ import annotations

import os
from collections import Counter
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from experiments import report_health
from jepa_jax import diagnose
from jepa_jax import monitor

PLOTS = ('vq_usage.png', 'effective_ranks.png', 'losses.png')


def run_dir(workdir: str, variant: str, seed: int) -> str:
  return os.path.join(workdir, variant, f'seed_{seed}')


# ---------------------------------------------------------------- per-run values

def run_values(run: diagnose.Run) -> Dict[str, Any]:
  """The scalars the tables show, for one run (None where not applicable)."""
  v: Dict[str, Any] = {'status': run.status, 'epochs': len(run.epochs),
                       'num_epochs': run.num_epochs}
  v['early_stop_epoch'] = (len(run.epochs) - 1 if run.status == 'early_stopped' else None)
  vals = [e['val_loss_mean'] for e in run.epochs]
  ratios = [(vals[i] / min(vals[:i]), i) for i in range(1, len(vals))]
  v['val_spike'], v['val_spike_epoch'] = max(ratios) if ratios else (None, None)
  if run.epochs:
    last = run.epochs[-1]
    v['final_train_loss'], v['final_val_loss'] = last['train_loss_mean'], last['val_loss_mean']
    v['final_val_infonce'] = last.get('val_infonce_mean')
    beta = (run.config.get('vq') or {}).get('commitment_cost', 0.0)
    ent = (run.config.get('loss') or {}).get('entropy_weight', 0.0)
    v['final_val_jepa'] = (last['val_loss_mean'] - beta * last.get('val_commitment_mean', 0.0)
                           - last.get('val_codebook_mean', 0.0)
                           - ent * last.get('val_entropy_mean', 0.0))
    i = int(np.argmin(vals))
    v['best_val_loss'], v['best_val_epoch'] = vals[i], run.epochs[i]['epoch']
  emb = run.embedding
  for key, short in (('context_effective_rank', 'ctx_rank'),
                     ('target_effective_rank', 'tgt_rank'),
                     ('context_isotropy', 'ctx_iso'), ('target_isotropy', 'tgt_iso')):
    xs = [r[key] for r in emb if key in r]
    if xs:
      v[f'{short}_final'], v[f'{short}_min'], v[f'{short}_max'] = xs[-1], min(xs), max(xs)
  usage = [r for r in emb if monitor.USAGE in r]
  if usage:
    v['usage_start'], v['usage_end'] = usage[0][monitor.USAGE], usage[-1][monitor.USAGE]
    v['usage_min'] = min(r[monitor.USAGE] for r in usage)
    v['usage_max'] = max(r[monitor.USAGE] for r in usage)
    v['codes_start'], v['codes_end'] = usage[0]['vq_codes_used'], usage[-1]['vq_codes_used']
    v['perplexity_end'] = usage[-1].get('vq_perplexity')
  v['trajectory'] = diagnose.usage_trajectory(emb)['label']
  s = run.summary or {}
  v['wall_time_s'], v['steps_per_s'] = s.get('wall_time_s'), s.get('steps_per_s')
  ev = run.eval or {}
  for enc, short in (('target_encoder', 'tgt'), ('context_encoder', 'ctx'),
                     ('pixels', 'pix')):
    if enc in ev:
      v[f'{short}_probe'] = ev[enc]['linear_probe_acc']
      v[f'{short}_knn'] = ev[enc]['knn_acc']
  v['nmi'] = ev.get('code_label_nmi')
  v['codes_used_val'] = ev.get('codes_used_val')
  v['chance'] = ev.get('chance')
  # Unlabelled grids (ARC): one probe per grid property (jepa_jax.evaluate).
  for prop, res in (ev.get('probes') or {}).items():
    for enc, short in (('target_encoder', 'tgt'), ('context_encoder', 'ctx'),
                       ('pixels', 'pix')):
      v[f'{prop}_{short}_probe'] = res[enc]['linear_probe_acc']
    v[f'{prop}_nmi'] = res.get('code_property_nmi')
    v[f'{prop}_chance'] = res['chance']
  v.update(report_health.health_values(run))
  return v


# ---------------------------------------------------------------- formatting

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


def _mean(xs):
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
    m = _mean(xs)
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
    if _mean(fin) is None:
      return 'N/A', None
    lo = min(v[f'{prefix}_min'] for v in vs if v.get(f'{prefix}_min') is not None)
    hi = max(v[f'{prefix}_max'] for v in vs if v.get(f'{prefix}_max') is not None)
    text = f'{mean_std(fin, spec)} ({_num(lo, spec)}–{_num(hi, spec)})'
    return (f'{text} {mark(_mean(fin))}' if mark else text), _mean(fin)
  return cell


def epochs_cell(vs):
  done = [v['epochs'] for v in vs]
  planned = vs[0]['num_epochs']
  frac = _mean([d / planned for d in done]) if planned else None
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
          _mean([v.get('best_val_loss') for v in vs]))


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
    if _mean(u) is None:
      return 'N/A', None
    codes = mean_std([v.get(f'codes_{start_end}') for v in vs], '.0f')
    return f'{mean_std(u, "%")} ({codes} codes) {usage_mark(_mean(u))}', _mean(u)
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
            Row('VQ usage (max over run)', scalar('usage_max', '%'), 'max'),
            Row('Training-window usage (end)', scalar('window_usage_end', '%'), 'max'),
            Row('Masked-context usage (end)', scalar('context_usage_end', '%'), 'max'),
            Row('Codes holding ≥ 5 val tokens (end)', scalar('codes_ge5_end', '.0f'), 'max'),
            Row('Code perplexity (end)', scalar('perplexity_end', '.1f'), 'max'),
            Row('Churn at the last point (share of val tokens)', scalar('churn_end', '%'),
                'min'),
            Row('Restarts after 10% of training, per epoch (share of codebook)',
                scalar('restarts_per_epoch', '%'), 'min'),
            Row('Codes younger than one epoch (end)', scalar('young_share_end', '%'), 'min'),
            Row('VQ usage trajectory (2nd half)', label_cell('trajectory'))]
def probe_cell(prefix: str):
  def cell(vs):
    acc = _mean([v.get(f'{prefix}_probe') for v in vs])
    if acc is None:
      return 'N/A', None
    ci = _mean([v.get(f'{prefix}_probe_ci95') for v in vs])
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
              Row('k-means baseline AMI (no-VQ runs: K = codebook size)',
                  scalar('kmeans_ami', '.3f'), 'max'),
              Row('Codes used on val images', scalar('codes_used_val', '.0f'), 'max'),
              Row('Raw pixels: linear probe / k-NN (reference)',
                  lambda vs: (f"{mean_std([v.get('pix_probe') for v in vs], '%')} / "
                              f"{mean_std([v.get('pix_knn') for v in vs], '%')}", None)),
              Row('Chance (majority class)', scalar('chance', '%'))]
def property_rows(props: Sequence[str]) -> List[Row]:
  """Rows of the grid-property probe table (ARC evaluations)."""
  rows = []
  for p in props:
    rows += [Row(f'`{p}`: linear probe, target encoder', scalar(f'{p}_tgt_probe', '%'), 'max'),
             Row(f'`{p}`: linear probe, context encoder', scalar(f'{p}_ctx_probe', '%'), 'max'),
             Row(f'`{p}`: code–property NMI', scalar(f'{p}_nmi', '.3f'), 'max'),
             Row(f'`{p}`: one-hot cells probe / chance (reference)',
                 lambda vs, p=p: (f"{mean_std([v.get(f'{p}_pix_probe') for v in vs], '%')} / "
                                  f"{mean_std([v.get(f'{p}_chance') for v in vs], '%')}", None))]
  return rows


SPEED = [Row('Wall time per run [s]', scalar('wall_time_s', '.0f'), 'min'),
         Row('Steps/s (excl. compile)', scalar('steps_per_s', '.2f'), 'max')]


def trajectory_table(variants, runs: Dict[str, List[diagnose.Run]], every: int = 4
                     ) -> List[str]:
  """VQ usage at every `every`-th logged step (the reference's 200-step
  checkpoints with embedding metrics every 50 steps) plus each run's last."""
  per_var: Dict[str, Dict[int, List[dict]]] = {}
  steps = set()
  for var in variants:
    table: Dict[int, List[dict]] = {}
    for run in runs.get(var) or []:
      recs = [r for r in run.embedding if monitor.USAGE in r]
      for i, r in enumerate(recs):
        if (i + 1) % every == 0 or i in (0, len(recs) - 1):
          table.setdefault(r['step'], []).append(r)
          steps.add(r['step'])
    if table:
      per_var[var] = table
  shown = [v for v in variants if v in per_var]
  if not shown:
    return ['### VQ usage trajectory', '', 'No run with VQ.', '']
  lines = ['### VQ usage trajectory', '',
           'VQ usage (codes used) at the embedding-metrics checkpoints; '
           'mean ± std over seeds.', '',
           '| Step | ' + ' | '.join(shown) + ' |', '|---|' + '---|' * len(shown)]
  for step in sorted(steps):
    cells = []
    for var in shown:
      recs = per_var[var].get(step)
      if not recs:
        cells.append('')
        continue
      u = mean_std([r[monitor.USAGE] for r in recs], '%')
      c = mean_std([r['vq_codes_used'] for r in recs], '.0f')
      cells.append(f'{u} ({c})')
    lines.append(f'| {step} | ' + ' | '.join(cells) + ' |')
  return lines + ['']


def criteria_section(variants, runs, criteria_of: Dict[str, diagnose.Criteria],
                     bound_text: str) -> List[str]:
  results = {var: [diagnose.check_run(r, criteria_of[var]) for r in runs.get(var) or []]
             for var in variants}
  shown = [v for v in variants if results[v]]
  lines = ['## Success criteria and red flags', '',
           'Pass counts over seeds (`python -m jepa_jax.diagnose`; definitions in '
           '`jepa_jax/diagnose.py`).', '']
  lines += [bound_text, '']
  lines += ['| Level | Criterion | ' + ' | '.join(shown) + ' |',
            '|---|---|' + '---|' * len(shown)]
  if shown:
    for i, c0 in enumerate(results[shown[0]][0]['criteria']):
      cells = []
      for var in shown:
        st = [r['criteria'][i]['status'] for r in results[var]]
        n = len(st)
        if all(s == diagnose.NA for s in st):
          cells.append('n/a')
          continue
        k = st.count(diagnose.PASS)
        mark = '✅' if k == n else ('❌' if k == 0 else '⚠️')
        cells.append(f'{k}/{n} {mark}')
      lines.append(f"| {c0['level']} | {diagnose.title(c0)} | " + ' | '.join(cells) + ' |')
    cells = [f"{sum(r['must_have_passed'] for r in results[v])}/{len(results[v])}"
             for v in shown]
    lines.append('| **all must-haves** | | ' + ' | '.join(cells) + ' |')
  lines += ['', '### Red flags (abort criteria) and alerts per run', '',
            'Replayed from the logs with the monitor rules (`jepa_jax/monitor.py`); '
            'the runs themselves ran with `monitor.abort=False`, so they completed.', '',
            '| Run | Red flags | First red flag | Alerts (rule x count) |',
            '|---|---|---|---|']
  for var in shown:
    for r in results[var]:
      alerts = ', '.join(f'{k} x{n}' for k, n in sorted(r['alerts'].items())) or 'none'
      first = r['red_flags'][0] if r['red_flags'] else '–'
      lines.append(f"| {var}/{os.path.basename(r['run'])} | {len(r['red_flags'])} | "
                   f'{first} | {alerts} |')
  return lines + ['']


# ---------------------------------------------------------------- plots

def _series(runs: List[diagnose.Run], source: str, key: str):
  """(x, mean, std) over seeds of a logged series (steps aligned by value)."""
  by_x: Dict[int, List[float]] = {}
  for run in runs:
    recs = run.embedding if source == 'embedding' else run.epochs
    for r in recs:
      if r.get(key) is not None:
        x = r['step'] if source == 'embedding' else r['epoch'] + 1
        by_x.setdefault(x, []).append(r[key])
  xs = sorted(by_x)
  return (np.array(xs), np.array([np.mean(by_x[x]) for x in xs]),
          np.array([np.std(by_x[x], ddof=1) if len(by_x[x]) > 1 else 0.0 for x in xs]))


LINE_STYLES = ('-', '--', '-.', ':')


def line_styles(variants: Sequence[str]) -> Dict[str, Tuple[int, str]]:
  """variant -> (tab10 colour index, line style), distinct for up to 40 variants.

  The i-th variant gets colour i mod 10 and the (i div 10)-th line style, so
  the 11th variant does not reuse the first one's solid line (beyond 40 the
  pairs repeat).
  """
  return {v: (i % 10, LINE_STYLES[(i // 10) % len(LINE_STYLES)])
          for i, v in enumerate(variants)}


def write_plots(plot_dir: str, variants, runs: Dict[str, List[diagnose.Run]]) -> List[str]:
  import matplotlib  # noqa: PLC0415
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # noqa: PLC0415
  os.makedirs(plot_dir, exist_ok=True)
  styles = line_styles(list(variants))
  cmap = plt.get_cmap('tab10')

  def draw(ax, var, source, key, scale=1.0):
    x, m, s = _series(runs[var], source, key)
    color, style = cmap(styles[var][0]), styles[var][1]
    if len(x):
      ax.plot(x, scale * m, style, color=color, label=var, lw=1.5)
      ax.fill_between(x, scale * (m - s), scale * (m + s), color=color, alpha=0.2)

  shown = [v for v in variants if runs.get(v)]
  fig, ax = plt.subplots(figsize=(8, 4.5))
  for var in shown:
    draw(ax, var, 'embedding', monitor.USAGE, 100.0)
  ax.axhline(15, color='grey', ls='--', lw=1, label='15% (must-have)')
  ax.axhline(10, color='red', ls=':', lw=1, label='10% (red flag)')
  ax.set(xlabel='step', ylabel='VQ usage [% of codebook]', yscale='log',
         title='VQ codebook usage (mean ± std over seeds)')
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(os.path.join(plot_dir, PLOTS[0]), dpi=110)
  plt.close(fig)

  fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True, sharey=True)
  for ax, key, must, name in ((axes[0], 'context_effective_rank', 5, 'context'),
                              (axes[1], 'target_effective_rank', 10, 'target')):
    for var in shown:
      draw(ax, var, 'embedding', key)
    ax.axhline(must, color='grey', ls='--', lw=1, label=f'{must} (must-have)')
    ax.axhline(3, color='red', ls=':', lw=1, label='3 (alert)')
    ax.set(xlabel='step', ylabel='effective rank', title=f'{name} encoder')
  axes[0].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(os.path.join(plot_dir, PLOTS[1]), dpi=110)
  plt.close(fig)

  fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True, sharey=True)
  for ax, key, name in ((axes[0], 'train_loss_mean', 'train'),
                        (axes[1], 'val_loss_mean', 'validation')):
    for var in shown:
      draw(ax, var, 'epoch', key)
    ax.set(xlabel='epoch', ylabel='loss (epoch mean)', title=f'{name} loss',
           yscale='log')
  axes[0].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(os.path.join(plot_dir, PLOTS[2]), dpi=110)
  plt.close(fig)
  health = report_health.write_health_plots(plot_dir, shown, runs, draw, styles)
  return [os.path.join(plot_dir, p) for p in PLOTS] + health


# ---------------------------------------------------------------- report

def findings(variants, values, runs) -> List[str]:
  """Plain statements computed from the numbers (no judgement beyond thresholds)."""
  out = []
  for var in variants:
    vs = values.get(var)
    if not vs:
      continue
    n = len(vs)
    parts = [f'{sum(v["status"] == "completed" for v in vs)}/{n} completed']
    if _mean([v.get('usage_min') for v in vs]) is not None:
      below = sum(v['usage_min'] < 0.10 for v in vs)
      parts.append(f'VQ usage {mean_std([v["usage_start"] for v in vs], "%")} at the '
                   f'first checkpoint -> {mean_std([v["usage_end"] for v in vs], "%")} at the end'
                   f' (min {mean_std([v["usage_min"] for v in vs], "%")}); fell below 10% in '
                   f'{below}/{n} seeds')
    parts.append(f'final context / target effective rank '
                 f'{mean_std([v.get("ctx_rank_final") for v in vs], ".2f")} / '
                 f'{mean_std([v.get("tgt_rank_final") for v in vs], ".2f")}')
    if _mean([v.get('tgt_probe') for v in vs]) is not None:
      parts.append(f'target-encoder linear probe '
                   f'{mean_std([v.get("tgt_probe") for v in vs], "%")}')
    out.append(f'* **{var}**: ' + '; '.join(parts) + '.')
  return out


def write_report(workdir: str, variants: Sequence[str], seeds: Sequence[int],
                 meta: Dict[str, Any], missing: Optional[Dict[str, str]] = None) -> str:
  """Writes WORKDIR/report.md and WORKDIR/plots/; returns the report's path."""
  missing = dict(missing or {})
  runs: Dict[str, List[diagnose.Run]] = {}
  for var in variants:
    found = []
    for seed in seeds:
      path = run_dir(workdir, var, seed)
      if (os.path.exists(os.path.join(path, 'config.json')) or
          diagnose.stage_dirs(path)):
        found.append(diagnose.load_run(path))
    if found:
      runs[var] = found
    else:
      missing.setdefault(var, 'no run folder')
  values = {var: [run_values(r) for r in rs] for var, rs in runs.items()}
  shown = [v for v in variants if v in runs]

  matched = report_health.matched_baselines(runs)
  criteria_of, bounds = {}, []
  for var in shown:
    base = matched.get(var) or (var if not runs[var][0].vq_enabled else None)
    finals = [r.epochs[-1]['val_loss_mean'] for r in runs.get(base) or [] if r.epochs]
    criteria_of[var] = diagnose.Criteria()
    if finals:
      criteria_of[var] = criteria_of[var].with_baseline(float(np.mean(finals)))
      bounds.append(f'{var}: < {criteria_of[var].val_loss_bound:.4f} / '
                    f'{criteria_of[var].val_loss_nice_bound:.4f} ({base})')
  bound_text = ('Val-loss bounds (must / nice): 1.10x / 1.03x the mean final val loss '
                "of each variant's matched no-VQ baseline, as the reference's 8.5 / 8.0 "
                'against 7.75, on the total val loss: ' + ('; '.join(bounds) or 'none')
                + '. Variants without a matched baseline: n/a.')

  plot_paths = write_plots(os.path.join(workdir, 'plots'), shown, runs) if shown else []
  L = ['# VQ diagnostic assessment (generated)', '']
  L += [f'* **{k}**: {v}' for k, v in meta.items()]
  L += [f'* **Variants**: {", ".join(variants)}; seeds: {", ".join(map(str, seeds))}',
        f'* **Run folders**: `{workdir}/<variant>/seed_<seed>/`', '']
  if missing:
    L += ['**Missing variants**: ' + '; '.join(f'`{k}`: {v}' for k, v in missing.items()),
          '']
  L += ['## Findings (computed)', '', *findings(shown, values, runs), '']
  L += ['## Comparison', '',
        f'Cells: mean ± std over seeds ({len(seeds)} requested). ✅ / ⚠️ / ❌ mark values '
        'against the must-have threshold / alert threshold of the reference '
        '(usage 15% / 10%, context rank 5 / 3, target rank 10 / 3).', '']
  L += render_table('Run completion & stability', STABILITY, shown, values)
  L += render_table('Final losses', LOSSES, shown, values)
  L += ['The losses are the weighted totals each run optimises, as in the reference, so '
        'VQ runs include the commitment (and, in gradient mode, codebook; with '
        '`loss.entropy_weight`, assignment-entropy) terms; the '
        'row without the VQ terms compares the JEPA objective alone.', '']
  L += render_table('Embedding quality', EMBEDDING, shown, values)
  L += render_table('VQ codebook health', CODEBOOK, shown, values)
  L += trajectory_table(shown, runs)
  L += report_health.dense_section(shown, values)
  L += report_health.baseline_section(shown, values, runs, matched)
  L += report_health.reference_section(values)
  L += criteria_section(shown, runs, criteria_of, bound_text)
  L += ['## Downstream quality', '',
        'Frozen features (mean token embedding per image), probes cross-validated '
        'over every labelled image (5 folds; CI: the 95% interval of the accuracy), '
        'code metrics on the val tokens (`python -m jepa_jax.evaluate`).', '']
  props = sorted({k[:-len('_chance')] for vs in values.values() for v in vs
                  for k in v if k.endswith('_chance')})
  if props:
    L += ['No class labels: probes predict grid properties computed from each grid '
          '(`jepa_jax/data/grid_properties.py`); the rows below are means over those '
          'probes, the next table gives each one.', '']
  L += render_table('Downstream quality', DOWNSTREAM, shown, values)
  if props:
    L += render_table('Grid-property probes', property_rows(props), shown, values)
  L += render_table('Speed (this machine, shared)', SPEED, shown, values)
  L += ['## Plots', '']
  L += [f'![{os.path.splitext(os.path.basename(p))[0]}](plots/{os.path.basename(p)})'
        for p in plot_paths]
  L.append('')
  path = os.path.join(workdir, 'report.md')
  with open(path, 'w') as f:
    f.write('\n'.join(L))
  return path
