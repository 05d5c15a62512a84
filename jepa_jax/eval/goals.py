"""The stable-codebook goals (issue 28's targets): per-run values and thresholds.

Usage is counted where the codebook is used: on the train split's
whole-image tokens (`measure.train_subset`) and in the train step's own
trailing window; val usage is shown next to its sampling ceiling. A run
folder's logs give one value per goal (`run_values`); `jepa_jax.diagnose`
judges them per run (`checks`), `experiments/report_goals.py` over seeds
with bootstrap intervals and paired differences (`jepa_jax.eval.metrics`).

| value | from the logs | goal |
|---|---|---|
| train_usage_min | min vq_train_usage_ratio over the points from epoch `monitor.usage_from_epoch` (1) on | >= 90% of K (K <= 1,024), >= 80% above |
| window_usage_min | min vq_window_usage_ratio over the points whose trailing window (`train.usage_window_steps`) lies after the warm-up end: step - window >= warmup_end | the same |
| perplexity_min | min vq_train_perplexity_ratio (perplexity / K) over the train-usage points | >= 50% |
| restarts | restart events over the whole run / K (`codebook_health.restart_split`); restarts_after_warmup: after the warm-up end | whole run <= 1 x K |
| churn | vq_churn_epoch at the last point: share of val tokens whose code changed since the last point of an earlier epoch, i.e. over the run's last epoch when points fall on epoch ends (runs before it: vq_churn, since the previous point); churn_span_epochs: the span, in epochs | <= 5% |

warmup_end: summary.json's `restart_warmup_end_step`, or for runs written
before it `codebook_health.warmup_end` of the config (the point there may
then be missing: the warm-up count is the total at the last point before).
A value the logs cannot give (a run before train-token counting) is None:
not judged, never passed.

Does the encoder learn? The first question about a run, from its files.

`learning(run)` puts side by side, from eval.json (5-fold cross-validated
probes, `evaluate`): the linear probe of the trained encoders, of the raw
pixels and of the encoder at its initialisation (`random_init`), and the
better trained encoder's gains over both in points (`learned`); and from
probe_metrics.jsonl (holdout probes of a fixed subset during training,
`probe_trajectory`) the target encoder's probe at the first point (step 0),
its best and its last. A gain is called within noise when its magnitude is
at most the 95% interval of the trained encoder's probe (`*_ci95`).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from jepa_jax.run.reader import Run
from jepa_jax.train import monitor
from jepa_jax.vq import health as codebook_health


USAGE_GOAL_SMALL, USAGE_GOAL_LARGE, LARGE_K = 0.90, 0.80, 1024
PERPLEXITY_GOAL = 0.50
RESTARTS_GOAL = 1.0          # whole-run restart events / K
CHURN_GOAL = 0.05
PROBE_WITHIN = 0.01          # linear probe: within 1 point of the matched no-VQ run
VAL_GAP_GOAL = 0.05          # JEPA val-loss gap's CI upper end


def usage_goal(num_codes: int) -> float:
  return USAGE_GOAL_SMALL if num_codes <= LARGE_K else USAGE_GOAL_LARGE


def warmup_end_of(run: Run) -> Optional[int]:
  """The run's warm-up end (module docstring); None without a planned length."""
  s = run.summary or {}
  if s.get('restart_warmup_end_step') is not None:
    return int(s['restart_warmup_end_step'])
  if not s.get('total_steps_planned'):
    return None
  v = run.config.get('vq') or {}
  refresh = v.get('refresh_enabled') and v.get('quantizer', 'vq') == 'vq'
  return codebook_health.warmup_end(s['total_steps_planned'],
                                    v.get('refresh_interval', 0) if refresh else 0,
                                    v.get('refresh_warmup_steps', 0))


def _min(recs, key):
  """(the minimum of key over recs, its first step), or (None, None)."""
  xs = [(r[key], r['step']) for r in recs if r.get(key) is not None]
  return min(xs) if xs else (None, None)


def restarts(run: Run, k: int) -> Optional[Dict[str, Any]]:
  """`codebook_health.restart_split` of the run's logged points (None without
  restart records)."""
  recs = [r for r in run.embedding if r.get('vq_restarts_total') is not None]
  end = warmup_end_of(run)
  if not (recs and k and end is not None):
    return None
  warm = codebook_health.warmup_total([r['step'] for r in recs],
                                      [r['vq_restarts_total'] for r in recs], end)
  return codebook_health.restart_split(recs[-1]['vq_restarts_total'], warm, end, k)


