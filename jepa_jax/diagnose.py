"""Success criteria of the reference assessment, checked on run folders.

    python -m jepa_jax.diagnose RUN_DIR [RUN_DIR ...] [--json]
        [--val_loss_bound X | --baseline NO_VQ_RUN_DIR[,...]] [--strict] [--option_b]

Everything is computed from the files a run writes (config.json,
summary.json, embedding_metrics.jsonl, epoch_metrics.jsonl, and eval.json
and probe_metrics.jsonl when there); nothing is re-run. "Final" means the
last record of a log. Each run's output opens with "Does the encoder
learn?" (`jepa_jax.eval.goals`): the trained encoders' linear probe next to the
pixels' and the random-init encoder's, the gains in points, and the probe
trajectory. Criteria (thresholds in `Criteria`, defaults from the
reference's "Success Criteria"):

  must-have
    usage_throughout    min vq_usage_ratio over the records from epoch
                      `monitor.usage_from_epoch` on (default 1: after the
                      first epoch) > 15%
    usage_trajectory    usage "flat or growing", defined below
    context_rank        final context_effective_rank > 5
    target_rank         final target_effective_rank > 10
    val_loss            final val_loss_mean < the bound (see below)
  nice-to-have
    usage_end           final vq_usage_ratio > 25%
    context_rank_nice   final context_effective_rank > 10
    target_rank_nice    final target_effective_rank > 20
    val_loss_nice       final val_loss_mean < the nice bound
    stable_full_budget  status 'completed' after all config.train.num_epochs
                        epochs, and no red flag (monitor rules replayed on the logs)
  goal (one VQ run's stable-codebook goals, `jepa_jax.eval.goals`): usage of the
    train split's whole-image tokens after epoch 1 and in every training
    window after the warm-up, perplexity / K, whole-run restarts / K, churn
    over the last epoch
    (the paired goals need seeds: `experiments/report_goals.py`)

Option B rule: the reference's "if Option B shows any VQ usage below 12% or
effective rank below 4.0 by epoch 15, abort and move to Option C or D"
(monitor rule `option_b_abort`), reported as fired / not fired when the run's
config has `monitor.option_b` on, or for every run with `--option_b`.

Usage trajectory. Take the embedding records of the second half of the run
(step >= final step / 2; at least 3 records, else 'n/a'), with mean usage u,
least-squares line fitted to usage against step, fitted change D over that
half (slope x step span), relative trend r = D / u and relative scatter
s = std(residuals) / u. The trajectory is 'erratic' when s > 0.25
(`trend_scatter`), else 'declining' when r < -0.10 (`trend_tolerance`),
'growing' when r > 0.10, else 'flat'. The criterion passes for 'flat' and
'growing'.

Val-loss bound. The reference's bounds (8.5 must, 8.0 nice) are absolute
numbers of its own loss scale and mean nothing on other data. Give an absolute
`--val_loss_bound` / `--val_loss_nice_bound`, or `--baseline` no-VQ run
folder(s): the bounds are then (1 + 0.10) and (1 + 0.03) x the baseline's
mean final val loss (the reference's 8.5 and 8.0 are 9.7% and 3.2% above its
no-VQ 7.75). Without either the two criteria are 'n/a'.

Criteria that cannot apply (usage rules on a run without VQ) are 'n/a'. A
criterion that applies but lacks the records it needs fails as "cannot
judge", never passes: the usage thresholds of a VQ run (its config's
`vq.enabled`) without a usage record from epoch `monitor.usage_from_epoch`
on, the ranks of a run without embedding records. The trajectory of a run
with fewer than 3 records in its second half stays 'n/a' (too short to fit).
`--strict` exits with status 3 when a must-have criterion fails.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections import Counter
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from jepa_jax import errors
from jepa_jax.eval import goals
from jepa_jax.run import files as records
from jepa_jax.train import monitor
# A run folder read back (re-exported: `diagnose.load_run` is how callers read runs).
from jepa_jax.run.reader import Run, load_run, stage_dirs  # noqa: F401

PASS, FAIL, NA = 'pass', 'fail', 'n/a'


@dataclasses.dataclass(frozen=True)
class Criteria:
  usage_min: float = 0.15
  trend_tolerance: float = 0.10
  trend_scatter: float = 0.25
  context_rank_min: float = 5.0
  target_rank_min: float = 10.0
  val_loss_bound: Optional[float] = None
  usage_end_nice: float = 0.25
  context_rank_nice: float = 10.0
  target_rank_nice: float = 20.0
  val_loss_nice_bound: Optional[float] = None
  val_loss_margin: float = 0.10
  val_loss_nice_margin: float = 0.03

  def with_baseline(self, baseline_val_loss: float) -> 'Criteria':
    """Bounds relative to a baseline's final val loss (absolute bounds win)."""
    return dataclasses.replace(
        self,
        val_loss_bound=(self.val_loss_bound if self.val_loss_bound is not None
                        else (1 + self.val_loss_margin) * baseline_val_loss),
        val_loss_nice_bound=(self.val_loss_nice_bound
                             if self.val_loss_nice_bound is not None
                             else (1 + self.val_loss_nice_margin) * baseline_val_loss))


