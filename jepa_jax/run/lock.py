"""One process per workdir: an advisory lock on WORKDIR/.lock.

`hold(workdir)` takes an exclusive `fcntl.flock` on `WORKDIR/.lock` without
waiting and writes `host <name> pid <pid>` into it. A second process (or a
second call in the same process) asking for the same workdir gets
`WorkdirLocked`, whose one-line message names the holder. The kernel drops a
flock when its holder exits in any way, kill -9 included, so a lock file left
behind by a killed run is simply taken over (with a note naming the old
holder). On release the lock file is removed, and the workdir too when the
lock created it and it is still empty, so a refused or interrupted run leaves
no trace.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import sys

from jepa_jax.run.files import LOCK


class WorkdirLocked(RuntimeError):
  """Another process holds the workdir. One-line message."""


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
