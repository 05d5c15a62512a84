"""Orbax's expected noise, filtered out once at import (`jepa_jax.checkpoint`
imports this module): the warnings every mid-epoch or read-only checkpoint
manager logs, the 'Event loop is closed' errors of its asyncio shutdown, and
the tracebacks its threads log for a failed write (a full disk), which
`jepa_jax.checkpoint` raises again as one OSError (`as_os_error`).
Everything else is reported as before.
"""
from __future__ import annotations

import errno
import logging
import os
import re
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


def is_failed_write(exc) -> bool:
  """A write that failed for want of space: an OSError ENOSPC / EDQUOT, or
  TensorStore's ValueError of one (its message names the OS error)."""
  if isinstance(exc, OSError):
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)
  text = str(exc) if isinstance(exc, ValueError) else ''
  return 'No space left on device' in text or 'Disk quota exceeded' in text


def as_os_error(err: BaseException, path: str) -> BaseException:
  """Orbax reports a failed write of its data files as a ValueError of
  TensorStore ('RESOURCE_EXHAUSTED: ... No space left on device
  [os_error_code='28']'): that one becomes the OSError it stands for,
  naming `path` (the main loop reports OSErrors in one line); any other
  error is returned as it is."""
  if isinstance(err, OSError):
    return err
  text = str(err)
  code = re.search(r"os_error_code='(\d+)'", text)
  number = int(code.group(1)) if code else (
      errno.ENOSPC if 'No space left on device' in text else None)
  if number is None:
    return err
  out = OSError(number, os.strerror(number), path)
  out.__cause__ = err
  return out


def _is_noise(exc) -> bool:
  return is_event_loop_closed(exc) or is_failed_write(exc)


def _orbax_leftover(u) -> bool:
  """An unfinished coroutine of a failed Orbax save, garbage-collected with
  its write error or while the interpreter shuts down ('sys.meta_path is
  None')."""
  return ('orbax' in repr(u.object)
          and (is_failed_write(u.exc_value) or sys.is_finalizing()))


def quiet_event_loop_closed() -> None:
  """Drops that noise from the places it is printed (unraisable exceptions,
  thread exceptions, absl's and asyncio's loggers); everything else is
  reported as before."""
  unraisable, thread_hook = sys.unraisablehook, threading.excepthook

  def on_unraisable(u):
    if not (is_event_loop_closed(u.exc_value) or _orbax_leftover(u)):
      unraisable(u)

  def on_thread_exception(args):
    if not is_event_loop_closed(args.exc_value):
      thread_hook(args)

  class _Filter(logging.Filter):
    def filter(self, record):
      exc = record.exc_info[1] if record.exc_info else None
      message = record.getMessage()
      return not (_is_noise(exc) or 'Event loop is closed' in message
                  or (record.levelno >= logging.ERROR and is_failed_write(ValueError(message))))

  sys.unraisablehook, threading.excepthook = on_unraisable, on_thread_exception
  logging.getLogger('asyncio').addFilter(_Filter())
  logging.getLogger('absl').addFilter(_Filter())


quiet_event_loop_closed()