def _churn(run: Run):
  """(churn at the last point, its span in epochs) (module docstring)."""
  recs = [r for r in run.embedding if 'vq_churn' in r]
  spe = (run.summary or {}).get('steps_per_epoch')
  if not recs:
    return None, None
  last = recs[-1]
  if 'vq_churn_epoch' in last:
    since = last.get('vq_churn_epoch_since')
  else:
    since = recs[-2]['step'] if len(recs) > 1 else None
  churn = last.get('vq_churn_epoch', last['vq_churn'])
  return churn, (last['step'] - since) / spe if since is not None and spe else None


def run_values(run: Run) -> Dict[str, Any]:
  """The per-run goal values (module docstring) with the step of each minimum."""
  k = (run.config.get('vq') or {}).get('codebook_size')
  start = monitor.Rules.from_config(run.config).usage_from_epoch
  judged = [r for r in run.embedding if int(r.get('epoch', 0)) >= start]
  end = warmup_end_of(run)
  window = (run.config.get('train') or {}).get('usage_window_steps') or 0
  after = [r for r in run.embedding if end is not None and r['step'] - window >= end]
  v: Dict[str, Any] = {'k': k, 'warmup_end': end}
  v['train_usage_min'], v['train_usage_min_step'] = _min(judged, 'vq_train_usage_ratio')
  v['window_usage_min'], v['window_usage_min_step'] = _min(after, 'vq_window_usage_ratio')
  v['perplexity_min'], v['perplexity_min_step'] = _min(judged, 'vq_train_perplexity_ratio')
  split = restarts(run, k)
  v['restarts'] = split['per_codebook'] if split else None
  v['restarts_after_warmup'] = split['after_warmup_per_codebook'] if split else None
  v['churn'], v['churn_span_epochs'] = _churn(run)
  last = next((r for r in reversed(run.embedding) if 'vq_val_usage_ceiling' in r), {})
  v['val_usage_end'] = last.get(monitor.USAGE)
  v['val_ceiling_end'] = last.get('vq_val_usage_ceiling')
  v['train_usage_end'] = last.get('vq_train_usage_ratio')
  return v


def _check(name, ok, value, threshold, detail) -> Dict[str, Any]:
  return {'name': name, 'level': 'goal',
          'status': 'n/a' if ok is None else ('pass' if ok else 'fail'),
          'value': value, 'threshold': threshold, 'detail': detail}


def checks(run: Run) -> List[Dict[str, Any]]:
  """The per-run goals of a VQ run as diagnose criteria (level 'goal'); a
  value the logs cannot give fails as "cannot judge"; no VQ: each n/a."""
  v = run_values(run) if run.vq_enabled else {}
  goal = usage_goal(v.get('k') or 0)
  pct = lambda x: f'{x:.1%}'  # noqa: E731
  out = []
  for name, key, thr, low in (
      ('train_usage', 'train_usage_min', goal, True),
      ('window_usage', 'window_usage_min', goal, True),
      ('perplexity', 'perplexity_min', PERPLEXITY_GOAL, True),
      ('restarts', 'restarts', RESTARTS_GOAL, False),
      ('churn', 'churn', CHURN_GOAL, False)):
    x = v.get(key)
    if not run.vq_enabled:
      out.append(_check(name, None, None, thr, 'no VQ'))
      continue
    if x is None:
      why = (f"no training window after the warm-up end (step {v['warmup_end']})"
             if name == 'window_usage' and v['train_usage_min'] is not None
             else 'not in the logs')
      out.append(_check(name, False, None, thr, why + ': cannot judge'))
      continue
    ok = x >= thr if low else x <= thr
    where = f" at step {v[key + '_step']}" if key + '_step' in v else ''
    detail = f'{x:.2f} x K' if name == 'restarts' else pct(x)
    if name == 'restarts':
      after = v['restarts_after_warmup']
      detail += (f" whole run, {'?' if after is None else f'{after:.2f}'} x K after "
                 f"the warm-up end (step {v['warmup_end']})")
    out.append(_check(name, ok, x, thr, f'min {detail}{where}' if low else detail))
  return out


