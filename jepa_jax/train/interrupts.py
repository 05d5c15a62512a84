"""SIGTERM and SIGINT (Ctrl-C), from process start to exit, without tracebacks.

What a signal does depends on where the run is (`phase`):

  'startup'  before or after a run (imports, flag parsing): one line, then
             exit at once with status 128 + the signal number; nothing was
             written.
  'setup'    a run is being set up (data, model, restore, compile): no step
             boundary to wait for, so the handler raises `Stopped`
             (inside an XLA compile: once the compile has returned);
             `jepa_jax.train.loop` writes summary.json (`preempted` for SIGTERM,
             `interrupted` for SIGINT) once the workdir is its own.
  'loop'     training: the request is recorded; the loop saves a checkpoint
             at the next step boundary and stops with that status.
  'finish'   the run is writing its last files: the request is recorded only.

A second SIGINT after a request (Ctrl-C twice) exits at once with status 130,
without saving: the last complete checkpoint is kept, a save in flight is
left in Orbax's temporary folder and cleaned up on the next start.
Handlers are installed from the main thread only; elsewhere this is inert.

XLA's wait for a compile lets a signal through while the compile goes on,
on XLA's own thread: a stop raised there, or JAX torn down at exit under
such a compile, crashed the process (segmentation fault) after a clean
stop. So a set-up stop is held until the compile returns, and a command
that a signal stopped ends through `run_and_exit`: once it has
written its files and its last line, the process exits without the
interpreter's teardown.
"""
from __future__ import annotations

import os
import signal
import sys
import contextlib
import logging
import threading
from typing import Iterator, Optional

STATUS = {signal.SIGTERM: 'preempted', signal.SIGINT: 'interrupted'}
NAME = {signal.SIGTERM: 'SIGTERM', signal.SIGINT: 'SIGINT'}


class Stopped(BaseException):
  """A signal arrived while a run was being set up. `status`: 'preempted'
  (SIGTERM) or 'interrupted' (SIGINT)."""

  def __init__(self, status: str, signum: int):
    self.status, self.signum = status, signum
    super().__init__(f'{NAME[signum]} during set-up')


_state = {'phase': 'startup', 'requested': None, 'previous': None, 'hook': None,
          'deferring': False, 'deferred': None, 'signalled': False, 'held': None,
          'resend': None}

# JAX's call into XLA's compiler: its wait lets signals through while XLA
# compiles on its own thread, which goes on using what the call passed it.
_JAX_COMPILER = os.path.join('jax', '_src', 'compiler.py')
HOLD_RETRY_S = 0.05


def _in_xla_compile(frame) -> bool:
  while frame is not None:
    if frame.f_code.co_filename.endswith(_JAX_COMPILER):
      return True
    frame = frame.f_back
  return False


def _hold(signum: int) -> None:
  """Holds back a set-up stop that landed inside an XLA compile: unwinding
  out of it freed what XLA's compile thread was using (a segmentation
  fault). The signal is sent again every HOLD_RETRY_S until the compile
  has returned, and stops the run then."""
  _state['held'] = signum
  timer = _state['resend'] = threading.Timer(HOLD_RETRY_S, os.kill, (os.getpid(), signum))
  timer.daemon = True
  timer.start()


def _say(message: str) -> None:
  print(message, file=sys.stderr, flush=True)


def _handler(signum, frame):
  status, phase = STATUS[signum], _state['phase']
  _state['signalled'] = True
  held, _state['held'] = _state['held'], None
  if signum == signal.SIGINT and _state['requested'] and held != signum:
    _say('second Ctrl-C: exiting now, without saving (the last complete checkpoint is kept)')
    os._exit(130)  # pylint: disable=protected-access
  if phase == 'startup':     # nothing to clean up; an exception could be swallowed
    _say(f'{NAME[signum]}: stopped before a run started; nothing written')
    sys.stdout.flush()
    os._exit(128 + signum)  # pylint: disable=protected-access
  _state['requested'] = status
  if phase == 'setup' and _in_xla_compile(frame):
    _hold(signum)
    return
  if phase == 'setup' and _state['deferring']:
    _state['deferred'] = signum          # raised when the `deferred` block ends
    return
  if phase == 'setup':
    raise Stopped(status, signum)
  if phase == 'loop':
    _say(f'{NAME[signum]}: saving a checkpoint at the next step boundary, then '
         'stopping' + (' (Ctrl-C again: exit at once)' if signum == signal.SIGINT else ''))
  else:
    _say(f'{NAME[signum]}: the run is writing its last files; stopping after that')


