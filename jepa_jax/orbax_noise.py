"""Orbax's expected noise, filtered out once at import (`jepa_jax.checkpoint`
imports this module): the warnings every mid-epoch or read-only checkpoint
manager logs, and the 'Event loop is closed' errors of its asyncio shutdown.
Everything else is reported as before.
"""
from __future__ import annotations

import logging
import sys
import threading


class _SkipExpectedOrbaxWarnings(logging.Filter):
  """Orbax warns about each mid-epoch checkpoint (no val loss, by design) and
  about every read-only manager (how init_from reads a checkpoint)."""

  EXPECTED = ('did not provide metrics', 'read_only=True', 'is read only')

  def filter(self, record):
    message = record.getMessage()
    return not any(text in message for text in self.EXPECTED)


logging.getLogger('absl').addFilter(_SkipExpectedOrbaxWarnings())


def is_event_loop_closed(exc) -> bool:
  """Orbax's asyncio shutdown: `RuntimeError('Event loop is closed')` raised in
  a destructor, callback or thread after its event loop closed (harmless)."""
  return isinstance(exc, RuntimeError) and str(exc) == 'Event loop is closed'


def quiet_event_loop_closed() -> None:
  """Drops that noise from the three places it is printed (unraisable
  exceptions, thread exceptions, asyncio's logger); everything else is
  reported as before."""
  unraisable, thread_hook = sys.unraisablehook, threading.excepthook

  def on_unraisable(u):
    if not is_event_loop_closed(u.exc_value):
      unraisable(u)

  def on_thread_exception(args):
    if not is_event_loop_closed(args.exc_value):
      thread_hook(args)

  class _Filter(logging.Filter):
    def filter(self, record):
      exc = record.exc_info[1] if record.exc_info else None
      return not (is_event_loop_closed(exc) or 'Event loop is closed' in record.getMessage())

  sys.unraisablehook, threading.excepthook = on_unraisable, on_thread_exception
  logging.getLogger('asyncio').addFilter(_Filter())


quiet_event_loop_closed()
