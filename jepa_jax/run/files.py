"""Every file and folder name of a run folder (WORKDIR), in one place.

    WORKDIR/
      config.json                  the run's config (plain JSON)
      summary.json                 status, steps, best val loss, timings
      epoch_metrics.jsonl          one line per epoch (train / val loss means)
      embedding_metrics.jsonl      one line per measurement point (measure.py)
      probe_metrics.jsonl          one line per probe-trajectory point (eval/trajectory.py)
      alerts.jsonl                 the collapse monitor's events
      final_state.msgpack          the final weights (run/trained.py reads them)
      eval.json                    downstream metrics (evaluate.py)
      eval.stale-<n>.json          an eval.json set aside: training changed the weights
      events.out.tfevents.*        TensorBoard scalars
      checkpoints/<step>/          Orbax checkpoints (run/checkpoint.py)
      corrupt_checkpoints/<step>/  unreadable checkpoints moved aside
      checkpoint_mismatches.txt    every name/shape mismatch of a refused restore
      previous-<n>/                outputs moved aside by checkpoint.restart
      .lock                        held while a process trains in the folder
      stage1/, stage2/             a two-stage run's stages, each a run folder

The names live here; the modules that write the files own their formats.
Besides the names: how run records are written (atomic JSON files,
append-only JSON-lines logs, TensorBoard scalars) and the workdir lock, one
process per workdir (an advisory lock on WORKDIR/.lock).

`hold(workdir)` takes an exclusive `fcntl.flock` on `WORKDIR/.lock` without
waiting and writes `host <name> pid <pid>` into it. A second process (or a
second call in the same process) asking for the same workdir gets
`errors.WorkdirLocked`, whose one-line message names the holder. The kernel drops a
flock when its holder exits in any way, kill -9 included, so a lock file left
behind by a killed run is simply taken over (with a note naming the old
holder). On release the lock file is removed, and the workdir too when the
lock created it and it is still empty, so a refused or interrupted run leaves
no trace.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import socket
import sys
import time
from typing import Any, Dict, Mapping, Optional

import numpy as np

from jepa_jax.errors import WorkdirLocked, one_line_error


CONFIG = 'config.json'
SUMMARY = 'summary.json'
EPOCH_METRICS = 'epoch_metrics.jsonl'
EMBEDDING_METRICS = 'embedding_metrics.jsonl'
PROBE_METRICS = 'probe_metrics.jsonl'
ALERTS = 'alerts.jsonl'
FINAL_STATE = 'final_state.msgpack'
EVAL = 'eval.json'
STALE_EVAL = 'eval.stale-{}.json'
TENSORBOARD_EVENTS = 'events.out.tfevents.*'
CHECKPOINTS = 'checkpoints'
CORRUPT_CHECKPOINTS = 'corrupt_checkpoints'
MISMATCHES = 'checkpoint_mismatches.txt'
PREVIOUS = 'previous-{}'
LOCK = '.lock'
STAGE_DIRS = {1: 'stage1', 2: 'stage2'}

# JSONL logs whose lines carry a `step`: rewound to the checkpoint on resume.
STEP_LOGS = (EPOCH_METRICS, EMBEDDING_METRICS, ALERTS, PROBE_METRICS)
# Files that mark a folder as holding a run's outputs.
RUN_FILES = (SUMMARY, FINAL_STATE) + STEP_LOGS
# What a run (and evaluate) writes next to its checkpoints: glob patterns,
# moved aside as a whole by checkpoint.restart.
OUTPUT_PATTERNS = (SUMMARY, FINAL_STATE, *STEP_LOGS, EVAL, STALE_EVAL.format('*'),
                   TENSORBOARD_EVENTS, MISMATCHES)


def holds_config(path: str) -> bool:
  """Whether the folder `path` holds a run's config.json."""
  return os.path.exists(os.path.join(path, CONFIG))


def stage_folders(path: str) -> list:
  """The stage folders of a two-stage run folder (each with its config.json),
  else [] (also for a plain run folder)."""
  if holds_config(path):
    return []
  return [os.path.join(path, name) for name in STAGE_DIRS.values()
          if holds_config(os.path.join(path, name))]