def usage_trajectory(embedding: Sequence[Dict[str, Any]], criteria: Criteria = Criteria()
                     ) -> Dict[str, Any]:
  """Classifies the usage over the second half of the run (module docstring)."""
  recs = [r for r in embedding if monitor.USAGE in r]
  if not recs:
    return {'label': NA, 'detail': 'no VQ usage records'}
  last = recs[-1]['step']
  half = [r for r in recs if r['step'] >= last / 2]
  if len(half) < 3:
    return {'label': NA, 'detail': f'{len(half)} records in the second half (need 3)'}
  t = np.array([r['step'] for r in half], float)
  u = np.array([r[monitor.USAGE] for r in half], float)
  slope, intercept = np.polyfit(t, u, 1)
  mean = float(u.mean())
  if mean <= 0:
    return {'label': 'declining', 'relative_trend': -1.0, 'relative_scatter': 0.0,
            'slope_per_step': 0.0, 'mean_usage': 0.0, 'detail': 'usage is zero'}
  change = slope * (t[-1] - t[0])
  rel, scatter = change / mean, float(np.std(u - (slope * t + intercept))) / mean
  if scatter > criteria.trend_scatter:
    label = 'erratic'
  elif rel < -criteria.trend_tolerance:
    label = 'declining'
  elif rel > criteria.trend_tolerance:
    label = 'growing'
  else:
    label = 'flat'
  return {'label': label, 'relative_trend': float(rel), 'relative_scatter': scatter,
          'slope_per_step': float(slope), 'mean_usage': mean,
          'from_step': int(t[0]), 'to_step': int(t[-1]),
          'detail': f'{label}: fitted change {rel:+.0%} of mean {mean:.1%}, scatter '
                    f'{scatter:.0%} over steps {int(t[0])}-{int(t[-1])}'}


def usage_records(run: Run) -> List[Dict[str, Any]]:
  """The embedding records whose usage is judged: from epoch
  `monitor.usage_from_epoch` on (the monitor's rule; default 1)."""
  start = monitor.Rules.from_config(run.config).usage_from_epoch
  return [r for r in run.embedding
          if monitor.USAGE in r and int(r.get('epoch', 0)) >= start]


def red_flags(run: Run) -> List[str]:
  """Red flags of a run: the monitor's abort rules replayed on its logs, and a
  failed status. A two-stage run: each stage's, prefixed with its name (the
  loss changes between stages, so val losses are not compared across them)."""
  if run.parts:
    return [f'{os.path.basename(p.path)}: {f}' for p in run.parts for f in red_flags(p)]
  rules = monitor.Rules.from_config(run.config)
  _, events = monitor.replay(run.embedding, run.epochs, rules)
  flags = [e['message'] for e in events if e['severity'] == 'abort']
  if run.status == 'failed':
    flags.append(f"run failed: {(run.summary or {}).get('reason', '?')}")
  return flags


