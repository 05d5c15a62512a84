"""What the training loop carries from step to step, in the form a checkpoint
saves: the bookkeeping dict, the collapse monitor's state as JSON, the
per-step metrics of the unfinished epoch; and the preemption request.

Everything here goes into every checkpoint's `meta` (`jepa_jax.run.checkpoint`),
so a resumed run continues exactly where the saved one stood.

The numbers of an epoch end: train means, validation, the epoch line, and
the finite-loss check that stops a run whose loss is not a number.

Where a run's wall time goes: host time per section of the train loop.

`Sections` charges the host clock to one named section at a time (entering a
section pauses the enclosing one, so the totals add up to the wall time with
no double counting) and, through `jax.monitoring`, the tracing, lowering and
XLA compiles that happen inside each section. The trainer writes the result
to `summary.json` as `time_breakdown`.

CPU seconds (`time.process_time`, every thread of the process) next to the
wall seconds: on a loaded machine they say how much work a section did.
Host time, not device time: JAX dispatches the train step asynchronously, so
a section that waits for a result (a logging point fetching metrics, the
epoch end fetching its per-step metrics) also holds the device time of the
steps still in flight.

Periodic actions of a training loop, each registered with when it is due.

In the spirit of big_vision's `itstime`: after every train step the loop asks
`Periodic.after_step(step)`, which runs, in the order they were registered,
the actions whose `due(step)` is true, each charged to its section of the
run's timer (`jepa_jax.train.loop_state`; by default the section named as the action). An action returns True to stop the loop (it
has saved what it needs); the later ones are then skipped.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import time
from typing import Any, Callable, Dict, List, Optional

import jax
import numpy as np

from jepa_jax.train import interrupts
from jepa_jax.train import monitor
from jepa_jax.train.step import LOSS_COMPONENTS


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

  `monitor` is the collapse monitor's state (`jepa_jax.train.monitor`: alert
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
  (`jepa_jax.train.interrupts` records the request; `status` names it).

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


class TrainingError(RuntimeError):
  """The run cannot go on (non-finite loss, bad data). One-line message."""


class NonFiniteLoss(TrainingError):
  """The loss (or a component of it) is not a finite number."""


def check_finite(values: Dict[str, float], where: str) -> None:
  """TrainingError naming every non-finite value of `values` and `where`."""
  bad = {k: v for k, v in values.items() if not np.isfinite(v)}
  if bad:
    names = ', '.join(f'{k}={v}' for k, v in sorted(bad.items()))
    raise NonFiniteLoss(f'non-finite loss {where}: {names}; run stopped, '
                        'logs up to the last complete epoch are intact')


def mean_metrics(stacked: Dict[str, np.ndarray], prefix: str) -> Dict[str, float]:
  """'{prefix}_{component}_mean' of each loss component over the epoch's steps."""
  return {f'{prefix}_{k}_mean': float(np.mean(stacked[k])) for k in LOSS_COMPONENTS}