def to_builtin(value: Any) -> Any:
  """numpy / jax scalars and arrays -> JSON-serialisable Python values."""
  if isinstance(value, Mapping):
    return {str(k): to_builtin(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [to_builtin(v) for v in value]
  if hasattr(value, 'tolist'):          # numpy / jax arrays and scalars
    return to_builtin(np.asarray(value).tolist())
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)                    # JSON has no NaN/Inf: keep them visible
  return value


def write_atomically(path: str, write, mode: str = 'w') -> None:
  """Calls `write(f)` on `path`.tmp, then renames it to `path`: never
  half-written. A failed write (a full disk) removes the temporary file."""
  tmp = f'{path}.tmp'
  try:
    with open(tmp, mode) as f:
      write(f)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def write_json(path: str, obj: Mapping) -> None:
  """Writes `obj` to `path` atomically (`write_atomically`)."""
  write_atomically(path, lambda f: f.write(
      json.dumps(to_builtin(obj), indent=2, sort_keys=True) + '\n'))


def run_each(steps, say) -> Optional[BaseException]:
  """Runs every (what, fn) of `steps` in order, whatever the others raise;
  `say`s a line for each that fails and returns the first error (or None)."""
  first = None
  for what, fn in steps:
    try:
      fn()
    except Exception as err:  # pylint: disable=broad-except
      say(f'warning: {what} failed: {one_line_error(err)}')
      first = first or err
  return first


def read_jsonl(path: str, on_damaged=None) -> list:
  """The records of a JSONL log ([] if there is no file). A line that does not
  parse raises ValueError naming the file and line, or, with `on_damaged`,
  is skipped after `on_damaged(message)` (the intact lines are used)."""
  if not os.path.exists(path):
    return []
  out = []
  with open(path, errors='replace') as f:
    for number, line in enumerate(f, start=1):
      if not line.strip():
        continue
      try:
        out.append(json.loads(line))
      except json.JSONDecodeError as err:
        message = f'{path} line {number}: damaged JSON line ({err.msg})'
        if on_damaged is None:
          raise ValueError(message) from None
        on_damaged(message)
  return out


def last_line(path: str) -> Dict[str, Any]:
  """The last line of a JSONL file as a dict ({} when it has none)."""
  lines = read_jsonl(path)
  return lines[-1] if lines else {}


def rewind_jsonl(path: str, max_step: int) -> int:
  """Keeps only the lines of a JSONL log whose `step` is <= max_step.

  Used on resume: lines written after the checkpoint being resumed from are
  dropped, so the resumed run appends them again exactly once. A line that
  does not parse (a write cut short by a kill) is dropped too. The file is
  rewritten atomically. Returns the number of lines kept.
  """
  if not os.path.exists(path):
    return 0
  kept = []
  with open(path) as f:
    for line in f:
      try:
        record = json.loads(line)
      except json.JSONDecodeError:
        continue
      if record.get('step', 0) <= max_step:
        kept.append(line if line.endswith('\n') else line + '\n')
  tmp = f'{path}.tmp'
  with open(tmp, 'w') as f:
    f.writelines(kept)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)
  return len(kept)


class JsonlWriter:
  """Appends one JSON object per line, flushed after each line."""

  def __init__(self, path: str):
    self.path = path
    self._f = open(path, 'a')

  def write(self, record: Mapping) -> None:
    self._f.write(json.dumps(to_builtin(record), sort_keys=True) + '\n')
    self._f.flush()

  def close(self) -> None:
    self._f.close()