def option_b(run: Run, force: bool = False) -> Dict[str, Any]:
  """The reference's Option-B rule (monitor rule `option_b_abort`) on a run's
  logs: {'applied', 'fired', 'events': [messages], 'rule': description}.
  Applied when the run's config has `monitor.option_b` on, or with `force`
  (same thresholds, from the config or the monitor's defaults). A two-stage
  run: each stage's events, prefixed with its name."""
  if run.parts:
    parts = [(os.path.basename(p.path), option_b(p, force)) for p in run.parts]
    events = [f'{name}: {e}' for name, r in parts for e in r['events']]
    return {'applied': any(r['applied'] for _, r in parts), 'fired': bool(events),
            'events': events, 'rule': parts[-1][1]['rule']}
  rules = monitor.Rules.from_config(run.config)
  if force:
    rules = dataclasses.replace(rules, option_b=True)
  rule = (f'VQ usage < {rules.option_b_usage:.0%} or context effective rank < '
          f'{rules.option_b_rank:g} by epoch {rules.option_b_epoch}')
  if not rules.option_b:
    return {'applied': False, 'fired': False, 'events': [], 'rule': rule}
  _, events = monitor.replay(run.embedding, run.epochs, rules)
  events = [e['message'] for e in events if e['rule'] == 'option_b_abort']
  return {'applied': True, 'fired': bool(events), 'events': events, 'rule': rule}


def alert_counts(run: Run) -> Dict[str, int]:
  if run.parts:
    total = Counter()
    for p in run.parts:
      total.update(alert_counts(p))
    return dict(total)
  rules = monitor.Rules.from_config(run.config)
  _, events = monitor.replay(run.embedding, run.epochs, rules)
  return dict(Counter(e['rule'] for e in events if e['severity'] == 'alert'))


def _check(name, level, ok, value, threshold, detail):
  return {'name': name, 'level': level, 'status': NA if ok is None else
          (PASS if ok else FAIL), 'value': value, 'threshold': threshold,
          'detail': detail}


def _usage_checks(run: Run, criteria: Criteria, traj: Dict[str, Any]):
  """usage_throughout, usage_trajectory (must) and usage_end (nice). A VQ run
  without a usage record from epoch `monitor.usage_from_epoch` on cannot be
  judged: both usage thresholds fail, never pass."""
  judged = usage_records(run)
  usage = [r[monitor.USAGE] for r in judged]
  trajectory = _check('usage_trajectory', 'must',
                      None if traj['label'] == NA else traj['label'] in ('flat', 'growing'),
                      traj['label'], criteria.trend_tolerance, traj['detail'])
  if not usage:
    start = monitor.Rules.from_config(run.config).usage_from_epoch
    ok, why = ((False, f'VQ run without a usage record from epoch {start} on: cannot judge')
               if run.vq_enabled else (None, 'no VQ'))
    return (_check('usage_throughout', 'must', ok, None, criteria.usage_min, why),
            trajectory, _check('usage_end', 'nice', ok, None, criteria.usage_end_nice, why))
  i = int(np.argmin(usage))
  return (_check('usage_throughout', 'must', min(usage) > criteria.usage_min, min(usage),
                 criteria.usage_min, f'min {min(usage):.1%} at step {judged[i]["step"]}'),
          trajectory,
          _check('usage_end', 'nice', usage[-1] > criteria.usage_end_nice, usage[-1],
                 criteria.usage_end_nice, f'{usage[-1]:.1%} at the end'))


def _rank_check(run: Run, name: str, level: str, key: str, threshold: float):
  """The final record's effective rank against `threshold`; a run without
  embedding records cannot be judged: fail."""
  final = run.embedding[-1] if run.embedding else {}
  if key not in final:
    return _check(name, level, False, None, threshold, 'no embedding records: cannot judge')
  v = final[key]
  return _check(name, level, v > threshold, v, threshold, f'{v:.2f} at step {final["step"]}')


