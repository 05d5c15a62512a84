"""Does the encoder learn? The first question about a run, from its files.

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
