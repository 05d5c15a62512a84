"""Checksums of a checkpoint's state: computed when it is saved, checked when
it is restored, so damaged bytes are never trained on.

Orbax reads back whatever bytes its data files hold: 512 garbled bytes in the
latest checkpoint restored without a word (only the codebook differed), and
the run went non-finite two steps later. Now each save also writes the item

  integrity  JSON: {'state': {LEAF: DIGEST}}, the BLAKE2b-128 digest of each
             array of the state (its dtype, shape and bytes), computed on the
             host from the very arrays handed to Orbax

and restoring recomputes the digests of what it read: a leaf that differs
makes the checkpoint damaged (`jepa_jax.run.checkpoint` moves it aside and falls
back to the previous one). A checkpoint written before this item existed is
restored unchecked. A partial restore (init_from) checks the leaves it reads.
Before any of that, `damaged_files` finds files missing or unreadable.

Orbax's expected noise, filtered out once at import (`jepa_jax.run.checkpoint`
imports this module): the warnings every mid-epoch or read-only checkpoint
manager logs, the 'Event loop is closed' errors of its asyncio shutdown, and
the tracebacks its threads log for a failed write (a full disk), which
`jepa_jax.run.checkpoint` raises again as one OSError (`as_os_error`).
Everything else is reported as before.
"""
from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import sys
import threading
import time
from typing import Dict, List

import jax
import numpy as np


ITEM = 'integrity'


class DamagedCheckpoint(ValueError):
  """A checkpoint whose files are missing or unreadable, or whose arrays read
  back differ from their checksums (not a config mismatch)."""


# Files a complete checkpoint step folder holds whatever its tree: the tree
# metadata of the state and the meta item. Without them Orbax reads an empty
# tree, which would look like a checkpoint of another model.
REQUIRED_FILES = ('state/_METADATA', 'meta/metadata')


def damaged_files(step_dir: str) -> List[str]:
  """'NAME: why' for each required file missing and each file that cannot be
  opened and read, in the step folder `step_dir`; [] when it looks whole."""
  out = [f'{name}: missing' for name in REQUIRED_FILES
         if not os.path.isfile(os.path.join(step_dir, name))]

  def unreadable(err):
    out.append(f'{os.path.relpath(err.filename, step_dir)}: {err.strerror}')

  for root, _, files in os.walk(step_dir, onerror=unreadable):
    for name in files:
      path = os.path.join(root, name)
      try:
        with open(path, 'rb') as f:
          f.read(1)
      except OSError as err:
        out.append(f'{os.path.relpath(path, step_dir)}: {err.strerror}')
  return out


def _host_array(leaf) -> np.ndarray:
  if hasattr(leaf, 'dtype') and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
    leaf = jax.random.key_data(leaf)
  return np.ascontiguousarray(np.asarray(leaf))


def digests(tree) -> Dict[str, str]:
  """{'params/encoder/...': hex digest} of every array leaf of `tree`."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  host = jax.device_get([leaf for _, leaf in leaves])
  out = {}
  for (path, _), leaf in zip(leaves, host):
    arr = _host_array(leaf)
    h = hashlib.blake2b(digest_size=16)
    h.update(f'{arr.dtype.str}{arr.shape}'.encode())
    h.update(arr.reshape(-1).view(np.uint8))
    out[jax.tree_util.keystr(path, simple=True, separator='/')] = h.hexdigest()
  return out


def mismatches(saved: Dict[str, str], tree) -> List[str]:
  """The leaves of `tree` whose bytes differ from the digests `saved` when
  the checkpoint was written (or that it has no digest of), sorted."""
  return sorted(name for name, digest in digests(tree).items()
                if saved.get(name) != digest)


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


def orbax_threads() -> List[threading.Thread]:
  """The threads of Orbax's own (its commit futures) still running."""
  return [t for t in threading.enumerate()
          if t.is_alive() and t is not threading.current_thread()
          and type(t).__module__.startswith('orbax.')]


def finish_orbax_threads(timeout_s: float = 5.0) -> None:
  """Waits up to `timeout_s` in all for Orbax's threads to end (those still
  running after it: `orbax_threads()`).

  A save that failed part-way (a full disk) can leave threads that its
  manager no longer tracks, so its `close` does not wait for them: one still
  writing when the interpreter shut down logged a traceback ('cannot
  schedule new futures after interpreter shutdown'), and one waiting for a
  signal of the failed save would hold the exit for Orbax's coordination
  timeout (300 s). The caller exits at once while any remain
  (`jepa_jax.train.interrupts.run_and_exit`)."""
  deadline = time.monotonic() + timeout_s
  for thread in orbax_threads():
    # threading's own join: Orbax's re-raises the thread's error, and the
    # failed save was already raised
    threading.Thread.join(thread, max(0.0, deadline - time.monotonic()))
