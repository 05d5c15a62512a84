"""Codebook-health parts of the assessment report: values, matched baselines,
the reference side by side, and the health plots.

Every number comes from a run folder's files (`jepa_jax.diagnose.Run`); the
reference's numbers are those its assessment publishes (REFERENCE).
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from jepa_jax import diagnose
from jepa_jax.config import keys as config_keys
from jepa_jax.config import load as config_lib
from jepa_jax.eval import goals
from jepa_jax.eval import metrics as seed_stats
from jepa_jax.train import monitor

HEALTH_PLOTS = ('codebook_health.png', 'usage_histogram.png')
GOAL_KEYS = ('train_usage_min', 'train_usage_end', 'window_usage_min', 'perplexity_min',
             'val_ceiling_end', 'restarts', 'restarts_after_warmup')
DENSE_THRESHOLDS = (0.10, 0.15, 0.50, 0.90)

# The reference assessment's three-way comparison (PyTorch JEPA, ~95 steps per
# epoch; usage every 200 steps from its training-time code counts).
REFERENCE = {
    'sixth_run': {'epochs': '22/80', 'early_stop': 'yes (epoch 22)',
                  'val_spike': '27.2 at epoch 13', 'usage': '24.3% -> 1.7%',
                  'trajectory': 'erratic collapse', 'ctx_rank': '1.36-1.88',
                  'tgt_rank': '2.40-5.96', 'final_val': '9.18'},
    'no_vq': {'epochs': '30/30', 'early_stop': 'no', 'val_spike': 'none',
              'usage': 'n/a', 'trajectory': 'n/a', 'ctx_rank': '12.7-33.2',
              'tgt_rank': '24.7-43.1', 'final_val': '7.75'},
    'vq_no_refresh': {'epochs': '30/30', 'early_stop': 'no', 'val_spike': 'none',
                      'usage': '17.7% -> 4.4%', 'trajectory': 'monotonic decline',
                      'ctx_rank': '3.29 -> 1.43', 'tgt_rank': '5.65 -> 2.94',
                      'final_val': '8.99'},
}

# Config groups that must agree for a no-VQ run to be a VQ run's baseline.
MATCH_KEYS = ('loss', 'model', 'masking', 'data')
MATCH_TRAIN = ('batch_size', 'learning_rate', 'min_learning_rate', 'weight_decay',
               'warmup_epochs', 'ema_momentum_start', 'ema_momentum_end')


def _last(recs, key):
  xs = [r[key] for r in recs if r.get(key) is not None]
  return xs[-1] if xs else None


def _restarts_per_epoch(run: diagnose.Run, recs) -> Optional[float]:
  """Restart events after the first 10% of training, per epoch, as a share of
  the codebook: counted from the last measurement point at or before 10% of
  the planned steps. Runs measured with `measure.GOAL_BOUNDARY`'s point have
  one at exactly 10%, so the count is exact; in older runs the point is
  earlier and the count an upper bound (it includes the restarts between it
  and 10%)."""
  s = run.summary or {}
  total, spe = s.get('total_steps_planned'), s.get('steps_per_epoch')
  k = (run.config.get('vq') or {}).get('codebook_size')
  recs = [r for r in recs if 'vq_restarts_total' in r]
  if not (recs and total and spe and k):
    return None
  early = [r for r in recs if r['step'] <= 0.1 * total]
  start_step, start_total = ((early[-1]['step'], early[-1]['vq_restarts_total'])
                             if early else (0, 0))
  end = recs[-1]
  epochs = (end['step'] - start_step) / spe
  return (end['vq_restarts_total'] - start_total) / k / epochs if epochs > 0 else None


def health_values(run: diagnose.Run) -> Dict[str, Any]:
  """Codebook-health scalars of one run (None where not logged)."""
  recs = [r for r in run.embedding if monitor.USAGE in r]
  judged = diagnose.usage_records(run)
  v: Dict[str, Any] = {}
  if judged:
    v['usage_min_judged'] = min(r[monitor.USAGE] for r in judged)
  v['window_usage_end'] = _last(recs, 'vq_window_usage_ratio')
  v['context_usage_end'] = _last(recs, 'vq_context_usage_ratio')
  v['churn_end'] = _last(recs, 'vq_churn')
  v['young_share_end'] = _last(recs, 'vq_young_share')
  v['code_age_end'] = _last(recs, 'vq_code_age_median')
  v['codes_ge5_end'] = _last(recs, 'vq_codes_ge5')
  v['restarts_per_epoch'] = _restarts_per_epoch(run, recs)
  if run.vq_enabled:              # where the codebook is used (jepa_jax.eval.goals)
    g = goals.run_values(run)
    v.update({key: g[key] for key in GOAL_KEYS})
  v['ctx_spread_final'] = _last(run.embedding, 'context_spread')
  v['tgt_spread_final'] = _last(run.embedding, 'target_spread')
  every = (run.config.get('train') or {}).get('embedding_metrics_every_steps')
  v['dense'] = every == 1
  if every == 1 and judged:
    u = np.array([r[monitor.USAGE] for r in judged])
    for t in DENSE_THRESHOLDS:
      v[f'dense_below_{int(100 * t)}'] = float(np.mean(u < t))
  ev = run.eval or {}
  for key in ('code_label_ami', 'code_label_nmi_shuffled'):
    v[key] = ev.get(key)
  km = ev.get('kmeans') or {}
  v['kmeans_ami'] = km.get('code_label_ami')
  for enc, short in (('target_encoder', 'tgt'), ('context_encoder', 'ctx')):
    if enc in ev:
      v[f'{short}_probe_ci95'] = ev[enc].get('linear_probe_ci95')
  return v


def _with_added_keys(config: Dict[str, Any]) -> Dict[str, Any]:
  """A run's config.json with the keys added since it was written set to the
  values that reproduce it (`config_lib.ADDED_KEYS`), so runs written before
  and after a key existed compare equal when their settings are."""
  out = json.loads(json.dumps(config))
  for key, value in config_lib.ADDED_KEYS.items():
    if not config_keys.has(out, key):
      config_keys.put(out, key, json.loads(json.dumps(value)), make_group=dict)
  return out


def _matchable(config: Dict[str, Any]) -> Dict[str, Any]:
  config = _with_added_keys(config)
  loss = {k: v for k, v in (config.get('loss') or {}).items()
          if not k.startswith('entropy')}
  out = {k: config.get(k) for k in MATCH_KEYS if k != 'loss'}
  out['loss'] = loss
  out['train'] = {k: (config.get('train') or {}).get(k) for k in MATCH_TRAIN}
  return out


def matched_baselines(runs: Dict[str, List[diagnose.Run]]) -> Dict[str, Optional[str]]:
  """variant -> the no-VQ variant whose runs share its loss, model, masking,
  data and optimiser settings (None: no such variant in this assessment)."""
  no_vq = {v: _matchable(rs[0].config) for v, rs in runs.items()
           if rs and not (rs[0].config.get('vq') or {}).get('enabled', True)}
  out = {}
  for var, rs in runs.items():
    if not rs or var in no_vq:
      out[var] = None
      continue
    mine = _matchable(rs[0].config)
    out[var] = next((b for b, cfg in no_vq.items() if cfg == mine), None)
  return out


def _mean(xs):
  xs = [x for x in xs if x is not None]
  return float(np.mean(xs)) if xs else None


def _fmt(x, spec):
  if x is None:
    return '–'
  return f'{100 * x:.1f}%' if spec == '%' else format(x, spec)


def paired_gap(vs, bs, key: str, higher_is_better: bool) -> Optional[Dict[str, Any]]:
  """`seed_stats.summarize` of the per-seed relative gaps a_s / |b_s| - 1
  of `key` between a variant's values `vs` and its baseline's `bs` at the
  seeds both hold (each value dict names its 'seed'); None without one."""
  a = {x['seed']: x[key] for x in vs if x.get(key) is not None and x.get('seed') is not None}
  b = {x['seed']: x[key] for x in bs if x.get(key) is not None and x.get('seed') is not None}
  common = sorted(s for s in set(a) & set(b) if b[s])
  if not common:
    return None
  return seed_stats.summarize([(a[s] - b[s]) / abs(b[s]) for s in common], common,
                              higher_is_better)


def baseline_section(variants, values, runs, matched) -> List[str]:
  """Each VQ variant against its matched no-VQ baseline: means, and the
  paired relative gap at the seeds both ran with its 95% bootstrap interval
  and worst seed (`paired_gap`)."""
  lines = ['## Against the matched no-VQ baseline', '',
           'Each VQ variant is compared with the no-VQ variant of this assessment '
           'that shares its loss, model, masking, data and optimiser settings '
           '(`experiments/report_health.matched_baselines`). Val loss: the JEPA '
           'objective without the VQ terms. Probe: target encoder, 5-fold CV, ± its '
           '95% interval. AMI: code–label adjusted mutual information; the '
           "baseline's is that of k-means with K = codebook size on its tokens. Δ: the "
           'paired gap a_s / b_s − 1 at the seeds both ran, mean [95% bootstrap CI], '
           'worst seed (`jepa_jax/eval/metrics.py`).', '',
           '| Variant | Baseline | Val loss (Δ) | Context rank (Δ) | Target rank (Δ) | '
           'Probe (baseline) | AMI (k-means AMI) |', '|---|---|---|---|---|---|---|']
  for var in variants:
    base = matched.get(var)
    if var not in values or (runs[var][0].config.get('vq') or {}).get('enabled') is False:
      continue
    if base is None:
      lines.append(f'| {var} | none in this assessment | | | | | |')
      continue
    m = lambda vs, k: _mean([x.get(k) for x in vs])  # noqa: E731
    vs, bs = values[var], values[base]

    def delta(k, spec='.2f', higher=True):
      a, g = m(vs, k), paired_gap(vs, bs, k, higher)
      if a is None or g is None:
        return '–' if a is None else f'{_fmt(a, spec)} (no common seed)'
      pct = lambda x: f'{100 * x:+.1f}%'  # noqa: E731
      worst = f", worst {pct(g['worst'])} seed {g['worst_seed']}" if g['n'] > 1 else ''
      return (f"{_fmt(a, spec)} (Δ {pct(g['mean'])} [{pct(g['ci'][0])}, "
              f"{pct(g['ci'][1])}]{worst})")
    probe = (f"{_fmt(m(vs, 'tgt_probe'), '%')} ± {_fmt(m(vs, 'tgt_probe_ci95'), '%')} "
             f"({_fmt(m(bs, 'tgt_probe'), '%')})")
    ami = f"{_fmt(m(vs, 'code_label_ami'), '.3f')} ({_fmt(m(bs, 'kmeans_ami'), '.3f')})"
    lines.append(f"| {var} | {base} | {delta('final_val_jepa', '.4f', False)} | "
                 f"{delta('ctx_rank_final')} | {delta('tgt_rank_final')} | {probe} | {ami} |")
  return lines + ['']


def reference_section(values) -> List[str]:
  """The reference's three runs next to this assessment's runs of the same name."""
  shown = [v for v in REFERENCE if v in values]
  if not shown:
    return []
  lines = ['## The reference side by side', '',
           "Reference: the PyTorch JEPA's published assessment (usage from its "
           "training-time counts every 200 steps). jepa_jax: means over seeds; usage "
           'on the whole val split at the first point and the end, with the '
           'training-window usage (codes the step assigned in the last '
           '`train.usage_window_steps` steps, the closer match to the reference\'s '
           'definition) in brackets.', '',
           '| Metric | ' + ' | '.join(f'{v} (ref.) | {v} (jepa_jax)' for v in shown) + ' |',
           '|---|' + '---|---|' * len(shown)]
  m = lambda v, k: _mean([x.get(k) for x in values[v]])  # noqa: E731

  def ours(v, key):
    if key == 'epochs':
      return f"{_fmt(m(v, 'epochs'), '.1f')}/{values[v][0].get('num_epochs')}"
    if key == 'early_stop':
      n = sum(x.get('early_stop_epoch') is not None for x in values[v])
      return f'{n}/{len(values[v])} seeds'
    if key == 'val_spike':
      return f"x{_fmt(m(v, 'val_spike'), '.3f')} (worst / best before)"
    if key == 'usage':
      if m(v, 'usage_start') is None:
        return 'n/a'
      return (f"{_fmt(m(v, 'usage_start'), '%')} -> {_fmt(m(v, 'usage_end'), '%')} "
              f"({_fmt(m(v, 'window_usage_end'), '%')} window at the end)")
    if key == 'trajectory':
      return ', '.join(sorted({str(x.get('trajectory')) for x in values[v]}))
    if key in ('ctx_rank', 'tgt_rank'):
      return (f"{_fmt(m(v, key + '_min'), '.2f')}-{_fmt(m(v, key + '_max'), '.2f')} "
              f"(final {_fmt(m(v, key + '_final'), '.2f')})")
    return _fmt(m(v, 'final_val_loss'), '.4f')
  for key, label in (('epochs', 'Epochs completed'), ('early_stop', 'Early stopping'),
                     ('val_spike', 'Val loss spike'), ('usage', 'VQ usage start -> end'),
                     ('trajectory', 'Usage trajectory'),
                     ('ctx_rank', 'Context effective rank'),
                     ('tgt_rank', 'Target effective rank'),
                     ('final_val', 'Final val loss (own scale)')):
    cells = [f'{REFERENCE[v][key]} | {ours(v, key)}' for v in shown]
    lines.append(f'| **{label}** | ' + ' | '.join(cells) + ' |')
  return lines + ['']


def dense_section(variants, values) -> List[str]:
  """Share of dense points (every step, after epoch 1) below each usage threshold."""
  rows = []
  for var in variants:
    for i, v in enumerate(values.get(var) or []):
      if v.get('dense'):
        cells = [_fmt(v.get(f'dense_below_{int(100 * t)}'), '%') for t in DENSE_THRESHOLDS]
        rows.append(f'| {var} (seed #{i}) | ' + ' | '.join(cells) + ' |')
  if not rows:
    return []
  head = ' | '.join(f'< {int(100 * t)}%' for t in DENSE_THRESHOLDS)
  return ['### Dense audit: share of steps below each usage level', '',
          'Runs measured after every step (`train.embedding_metrics_every_steps=1`), '
          'points after the first epoch.', '', f'| Run | {head} |',
          '|---|' + '---|' * len(DENSE_THRESHOLDS), *rows, '']


def write_health_plots(plot_dir, variants, runs, draw_series, styles) -> List[str]:
  """Usage, churn and restarts over steps; the final sorted usage histogram."""
  import matplotlib  # noqa: PLC0415
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # noqa: PLC0415
  cmap = plt.get_cmap('tab10')
  shown = [v for v in variants if runs.get(v) and runs[v][0].vq_enabled]
  if not shown:
    return []
  fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), sharex=True)
  for ax, key, label in ((axes[0], monitor.USAGE, 'usage [% of codebook]'),
                         (axes[1], 'vq_churn', 'churn [% of val tokens]'),
                         (axes[2], 'vq_restarted_share', 'restarted since last point [%]')):
    for var in shown:
      draw_series(ax, var, 'embedding', key, 100.0)
    ax.set(xlabel='step', ylabel=label)
  axes[0].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(os.path.join(plot_dir, HEALTH_PLOTS[0]), dpi=110)
  plt.close(fig)
  fig, ax = plt.subplots(figsize=(8, 4.2))
  for var in shown:
    ev = runs[var][0].eval or {}
    counts = (ev.get('codebook') or {}).get('sorted_counts')
    if counts:
      c, st = cmap(styles[var][0]), styles[var][1]
      ax.plot(np.arange(1, len(counts) + 1), np.maximum(counts, 0.5), st, color=c,
              label=var, lw=1.2)
  ax.set(xlabel='code rank', ylabel='val tokens (first seed; 0 drawn at 0.5)',
         xscale='log', yscale='log', title='Final usage histogram, sorted')
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(os.path.join(plot_dir, HEALTH_PLOTS[1]), dpi=110)
  plt.close(fig)
  return [os.path.join(plot_dir, p) for p in HEALTH_PLOTS]