def evaluate(eval_fn, state, images, batch_size) -> Dict[str, float]:
  """Mean loss components over the full validation batches (fixed order)."""
  n = (len(images) // batch_size) * batch_size
  outs = jax.device_get([eval_fn(state, images[i:i + batch_size],
                                 np.arange(i, i + batch_size, dtype=np.int32))
                         for i in range(0, n, batch_size)])
  return {k: float(np.mean(np.stack([o[k] for o in outs]))) for k in outs[0]}


def epoch_line(epoch: int, step: int, stacked: Dict[str, np.ndarray],
               val: Dict[str, float]) -> Dict[str, Any]:
  """The line of epoch_metrics.jsonl: train and val means of every loss
  component, the last step's temperature and learning rate, and with VQ the
  mean share of codes a train batch used; raises TrainingError when a mean
  is not finite."""
  train_means = mean_metrics(stacked, 'train')
  check_finite(train_means, f'in epoch {epoch}')
  val_means = {f'val_{k}_mean': v for k, v in val.items()}
  check_finite(val_means, f'in validation after epoch {epoch}')
  line = {'epoch': epoch, 'step': step, **train_means, **val_means,
          'temperature': float(stacked['temperature'][-1]),
          'learning_rate': float(stacked['learning_rate'][-1])}
  if 'vq_batch_usage_ratio' in stacked:
    line['train_vq_batch_usage_ratio_mean'] = float(np.mean(stacked['vq_batch_usage_ratio']))
  return line


BACKEND_COMPILE = '/jax/core/compile/backend_compile_duration'
# Tracing, lowering to MLIR and the XLA compile of one jitted function.
COMPILE_EVENTS = ('/jax/core/compile/jaxpr_trace_duration',
                  '/jax/core/compile/jaxpr_to_mlir_module_duration',
                  BACKEND_COMPILE)


class Sections:
  """Exclusive wall time per named section; use as a context manager.

      with Sections() as t:
        with t('data'):
          ...
      t.report()   # {'seconds': {...}, 'compile_seconds': {...}, 'compiles': {...}}

  Time outside every `t(name)` block (between entering and leaving the
  `Sections`) is charged to 'other', or to the name last given to
  `t.switch(name)` (sequential phases).
  """

  def __init__(self):
    self.seconds = collections.defaultdict(float)
    self.cpu_seconds = collections.defaultdict(float)
    self.calls = collections.defaultdict(int)
    self.compile_seconds = collections.defaultdict(float)
    self.compiles = collections.defaultdict(int)
    self._stack = ['other']
    self._since = self._cpu_since = None

  def start(self) -> 'Sections':
    self._since, self._cpu_since = time.perf_counter(), time.process_time()
    jax.monitoring.register_event_duration_secs_listener(self._on_event)
    return self

  def stop(self) -> None:
    if self._since is not None:
      self._charge()
      self._since = None
      jax.monitoring.unregister_event_duration_listener(self._on_event)

  def __enter__(self) -> 'Sections':
    return self.start()

  def __exit__(self, *exc) -> None:
    self.stop()

  def _charge(self) -> None:
    now, cpu = time.perf_counter(), time.process_time()
    self.seconds[self._stack[-1]] += now - self._since
    self.cpu_seconds[self._stack[-1]] += cpu - self._cpu_since
    self._since, self._cpu_since = now, cpu

  def switch(self, name: str) -> None:
    """From now on, time outside any `self(...)` block goes to `name`."""
    self._charge()
    self._stack[0] = name
    self.calls[name] += 1

  @contextlib.contextmanager
  def __call__(self, name: str):
    self._charge()
    self._stack.append(name)
    self.calls[name] += 1
    try:
      yield
    finally:
      self._charge()
      self._stack.pop()

  def iterate(self, name: str, iterable):
    """Yields the items of `iterable`, charging the time to produce each to `name`."""
    it = iter(iterable)
    while True:
      with self(name):
        try:
          item = next(it)
        except StopIteration:
          return
      yield item

  def _on_event(self, event: str, duration: float, **kwargs) -> None:
    del kwargs
    if event in COMPILE_EVENTS:
      self.compile_seconds[self._stack[-1]] += duration
      if event == BACKEND_COMPILE:
        self.compiles[self._stack[-1]] += 1

  def total_compile_seconds(self) -> float:
    """Tracing, lowering and XLA compiling of every function, all sections."""
    return float(sum(self.compile_seconds.values()))

  def report(self) -> Dict[str, Any]:
    """Wall seconds, process CPU seconds (all threads: XLA's, background
    saves'), entries, compile seconds (trace + lower + XLA, included in the
    seconds) and XLA compiles per section; plain JSON values."""
    return {'seconds': {k: round(v, 4) for k, v in sorted(self.seconds.items())},
            'cpu_seconds': {k: round(v, 4) for k, v in sorted(self.cpu_seconds.items())},
            'calls': dict(sorted(self.calls.items())),
            'compile_seconds': {k: round(v, 4)
                                for k, v in sorted(self.compile_seconds.items())},
            'compiles': dict(sorted(self.compiles.items()))}


def itstime(step: int, every_n_steps: int, total_steps: int = 0, last: bool = False) -> bool:
  """Whether `step` (steps done, >= 1) is a multiple of `every_n_steps`
  (0 or None: never), or, with `last`, the run's last step `total_steps`."""
  return bool(every_n_steps and step % every_n_steps == 0) or (
      last and step == total_steps)


@dataclasses.dataclass(frozen=True)
class Action:
  name: str
  due: Callable[[int], bool]         # step -> run it now?
  run: Callable[[int], bool]         # step -> stop the loop?
  section: str                       # the timer section it is charged to


class Periodic:
  """The actions run after each train step (module docstring)."""

  def __init__(self, timer):
    self._timer = timer
    self._actions: List[Action] = []

  def register(self, name: str, due: Callable[[int], bool], run: Callable[[int], bool],
               section: Optional[str] = None) -> 'Periodic':
    self._actions.append(Action(name, due, run, section or name))
    return self

  @property
  def names(self) -> List[str]:
    return [a.name for a in self._actions]

  def after_step(self, step: int) -> bool:
    """Runs the actions due at `step`; True when one of them stops the loop."""
    for action in self._actions:
      if action.due(step):
        with self._timer(action.section):
          if action.run(step):
            return True
    return False
