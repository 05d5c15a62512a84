"""The workdir lock: a second process is refused with one line; kill -9 frees it."""
import os
import signal
import socket
import subprocess
import sys

import pytest

from jepa_jax import errors
from jepa_jax.run import files as workdir_lock
from conftest import ROOT

HOLDER = ('import sys, time\n'
          'from jepa_jax.run import files as workdir_lock\n'
          'workdir_lock.Lock(sys.argv[1]).acquire()\n'
          'print("locked", flush=True)\n'
          'time.sleep(600)\n')


def _env():
  return dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=ROOT)


@pytest.fixture
def holder(tmp_path):
  """A process holding the lock of tmp_path/run (killed at the end)."""
  workdir = str(tmp_path / 'run')
  proc = subprocess.Popen([sys.executable, '-c', HOLDER, workdir], env=_env(),
                          stdout=subprocess.PIPE, text=True)
  assert proc.stdout.readline().strip() == 'locked'
  yield workdir, proc
  if proc.poll() is None:
    proc.kill()
    proc.wait()


def test_second_process_is_refused_with_one_line_before_writing(holder):
  workdir, proc = holder
  before = sorted(os.listdir(workdir))
  out = subprocess.run([sys.executable, '-m', 'jepa_jax.main',
                        '--config=configs/gentle.py:tiny', f'--workdir={workdir}'],
                       cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
  assert out.returncode == 2
  lines = [l for l in out.stderr.splitlines() if l.strip()]
  assert len(lines) == 1, out.stderr
  assert lines[0].startswith(f'error: workdir {workdir!r} is locked by '
                             f'host {socket.gethostname()} pid {proc.pid}')
  assert sorted(os.listdir(workdir)) == before == ['.lock']


def test_lock_of_a_killed_process_is_taken_over(holder, capfd):
  workdir, proc = holder
  with pytest.raises(errors.WorkdirLocked, match=f'pid {proc.pid}'):
    workdir_lock.Lock(workdir).acquire()
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert os.path.exists(os.path.join(workdir, '.lock'))     # left behind by kill -9
  with workdir_lock.hold(workdir):
    assert f'pid {proc.pid}' in capfd.readouterr().err      # noted, then taken over
    with open(os.path.join(workdir, '.lock')) as f:
      assert f.read() == f'host {socket.gethostname()} pid {os.getpid()}\n'
  assert os.listdir(workdir) == []                           # released: file removed


def test_same_process_twice_is_refused_and_a_made_folder_is_removed(tmp_path):
  workdir = str(tmp_path / 'new')
  with workdir_lock.hold(workdir):
    with pytest.raises(errors.WorkdirLocked, match=f'pid {os.getpid()}'):
      workdir_lock.Lock(workdir).acquire()
  assert not os.path.exists(workdir)       # made by the lock, empty: removed
  with workdir_lock.hold(workdir, enabled=False):
    assert not os.path.exists(workdir)     # other processes of a run take no lock
