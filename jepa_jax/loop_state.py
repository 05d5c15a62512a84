"""What the training loop carries from step to step, in the form a checkpoint
saves: the bookkeeping dict, the collapse monitor's state as JSON, the
per-step metrics of the unfinished epoch; and the preemption request.

Everything here goes into every checkpoint's `meta` (`jepa_jax.checkpoint`),
so a resumed run continues exactly where the saved one stood.
"""
from __future__ import annotations

import json
from typing import Any, Dict, Optional

import jax
import numpy as np

from jepa_jax import interrupts
from jepa_jax import monitor

# Statuses of a run that ended by itself (final weights are written).
FINISHED = ('completed', 'early_stopped', 'aborted')


def monitor_to_json(state: monitor.MonitorState) -> Dict[str, Any]:
  """The monitor state as strict JSON (no best val loss yet: None, not inf)."""
  d = state.to_dict()
  d['best_val'] = None if d['best_epoch'] < 0 else d['best_val']
  return json.loads(json.dumps(d, allow_nan=False))     # tuples -> lists


def monitor_from_json(d: Dict[str, Any]) -> monitor.MonitorState:
  d = dict(d)
  d['best_val'] = float('inf') if d['best_val'] is None else d['best_val']
  return monitor.MonitorState.from_dict(d)


def new_loop_state() -> Dict[str, Any]:
  """The loop's bookkeeping: one JSON-able dict, saved in every checkpoint.

  `monitor` is the collapse monitor's state (`jepa_jax.monitor`: alert
  edges, tails, best val loss and epochs since, i.e. early stopping);
  `reason` the red flag that aborted the run.
  """
  return {'status': 'running', 'epochs_completed': 0, 'reason': None,
          'monitor': monitor_to_json(monitor.initial_state())}


def new_meta() -> Dict[str, Any]:
  """A checkpoint's `meta` before the first step: the data position (epoch,
  batch in the epoch), the bookkeeping and no partial epoch."""
  return {'step': 0, 'epoch': 0, 'step_in_epoch': 0, 'loop': new_loop_state(),
          'partial_epoch': {}}


class EpochMetrics:
  """Per-step train metrics of the current epoch.

  Step outputs stay on the device until the epoch ends or a checkpoint needs
  them (one host transfer each); a resumed epoch starts from the values its
  checkpoint holds, so epoch means equal the uninterrupted run's bit for bit.
  """

  def __init__(self, saved: Optional[Dict[str, Any]] = None):
    self._host = {k: np.asarray(v['values'], dtype=v['dtype'])
                  for k, v in (saved or {}).items()}
    self._pending = []

  def add(self, metrics) -> None:
    self._pending.append(metrics)

  def fetch(self) -> Dict[str, np.ndarray]:
    if self._pending:             # stacked on the host: no per-length compile
      steps = jax.device_get(self._pending)
      new = {k: np.stack([m[k] for m in steps]) for k in steps[0]}
      self._pending = []
      self._host = {k: np.concatenate([self._host[k], v]) if k in self._host else v
                    for k, v in new.items()}
    return self._host

  def to_json(self) -> Dict[str, Any]:
    return {k: {'dtype': str(v.dtype), 'values': v.tolist()}
            for k, v in self.fetch().items()}


class Preemption:
  """SIGTERM or SIGINT -> save at the next step boundary and stop
  (`jepa_jax.interrupts` records the request; `status` names it).

  Multi-host (jax.distributed initialised): Orbax's preemption sync point
  too, so all hosts stop at the same step.
  """

  def __init__(self):
    self.requested = False

  def install(self) -> None:
    interrupts.set_phase('loop')

  def uninstall(self) -> None:
    interrupts.set_phase('finish')

  @property
  def status(self) -> str:
    return interrupts.requested() or 'preempted'

  def reached(self, ckpts, step: int) -> bool:
    self.requested = self.requested or interrupts.requested() is not None
    if jax.process_count() > 1:
      self.requested = self.requested or ckpts.reached_preemption(step)
    return self.requested
