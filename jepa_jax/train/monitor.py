"""Live collapse monitor: alert and abort rules over the logged metric history.

The monitor is a pure fold over the two logs a run writes: the
embedding-metrics records (`embedding_metrics.jsonl`, every
`train.embedding_metrics_every_steps`) and the epoch records
(`epoch_metrics.jsonl`). `observe_embedding` / `observe_epoch` take the
current `MonitorState` and one record and return the new state and the events
that record raised; nothing else is read or kept. `replay` folds whole logs,
so a resumed run (or `jepa_jax.diagnose`) recomputes exactly the state and
events the live run had at the same point.

Rules (thresholds in `config.monitor`; their defaults, in jepa_jax/config/base.py,
are the reference assessment's "Monitoring Checklist" and "Red Flags"):

  severity 'alert'
    usage_low        vq_usage_ratio < usage_alert (0.15)
    usage_declining  vq_usage_ratio strictly lower than at the previous
                     checkpoint for `usage_decline_checkpoints` (3)
                     checkpoints in a row (so 4 records: u0 > u1 > u2 > u3)
    rank_low         context_ or target_effective_rank < rank_alert (3.0),
                     one rule per metric
    val_rising       val_loss_mean strictly higher than the previous epoch's
                     for `val_increase_epochs` (2) epochs in a row
  severity 'abort' (the red flags)
    usage_collapse   vq_usage_ratio < usage_abort (0.10)
    val_spike        val_loss_mean > val_spike_factor (1.5) x the best
                     val_loss_mean of the epochs before
    rank_collapse    an effective rank < rank_abort (1.0), one per metric
    early_stop_before_min_epochs
                     early stopping triggered after fewer than min_epochs (60)
                     completed epochs
    option_b_abort   only with `option_b` (off by default): the reference's
                     decision rule for its Option B ("if Option B shows any
                     VQ usage below 12% or effective rank below 4.0 by epoch
                     15, abort and move to Option C or D", assessment,
                     "Probability Assessment"): vq_usage_ratio <
                     option_b_usage (0.12) or context_effective_rank <
                     option_b_rank (4.0) on a record of (0-based) epoch <
                     option_b_epoch (15), i.e. within the first 15 epochs; one
                     rule per metric. The usage half reads the same records as
                     the other usage rules (epoch >= usage_from_epoch).

Usage rules read only the records of epoch >= `usage_from_epoch` (1: after
the first epoch, when a codebook has had one pass over the data; 0: every
record, the reference's "at any point"): usage is judged by its values, and
its minimum, after epoch 1.

Firing: a rule is edge-triggered. Each (rule, metric) pair has a condition
that is re-evaluated on every record carrying its metric; the event fires on
the record where the condition becomes true after being false (or unknown,
at the start), not on the following records while it holds. Once the
condition is false again the pair re-arms and fires again the next time it
becomes true. `early_stop_before_min_epochs` can fire only once.

Early stopping (val loss with patience `train.early_stopping_patience`) is
part of the same fold: the state keeps the best val loss, its epoch and the
number of epochs since; `state.early_stop` turns true when that count reaches
the patience. Aborting is the trainer's decision: with `config.monitor.abort`
the run ends at the first abort-severity event with `status: aborted` and the
event's message as the reason (`stop_decision`).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

from jepa_jax.config import base as config_defaults

USAGE = 'vq_usage_ratio'
RANKS = ('context_effective_rank', 'target_effective_rank')
VAL = 'val_loss_mean'

@dataclasses.dataclass(frozen=True)
class Rules:
  """Thresholds of every rule (config.monitor) plus the early-stopping
  patience (config.train.early_stopping_patience)."""
  abort: bool
  usage_alert: float
  usage_decline_checkpoints: int
  rank_alert: float
  val_increase_epochs: int
  usage_abort: float
  val_spike_factor: float
  rank_abort: float
  min_epochs: int
  usage_from_epoch: int
  option_b: bool
  option_b_epoch: int
  option_b_usage: float
  option_b_rank: float
  patience: int

  @classmethod
  def from_config(cls, cfg) -> 'Rules':
    """From a ConfigDict or a config.json dict; a key it lacks takes its
    jepa_jax/config/base.py default (run folders written before the monitor existed
    have no `monitor` group)."""
    monitor = config_defaults.with_defaults('monitor', _lookup(cfg, 'monitor'))
    train = config_defaults.with_defaults('train', _lookup(cfg, 'train'))
    return cls(**monitor, patience=train['early_stopping_patience'])


def _lookup(cfg, key):
  try:
    return cfg[key]
  except (KeyError, AttributeError, TypeError):
    return None


@dataclasses.dataclass(frozen=True)
class MonitorState:
  """Everything the rules need from the history so far (small, JSON-able)."""
  usage_tail: Tuple[float, ...] = ()   # last usage_decline_checkpoints+1 usages
  val_tail: Tuple[float, ...] = ()     # last val_increase_epochs+1 val losses
  best_val: float = math.inf
  best_epoch: int = -1
  bad_epochs: int = 0
  early_stop: bool = False
  active: Tuple[str, ...] = ()         # sorted '<rule>:<metric>' now holding
  num_alerts: int = 0                  # events of severity 'alert' so far
  red_flags: Tuple[str, ...] = ()      # messages of abort-severity events
  abort_reason: Optional[str] = None   # the first red flag's message

  def to_dict(self) -> Dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> 'MonitorState':
    d = dict(d)
    for k in ('usage_tail', 'val_tail', 'active', 'red_flags'):
      d[k] = tuple(d.get(k, ()))
    return cls(**d)


def initial_state() -> MonitorState:
  return MonitorState()


def _edge(state: MonitorState, key: str, holds: bool) -> Tuple[MonitorState, bool]:
  """Updates the active set; True when `key` just became active."""
  active = set(state.active)
  fired = holds and key not in active
  if holds:
    active.add(key)
  else:
    active.discard(key)
  return dataclasses.replace(state, active=tuple(sorted(active))), fired


def _event(record, rule, severity, metric, value, threshold, message):
  return {'step': record.get('step'), 'epoch': record.get('epoch'), 'rule': rule,
          'severity': severity, 'metric': metric, 'value': value,
          'threshold': threshold, 'message': message}


def _apply(state: MonitorState, record, checks) -> Tuple[MonitorState, List[dict]]:
  """checks: (rule, severity, metric, holds, value, threshold, message)."""
  events = []
  for rule, severity, metric, holds, value, threshold, message in checks:
    state, fired = _edge(state, f'{rule}:{metric}', holds)
    if fired:
      events.append(_event(record, rule, severity, metric, value, threshold, message))
  return _count(state, events), events


def _count(state: MonitorState, events) -> MonitorState:
  alerts = sum(e['severity'] == 'alert' for e in events)
  flags = tuple(e['message'] for e in events if e['severity'] == 'abort')
  return dataclasses.replace(
      state, num_alerts=state.num_alerts + alerts,
      red_flags=state.red_flags + flags,
      abort_reason=state.abort_reason or (flags[0] if flags else None))


def observe_embedding(state: MonitorState, record: Mapping[str, Any],
                      rules: Rules) -> Tuple[MonitorState, List[dict]]:
  """Folds one embedding-metrics record (keys as in embedding_metrics.jsonl)."""
  checks = []
  step = record.get('step')
  if USAGE in record and int(record.get('epoch', 0)) >= rules.usage_from_epoch:
    u = float(record[USAGE])
    tail = (state.usage_tail + (u,))[-(rules.usage_decline_checkpoints + 1):]
    state = dataclasses.replace(state, usage_tail=tail)
    declining = (len(tail) == rules.usage_decline_checkpoints + 1 and
                 all(b < a for a, b in zip(tail, tail[1:])))
    checks += [
        ('usage_low', 'alert', USAGE, u < rules.usage_alert, u, rules.usage_alert,
         f'VQ usage {u:.1%} < {rules.usage_alert:.0%} at step {step}'),
        ('usage_declining', 'alert', USAGE, declining, u,
         rules.usage_decline_checkpoints,
         f'VQ usage declined {rules.usage_decline_checkpoints} checkpoints in a '
         f'row ({" > ".join(f"{x:.1%}" for x in tail)}) at step {step}'),
        ('usage_collapse', 'abort', USAGE, u < rules.usage_abort, u, rules.usage_abort,
         f'VQ usage {u:.1%} < {rules.usage_abort:.0%} at step {step}'),
    ]
  for metric in RANKS:
    if metric in record:
      r = float(record[metric])
      name = metric.replace('_', ' ')
      checks += [
          ('rank_low', 'alert', metric, r < rules.rank_alert, r, rules.rank_alert,
           f'{name} {r:.2f} < {rules.rank_alert} at step {step}'),
          ('rank_collapse', 'abort', metric, r < rules.rank_abort, r, rules.rank_abort,
           f'{name} {r:.2f} < {rules.rank_abort} at step {step}'),
      ]
  return _apply(state, record, checks + _option_b_checks(record, rules))


OPTION_B_RANK = 'context_effective_rank'


def _option_b_checks(record: Mapping[str, Any], rules: Rules) -> list:
  """The `option_b_abort` checks of one embedding record (module docstring);
  none when the rule is off or the record is from epoch >= option_b_epoch."""
  epoch = int(record.get('epoch', 0))
  if not rules.option_b or epoch >= rules.option_b_epoch:
    return []
  step, checks = record.get('step'), []
  where = f'by epoch {rules.option_b_epoch} (epoch {epoch + 1}, step {step})'
  if USAGE in record and epoch >= rules.usage_from_epoch:
    u = float(record[USAGE])
    checks.append(('option_b_abort', 'abort', USAGE, u < rules.option_b_usage, u,
                   rules.option_b_usage, f'Option B rule: VQ usage {u:.1%} < '
                   f'{rules.option_b_usage:.0%} {where}'))
  if OPTION_B_RANK in record:
    r = float(record[OPTION_B_RANK])
    checks.append(('option_b_abort', 'abort', OPTION_B_RANK, r < rules.option_b_rank, r,
                   rules.option_b_rank, f'Option B rule: context effective rank '
                   f'{r:.2f} < {rules.option_b_rank} {where}'))
  return checks


def observe_epoch(state: MonitorState, record: Mapping[str, Any],
                  rules: Rules) -> Tuple[MonitorState, List[dict]]:
  """Folds one epoch record: val-loss rules, then early stopping.

  Early stopping: a val loss strictly below the best so far is a new best
  (bad_epochs = 0); otherwise bad_epochs += 1 and the run should stop once
  bad_epochs >= patience.
  """
  v, epoch = float(record[VAL]), int(record['epoch'])
  tail = (state.val_tail + (v,))[-(rules.val_increase_epochs + 1):]
  rising = (len(tail) == rules.val_increase_epochs + 1 and
            all(b > a for a, b in zip(tail, tail[1:])))
  spike_at = rules.val_spike_factor * state.best_val
  state = dataclasses.replace(state, val_tail=tail)
  state, events = _apply(state, record, [
      ('val_rising', 'alert', VAL, rising, v, rules.val_increase_epochs,
       f'val loss rose {rules.val_increase_epochs} epochs in a row '
       f'({" < ".join(f"{x:.4g}" for x in tail)}) at epoch {epoch}'),
      ('val_spike', 'abort', VAL, v > spike_at, v, rules.val_spike_factor,
       f'val loss {v:.4g} > {rules.val_spike_factor} x best {state.best_val:.4g} '
       f'(epoch {state.best_epoch}) at epoch {epoch}'),
  ])
  if v < state.best_val:
    state = dataclasses.replace(state, best_val=v, best_epoch=epoch, bad_epochs=0)
  else:
    state = dataclasses.replace(state, bad_epochs=state.bad_epochs + 1)
  if state.bad_epochs >= rules.patience and not state.early_stop:
    state = dataclasses.replace(state, early_stop=True)
    if epoch + 1 < rules.min_epochs:
      ev = _event(record, 'early_stop_before_min_epochs', 'abort', 'epochs_completed',
                  epoch + 1, rules.min_epochs,
                  f'early stopping after {epoch + 1} epochs < min_epochs '
                  f'{rules.min_epochs} (no new best val loss for '
                  f'{state.bad_epochs} epochs)')
      state = _count(state, [ev])
      events.append(ev)
  return state, events


def replay(embedding_records: Iterable[Mapping], epoch_records: Iterable[Mapping],
           rules: Rules, state: Optional[MonitorState] = None
           ) -> Tuple[MonitorState, List[dict]]:
  """Folds both logs in the order the trainer observes them.

  Records are merged by step; at equal steps the embedding record comes
  first (the trainer logs it inside the epoch, before the epoch's end).
  Returns the final state and every event, in order.
  """
  merged = ([(int(r['step']), 0, i, r) for i, r in enumerate(embedding_records)] +
            [(int(r['step']), 1, i, r) for i, r in enumerate(epoch_records)])
  merged.sort(key=lambda x: x[:3])
  state = state or initial_state()
  events: List[dict] = []
  for _, kind, _, record in merged:
    fold = observe_embedding if kind == 0 else observe_epoch
    state, new = fold(state, record, rules)
    events += new
  return state, events


def stop_decision(state: MonitorState, rules: Rules) -> Optional[Tuple[str, Optional[str]]]:
  """(status, reason) when the run must end now, else None.

  With rules.abort a red flag ends the run as 'aborted' (reason: the first red
  flag). Otherwise early stopping ends it as 'early_stopped'.
  """
  if rules.abort and state.abort_reason:
    return 'aborted', state.abort_reason
  if state.early_stop:
    return 'early_stopped', None
  return None


def format_event(event: Mapping[str, Any]) -> str:
  tag = 'RED FLAG' if event['severity'] == 'abort' else 'ALERT'
  return f"[monitor {tag}] {event['rule']}: {event['message']}"