TITLES = {
    'train_usage': 'usage >= {t:.0%} of K, train tokens, after epoch 1',
    'window_usage': 'usage >= {t:.0%} of K, every window after warm-up',
    'perplexity': 'perplexity >= {t:.0%} of K, train tokens',
    'restarts': 'restarts over the whole run <= {t:g} x K',
    'churn': "churn over the last epoch <= {t:.0%}",
}


ENCODERS = ('target_encoder', 'context_encoder')


def _acc(ev, name) -> Optional[float]:
  return (ev.get(name) or {}).get('linear_probe_acc')


def from_eval(ev: Dict[str, Any]) -> Dict[str, Any]:
  """The probe values of an eval.json ({} without one): linear probe of each
  trained encoder, of `pixels` and `random_init` (None when eval.json
  predates it), the better trained encoder, its 95% interval, and its gains
  over pixels and random init in points (None without the reference)."""
  if not ev or _acc(ev, 'target_encoder') is None:
    return {}
  best = max(ENCODERS, key=lambda e: _acc(ev, e) if _acc(ev, e) is not None else -1.0)
  acc = _acc(ev, best)
  out = {name: _acc(ev, name) for name in (*ENCODERS, 'pixels', 'random_init')}
  out.update(best=best, best_acc=acc, best_ci95=ev[best].get('linear_probe_ci95'))
  for ref in ('pixels', 'random_init'):
    out[f'over_{ref}_points'] = None if out[ref] is None else 100.0 * (acc - out[ref])
  return out


def from_trajectory(recs: List[Dict[str, Any]], key: str = 'linear_target'
                    ) -> Dict[str, Any]:
  """{start, start_step, best, best_step, end, end_step, points} of a probe
  trajectory's `key` ({} without records); the first best if tied."""
  recs = [r for r in recs if r.get(key) is not None]
  if not recs:
    return {}
  best = max(recs, key=lambda r: r[key])
  return {'start': recs[0][key], 'start_step': recs[0]['step'], 'best': best[key],
          'best_step': best['step'], 'end': recs[-1][key], 'end_step': recs[-1]['step'],
          'points': len(recs)}


def learning(run) -> Dict[str, Any]:
  """{'eval': from_eval(run.eval), 'trajectory': from_trajectory(run.probe)}."""
  return {'eval': from_eval(run.eval or {}), 'trajectory': from_trajectory(run.probe)}


def _gain(points: Optional[float], ci95: Optional[float]) -> str:
  if points is None:
    return 'n/a (eval.json predates it)'
  noise = ci95 is not None and abs(points) <= 100.0 * ci95
  return f'{points:+.1f} points' + (' (within noise)' if noise else '')


def format_lines(result: Dict[str, Any]) -> List[str]:
  """The "Does the encoder learn?" lines of `diagnose`'s text output."""
  ev, traj = result.get('eval') or {}, result.get('trajectory') or {}
  lines = ['  Does the encoder learn?']
  if not ev:
    lines.append('    no eval.json: run python -m jepa_jax.evaluate for the probes')
  else:
    pct = lambda x: 'n/a' if x is None else f'{x:.1%}'  # noqa: E731
    lines.append(f"    linear probe (eval.json): target {pct(ev['target_encoder'])}, "
                 f"context {pct(ev['context_encoder'])}; pixels {pct(ev['pixels'])}, "
                 f"random init {pct(ev['random_init'])}")
    lines.append(f"    best trained ({ev['best'].replace('_encoder', '')}) vs pixels "
                 f"{_gain(ev['over_pixels_points'], ev['best_ci95'])}, vs random init "
                 f"{_gain(ev['over_random_init_points'], ev['best_ci95'])}")
  if traj:
    lines.append(f"    probe trajectory (target, holdout): {traj['start']:.1%} at step "
                 f"{traj['start_step']} -> best {traj['best']:.1%} at step "
                 f"{traj['best_step']} -> {traj['end']:.1%} at step {traj['end_step']} "
                 f"({traj['points']} points)")
  else:
    lines.append('    no probe trajectory (probe_metrics.jsonl)')
  return lines