def _val_check(run: Run, name: str, level: str, bound: Optional[float]):
  final_val = run.epochs[-1]['val_loss_mean'] if run.epochs else None
  if final_val is None:
    return _check(name, level, None, None, bound, 'no epoch records')
  if bound is None:
    return _check(name, level, None, final_val, None, 'no bound given')
  return _check(name, level, final_val < bound, final_val, bound,
                f'{final_val:.4g} vs bound {bound:.4g}')


def check_run(run: Run, criteria: Criteria = Criteria(),
              force_option_b: bool = False) -> Dict[str, Any]:
  """All criteria for one run: {'run', 'variant', 'status', 'criteria': [...],
  'red_flags', 'alerts', 'trajectory', 'option_b', 'must_have_passed'}.
  `option_b`: see `option_b` (force_option_b applies the rule to a run whose
  config has it off)."""
  traj = usage_trajectory(run.embedding, criteria)
  usage_throughout, usage_trajectory_check, usage_end = _usage_checks(run, criteria, traj)
  flags = red_flags(run)
  done = len(run.epochs)
  complete = run.status == 'completed' and done == run.num_epochs
  out = [usage_throughout, usage_trajectory_check,
         _rank_check(run, 'context_rank', 'must', 'context_effective_rank',
                     criteria.context_rank_min),
         _rank_check(run, 'target_rank', 'must', 'target_effective_rank',
                     criteria.target_rank_min),
         _val_check(run, 'val_loss', 'must', criteria.val_loss_bound),
         usage_end,
         _rank_check(run, 'context_rank_nice', 'nice', 'context_effective_rank',
                     criteria.context_rank_nice),
         _rank_check(run, 'target_rank_nice', 'nice', 'target_effective_rank',
                     criteria.target_rank_nice),
         _val_check(run, 'val_loss_nice', 'nice', criteria.val_loss_nice_bound),
         _check('stable_full_budget', 'nice', complete and not flags, done,
                run.num_epochs, f'{run.status}, {done}/{run.num_epochs} epochs, '
                f'{len(flags)} red flag(s)')] + goals.checks(run)
  musts = [c for c in out if c['level'] == 'must']
  return {'run': run.path, 'variant': run.variant, 'status': run.status,
          'learning': goals.learning(run),
          'epochs_completed': done, 'num_epochs': run.num_epochs,
          'criteria': out, 'red_flags': flags, 'alerts': alert_counts(run),
          'trajectory': traj, 'codebook': codebook_health(run),
          'option_b': option_b(run, force_option_b),
          'must_have_passed': all(c['status'] != FAIL for c in musts)}


HEALTH_KEYS = ('vq_churn', 'vq_restarted_share', 'vq_young_share',
               'vq_window_usage_ratio', 'vq_context_usage_ratio')


def codebook_health(run: Run) -> Dict[str, Any]:
  """The last measurement point's codebook health (not criteria: the
  reference has none for them): churn since the previous point, share of the
  codebook restarted since then, share of codes younger than one epoch, the
  training-window and masked-context usage. {} without those records."""
  recs = [r for r in run.embedding if 'vq_churn' in r]
  if not recs:
    return {}
  last = recs[-1]
  prev = recs[-2]['step'] if len(recs) > 1 else 0
  return {'step': last['step'], 'since_step': prev,
          **{k: last.get(k) for k in HEALTH_KEYS}}


TITLES = {
    'usage_throughout': 'VQ usage > {t:.0%} throughout',
    'usage_trajectory': 'VQ usage trajectory flat or growing',
    'context_rank': 'context effective rank > {t:g}',
    'target_rank': 'target effective rank > {t:g}',
    'val_loss': 'final val loss < bound',
    'usage_end': 'VQ usage > {t:.0%} at the end',
    'context_rank_nice': 'context effective rank > {t:g}',
    'target_rank_nice': 'target effective rank > {t:g}',
    'val_loss_nice': 'final val loss < nice bound',
    'stable_full_budget': 'stable for the full epoch budget',
    **goals.TITLES,
}