def _unraisable_hook(unraisable):
  """A handler that runs inside a callback whose exceptions Python ignores (a
  gc or weakref callback) cannot stop the set-up: its `Stopped` is dropped
  without a traceback, and the recorded request stops the run at its first
  step boundary instead."""
  if not isinstance(unraisable.exc_value, Stopped):
    _state['hook'](unraisable)


def install() -> bool:
  """Installs the handlers (main thread only); True if this call did."""
  if _state['previous'] is not None or threading.current_thread() is not threading.main_thread():
    return False
  _state['previous'] = {s: signal.signal(s, _handler) for s in STATUS}
  _state['hook'], sys.unraisablehook = sys.unraisablehook, _unraisable_hook
  return True


def uninstall() -> None:
  """Puts back the handlers `install` replaced."""
  previous, _state['previous'] = _state['previous'], None
  if _state['resend'] is not None:     # a held signal is not sent to the old handlers
    _state['resend'].cancel()
  for signum, handler in (previous or {}).items():
    signal.signal(signum, handler)
  if previous is not None:
    sys.unraisablehook = _state['hook']
  set_phase('startup')


def set_phase(phase: str) -> None:
  """Enters `phase` (see the module docstring); 'setup' forgets old requests."""
  assert phase in ('startup', 'setup', 'loop', 'finish'), phase
  if phase == 'setup':
    _state['requested'] = None
  _state['phase'] = phase


@contextlib.contextmanager
def deferred() -> Iterator[None]:
  """In set-up, a signal inside the block raises `Stopped` when the block
  ends, not inside it: for calls that start background work and must
  return their handle (an Orbax CheckpointManager starts a clean-up thread
  in its constructor; stopped half-way, nobody could close it and the
  thread would fail at interpreter shutdown). Elsewhere a no-op."""
  if _state['deferring']:
    yield
    return
  _state['deferring'], _state['deferred'] = True, None
  try:
    yield
  finally:
    _state['deferring'] = False
  signum, _state['deferred'] = _state['deferred'], None
  if signum is not None and _state['phase'] == 'setup':
    raise Stopped(STATUS[signum], signum)


def requested() -> Optional[str]:
  """'preempted' / 'interrupted' once a signal asked the run to stop, else None."""
  return _state['requested']


def _exit_at_once() -> bool:
  """Whether a signal stopped the command, or Orbax threads outlived the
  checkpoints' close (a save that failed part-way:
  `jepa_jax.run.integrity.finish_orbax_threads`; looked up in sys.modules,
  as a command that never saved did not import it)."""
  integrity = sys.modules.get('jepa_jax.run.integrity')
  return _state['signalled'] or bool(integrity is not None and integrity.orbax_threads())


def _exit_status(code) -> int:
  """SystemExit's code as a process exit status (what Python itself does)."""
  if code is None:
    return 0
  if isinstance(code, int):
    return code
  print(code, file=sys.stderr)
  return 1


def run_and_exit(command) -> None:
  """Runs `command()` (a CLI's main, ending in SystemExit). The process then
  exits at once with the command's status, after flushing its output (and
  leaving `jax.distributed`), without the interpreter's teardown, when a
  signal stopped it (JAX's exit hook clears its backends, which crashed
  under a compile still running: module docstring) or when threads of a
  failed checkpoint save are still running (`_exit_at_once`: at
  teardown they logged a traceback, or held the exit for minutes);
  otherwise it ends as usual."""
  try:
    command()
  except SystemExit as done:
    if not _exit_at_once():
      raise
    status = _exit_status(done.code)
  else:
    if not _exit_at_once():
      return
    status = 0
  jax = sys.modules.get('jax')
  if jax is not None:       # the part of JAX's exit hook several processes need
    try:
      jax.distributed.shutdown()
    except Exception:  # pylint: disable=broad-except
      pass
  logging.shutdown()
  for stream in (sys.stdout, sys.stderr):
    try:
      stream.flush()
    except (OSError, ValueError):
      pass
  os._exit(status)  # pylint: disable=protected-access
