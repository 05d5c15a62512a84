"""The per-run values of the assessment report: `run_values(run)`, the
scalars its tables show for one run, and `run_dir`, where a variant's seed
runs. Below `report` and `report_goals`, which both read them."""
from __future__ import annotations

import os
from typing import Any, Dict

import numpy as np

from experiments import report_health
from experiments import report_learning
from jepa_jax import diagnose
from jepa_jax.train import monitor


def run_dir(workdir: str, variant: str, seed: int) -> str:
  return os.path.join(workdir, variant, f'seed_{seed}')


def run_values(run: diagnose.Run) -> Dict[str, Any]:
  """The scalars the tables show, for one run (None where not applicable)."""
  v: Dict[str, Any] = {'status': run.status, 'epochs': len(run.epochs),
                       'num_epochs': run.num_epochs, 'seed': run.config.get('seed')}
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
                     ('pixels', 'pix'), ('random_init', 'rnd')):
    if enc in ev:
      v[f'{short}_probe'] = ev[enc]['linear_probe_acc']
      v[f'{short}_knn'] = ev[enc]['knn_acc']
  v['nmi'] = ev.get('code_label_nmi')
  v['codes_used_val'] = ev.get('codes_used_val')
  v['chance'] = ev.get('chance')
  # Unlabelled grids (ARC): one probe per grid property (jepa_jax.evaluate).
  for prop, res in (ev.get('probes') or {}).items():
    for enc, short in (('target_encoder', 'tgt'), ('context_encoder', 'ctx'),
                       ('pixels', 'pix'), ('random_init', 'rnd')):
      if enc in res:
        v[f'{prop}_{short}_probe'] = res[enc]['linear_probe_acc']
    v[f'{prop}_nmi'] = res.get('code_property_nmi')
    v[f'{prop}_chance'] = res['chance']
  v.update(report_health.health_values(run))
  v.update(report_learning.learning_values(run))
  return v
