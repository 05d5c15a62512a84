"""Where a run's wall time goes: host time per section of the train loop.

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
"""
from __future__ import annotations

import collections
import contextlib
import time
from typing import Any, Dict

import jax

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