class TensorBoardWriter:
  """Scalars to a TensorBoard event file (tensorboardX's event format: no
  TensorFlow needed), written on the calling thread and flushed after each
  `write`: a write that fails (a full disk) raises its OSError here. (The
  queue and thread of tensorboardX's SummaryWriter hung the run instead:
  its thread died on the error and the queue filled up.)

  `write(prefix, record, step)` logs every finite numeric value of `record`
  except the 'step' / 'epoch' bookkeeping keys as `<prefix>/<key>` at `step`.
  `purge_step`: TensorBoard discards the events of earlier event files from
  that step on (a resumed run's).
  """

  SKIP = ('step', 'epoch')
  FLUSH_SECONDS = 10.0

  def __init__(self, logdir: str, purge_step=None):
    # Imported here: the protobuf import is slow, and only training writes events.
    from tensorboardX import event_file_writer  # noqa: PLC0415
    from tensorboardX import summary  # noqa: PLC0415
    from tensorboardX.proto import event_pb2  # noqa: PLC0415
    self._pb, self._scalar = event_pb2, summary.scalar
    self._events = event_file_writer.EventsWriter(os.path.join(logdir, 'events'))
    if purge_step is not None:              # what tensorboardX's SummaryWriter writes
      self._add(int(purge_step), file_version='brain.Event:2')
      self._add(int(purge_step), session_log=event_pb2.SessionLog(
          status=event_pb2.SessionLog.START))
    self._events.flush()
    self._flushed = time.monotonic()

  def _add(self, step: int, **fields) -> None:
    self._events.write_event(self._pb.Event(wall_time=time.time(), step=step, **fields))

  def write(self, prefix: str, record: Mapping, step: int) -> None:
    for key, value in record.items():
      if key in self.SKIP or isinstance(value, (bool, str)):
        continue
      arr = np.asarray(value)                   # Python, numpy and 0-d jax scalars
      if arr.ndim == 0 and arr.dtype.kind in 'iuf' and math.isfinite(float(arr)):
        self._add(int(step), summary=self._scalar(f'{prefix}/{key}', float(arr)))
    if time.monotonic() - self._flushed > self.FLUSH_SECONDS:
      self._events.flush()
      self._flushed = time.monotonic()

  def close(self) -> None:
    self._events.close()


class NullWriter:
  """Stands in for a writer on processes that write no files."""

  def write(self, *args, **kwargs) -> None:
    del args, kwargs

  def close(self) -> None:
    pass


# The workdir lock ----------------------------------------------------------

def _holder(fd: int) -> str:
  os.lseek(fd, 0, os.SEEK_SET)
  text = os.read(fd, 256).decode('utf-8', 'replace').strip()
  return text or 'an unknown process'


class Lock:
  """An exclusive lock on WORKDIR/.lock, held until `release`."""

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.path = os.path.join(workdir, LOCK)
    self._made_dir = not os.path.isdir(workdir)
    self._fd = None

  def acquire(self) -> 'Lock':
    """Takes the lock or raises WorkdirLocked; never waits."""
    os.makedirs(self.workdir, exist_ok=True)
    while True:
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        self._remove_dir_if_made()
        raise WorkdirLocked(f'workdir {self.workdir!r} is locked by {holder} '
                            f'(another run is using it; {self.path})') from None
      # The previous holder may have removed the file between our open and
      # flock: then this lock is on an orphan inode; open the path again.
      try:
        same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
      except FileNotFoundError:
        same = False
      if same:
        break
      os.close(fd)
    stale = _holder(fd) if os.fstat(fd).st_size else None
    me = f'host {socket.gethostname()} pid {os.getpid()}'
    if stale and stale != me:
      print(f'note: took over the lock of a run that is gone ({stale})',
            file=sys.stderr, flush=True)
    os.ftruncate(fd, 0)
    os.pwrite(fd, (me + '\n').encode(), 0)
    self._fd = fd
    return self

  def release(self) -> None:
    """Removes the lock file (and an empty workdir the lock made), then unlocks."""
    if self._fd is None:
      return
    fd, self._fd = self._fd, None
    try:
      os.remove(self.path)
    except OSError:
      pass
    self._remove_dir_if_made()
    os.close(fd)                 # closing the last descriptor drops the flock

  def _remove_dir_if_made(self) -> None:
    if self._made_dir:
      try:
        os.rmdir(self.workdir)   # only when empty
      except OSError:
        pass


@contextlib.contextmanager
def hold(workdir: str, enabled: bool = True):
  """Holds the workdir lock for the `with` block; a no-op when not `enabled`
  (the processes of a multi-process run other than process 0)."""
  if not enabled:
    yield None
    return
  lock = Lock(workdir).acquire()
  try:
    yield lock
  finally:
    lock.release()