def title(check: Dict[str, Any]) -> str:
  t = check['threshold']
  return TITLES[check['name']].format(t=t if isinstance(t, (int, float)) else 0)


def format_result(result: Dict[str, Any]) -> str:
  lines = [f"== {result['run']} ({result['variant']}: {result['status']}, "
           f"{result['epochs_completed']}/{result['num_epochs']} epochs) =="]
  lines += goals.format_lines(result.get('learning') or {})
  for c in result['criteria']:
    lines.append(f"  {c['level']:<4}  {c['status'].upper():<4}  {title(c):<40} {c['detail']}")
  lines.append('  red flags: ' + ('none' if not result['red_flags'] else ''))
  lines += [f'    - {f}' for f in result['red_flags']]
  alerts = ', '.join(f'{k} x{v}' for k, v in sorted(result['alerts'].items()))
  lines.append(f"  alerts: {alerts or 'none'}")
  h = result.get('codebook') or {}
  if h:
    pct = lambda k: '–' if h.get(k) is None else f'{h[k]:.1%}'  # noqa: E731
    lines.append(f"  codebook at step {h['step']} (since step {h['since_step']}): churn "
                 f"{pct('vq_churn')} of val tokens, {pct('vq_restarted_share')} of codes "
                 f"restarted, {pct('vq_young_share')} younger than one epoch; usage "
                 f"{pct('vq_window_usage_ratio')} in the training window, "
                 f"{pct('vq_context_usage_ratio')} on masked-context tokens")
  ob = result.get('option_b') or {}
  if ob.get('applied'):
    lines.append(f"  Option B rule ({ob['rule']}): " +
                 ('FIRED, abort and move to Option C or D' if ob['fired'] else 'not fired'))
    lines += [f'    - {e}' for e in ob['events']]
  lines.append('  must-have: ' + ('PASS' if result['must_have_passed'] else 'FAIL'))
  return '\n'.join(lines)


def baseline_val_loss(paths: Sequence[str]) -> float:
  vals = []
  for p in paths:
    run = load_run(p)
    if not run.epochs:
      raise ValueError(f'{p}: baseline run has no epoch records')
    vals.append(run.epochs[-1]['val_loss_mean'])
  return float(np.mean(vals))


def main(argv=None) -> int:
  ap = errors.ArgumentParser(prog='python -m jepa_jax.diagnose',
                             description=__doc__.split('\n\n')[0])
  ap.add_argument('runs', nargs='+', metavar='RUN_DIR')
  ap.add_argument('--json', action='store_true', help='print JSON instead of text')
  ap.add_argument('--val_loss_bound', type=errors.finite_float)
  ap.add_argument('--val_loss_nice_bound', type=errors.finite_float)
  ap.add_argument('--baseline', help='comma-separated no-VQ run folders for relative '
                  'val-loss bounds')
  ap.add_argument('--option_b', action='store_true',
                  help="apply the reference's Option-B rule (monitor.option_b) even "
                  'to runs whose config has it off')
  ap.add_argument('--strict', action='store_true',
                  help='exit 3 when a must-have criterion fails')
  args = ap.parse_args(argv)
  criteria = Criteria(val_loss_bound=args.val_loss_bound,
                      val_loss_nice_bound=args.val_loss_nice_bound)
  try:
    if args.baseline:
      criteria = criteria.with_baseline(baseline_val_loss(args.baseline.split(',')))
    results = [check_run(load_run(p), criteria, args.option_b) for p in args.runs]
  except Exception as err:  # pylint: disable=broad-except
    status = errors.refused(err, also=(ValueError, OSError))
    if status is None:
      raise
    return status
  if args.json:
    print(json.dumps(records.to_builtin(results), indent=2))
  else:
    print('\n\n'.join(format_result(r) for r in results))
  if args.strict and not all(r['must_have_passed'] for r in results):
    return 3
  return 0


if __name__ == '__main__':
  sys.exit(main())
