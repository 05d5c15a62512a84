"""A full disk: every write fails on the thread that asked for it, the run ends
(never hangs) with one error line and a `failed` summary when space allows."""
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import jax
import pytest

from jepa_jax.run import checkpoint
from jepa_jax.run import files as records
from jepa_jax.run import integrity as orbax_noise
from conftest import ROOT

NO_SPACE = "No space left on device"
# What Orbax raises for a data file it could not write (TensorStore's error).
TENSORSTORE_NO_SPACE = (
    'RESOURCE_EXHAUSTED: Error writing "w/0" in OCDBT database at local file "{}": '
    f'Failed to write 2077 bytes to file 5: {NO_SPACE} [os_error_code=\'28\']')


class _SmallDisk:
  """A binary file that takes `room` bytes, then fails like a full disk."""

  def __init__(self, path, room):
    self._f, self._room = open(path, 'wb'), room

  def write(self, data):
    if len(data) > self._room:
      raise OSError(errno.ENOSPC, NO_SPACE, self._f.name)
    self._room -= len(data)
    return self._f.write(data)

  def __getattr__(self, name):
    return getattr(self._f, name)


def test_tensorboard_events_on_a_full_disk_raise_instead_of_hanging(tmp_path, monkeypatch):
  """tensorboardX's writer thread died on the error and its queue filled up:
  the next writes blocked forever (the run hung, SIGTERM could not stop it)."""
  from tensorboardX import record_writer  # noqa: PLC0415
  monkeypatch.setattr(record_writer, 'open_file', lambda path: _SmallDisk(path, 100))
  raised = []

  def log_many():
    writer = records.TensorBoardWriter(str(tmp_path))
    try:
      for step in range(100):
        writer.write('train', {'loss': 1.0, 'acc': 0.5}, step)
      writer.close()
    except OSError as err:
      raised.append(err)

  thread = threading.Thread(target=log_many, daemon=True)
  thread.start()
  thread.join(timeout=30)
  assert not thread.is_alive(), 'the writes hung'
  assert raised and raised[0].errno == errno.ENOSPC


def test_a_checkpoint_save_out_of_space_is_an_os_error_and_frees_its_folder(tmp_path,
                                                                          monkeypatch):
  """Orbax's ValueError became a traceback (not an OSError); the unfinished
  save's folder kept the space the summary needed."""
  directory = str(tmp_path / 'checkpoints')
  ckpts = checkpoint.RunCheckpoints(directory)
  unfinished = os.path.join(directory, '1.orbax-checkpoint-tmp-12')

  def out_of_space(*args, **kwargs):
    os.makedirs(os.path.join(unfinished, 'state'))
    with open(os.path.join(unfinished, 'state', 'data'), 'wb') as f:
      f.write(b'x' * 1000)
    raise ValueError(TENSORSTORE_NO_SPACE.format(unfinished))

  monkeypatch.setattr(ckpts.manager, 'save', out_of_space)
  state = {'w': jax.numpy.zeros((2,)), 'step': jax.numpy.ones((), jax.numpy.int32)}
  ckpts.save(state, {'step': 1}, {})
  with pytest.raises(OSError) as err:
    ckpts.close()
  assert err.value.errno == errno.ENOSPC
  assert records.one_line_error(err.value) == f'{NO_SPACE}: {directory}'
  assert not os.path.exists(unfinished)
  assert ckpts.steps() == []


def test_orbax_tracebacks_of_a_failed_write_are_dropped(caplog):
  """They are raised again as one OSError; other errors are kept."""
  import logging  # noqa: PLC0415
  log = logging.getLogger('absl')
  for text in (TENSORSTORE_NO_SPACE.format('/x'), 'some other failure'):
    try:
      raise ValueError(text)
    except ValueError:
      log.error('Save Finalize thread (save_finalize) failed.', exc_info=True)
  assert [str(r.exc_info[1]) for r in caplog.records] == ['some other failure']
  assert orbax_noise.is_failed_write(OSError(errno.ENOSPC, NO_SPACE))


def test_a_json_write_on_a_full_disk_leaves_the_old_file_and_no_temporary(tmp_path,
                                                                         monkeypatch):
  path = str(tmp_path / 'summary.json')
  records.write_json(path, {'status': 'running'})

  def full(fd):
    raise OSError(errno.ENOSPC, NO_SPACE)

  monkeypatch.setattr(records.os, 'fsync', full)
  with pytest.raises(OSError):
    records.write_json(path, {'status': 'failed'})
  assert os.listdir(tmp_path) == ['summary.json']
  assert json.load(open(path)) == {'status': 'running'}


def _mount_tmpfs(path, size):
  os.makedirs(path)
  if os.geteuid() != 0 or shutil.which('mount') is None:
    pytest.skip('needs root to mount a small tmpfs')
  done = subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size}', 'tmpfs', path],
                        capture_output=True, text=True)
  if done.returncode != 0:
    pytest.skip(f'cannot mount a tmpfs here: {done.stderr.strip()}')


def _fill(path):
  """Writes a file in `path` until the filesystem has no byte left."""
  with open(os.path.join(path, 'filler'), 'wb', buffering=0) as f:
    for size in (1 << 16, 1 << 12, 1 << 8, 1):
      try:
        while True:
          f.write(b'\0' * size)
      except OSError as err:
        assert err.errno == errno.ENOSPC


@pytest.mark.slow
def test_cli_run_on_a_disk_that_fills_up_ends_with_one_error_and_a_failed_summary(tmp_path):
  """A real full filesystem (a tmpfs filled once the first checkpoint exists):
  the run ends within 30 s, status 1, no traceback, the error as the last
  line, and summary.json says failed (the unfinished save's space frees it)."""
  disk = str(tmp_path / 'disk')
  _mount_tmpfs(disk, '16m')
  try:
    workdir = os.path.join(disk, 'run')
    env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=ROOT)
    proc = subprocess.Popen(
        [sys.executable, '-m', 'jepa_jax.main', '--config=configs/gentle.py:tiny',
         f'--workdir={workdir}', '--config.checkpoint.every_steps=1',
         '--config.train.num_epochs=200', '--config.train.early_stopping_patience=1000'],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not os.path.isdir(os.path.join(workdir, 'checkpoints', '1')):
      assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-3000:]
      time.sleep(0.05)
    _fill(disk)
    full_at = time.time()
    try:
      out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
      proc.send_signal(signal.SIGKILL)
      pytest.fail('the run hung on the full disk')
    assert time.time() - full_at < 30
    assert proc.returncode == 1 and 'Traceback' not in err, err[-3000:]
    lines = [l for l in err.splitlines() if l.strip()]
    # The failing write is the one the filled disk happens to hit: a named
    # file (the line names it) or a buffered flush (no name). The summary is
    # written when the space the failed save frees is enough, else its own
    # warning says so (seen once in 3 CI runs).
    assert lines[-1].startswith(f'error: {NO_SPACE}'), err[-3000:]
    assert all(l.startswith('warning: ') for l in lines[:-1]), err[-3000:]
    summary_path = os.path.join(workdir, 'summary.json')
    if os.path.exists(summary_path):
      summary = json.load(open(summary_path))
      assert summary['status'] == 'failed' and summary['reason'].startswith(NO_SPACE)
    else:
      assert any('summary.json failed' in l for l in lines[:-1]), err[-3000:]
  finally:
    subprocess.run(['umount', '-l', disk], check=False)


# A save that fails part-way: the state's writer is slow (its folder is made
# after argv[2] seconds) and the meta item fails at once for want of space.
# Orbax's manager then no longer tracks the threads of that save.
_PART_WAY = r'''
import asyncio, errno, sys
import jax
import orbax.checkpoint as ocp
from orbax.checkpoint._src.path import async_path
from jepa_jax import errors
from jepa_jax.run import checkpoint
from jepa_jax.train import interrupts

real_mkdir = async_path.mkdir

async def slow_mkdir(*args, **kwargs):
  await asyncio.sleep(float(sys.argv[2]))
  return await real_mkdir(*args, **kwargs)

def no_space(*args, **kwargs):
  raise OSError(errno.ENOSPC, 'No space left on device', sys.argv[1])

def command():
  async_path.mkdir = slow_mkdir
  ckpts = checkpoint.RunCheckpoints(sys.argv[1])
  ocp.JsonCheckpointHandler.async_save = no_space
  ckpts.save({'w': jax.numpy.zeros((2,))}, {'step': 1}, {})
  try:
    ckpts.close()
  except OSError as err:
    sys.exit(errors.refused(err))

interrupts.run_and_exit(command)
'''


@pytest.mark.parametrize('writer_s', [1.0, 60.0])
def test_a_save_failing_part_way_ends_the_process_at_once_without_a_traceback(tmp_path,
                                                                            writer_s):
  """Threads of the failed save outlive Orbax's close: one still writing at
  the interpreter's shutdown logged a traceback (CI, a full disk), one
  waiting for a signal that never comes held the exit 300 s. close() waits
  for them a few seconds (writer 1 s: they finish); threads still running
  then (writer 60 s) make the command exit at once. Either way: its status,
  its one line, within seconds, no temporary folder left."""
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=ROOT)
  start = time.time()
  proc = subprocess.run(
      [sys.executable, '-c', _PART_WAY, str(tmp_path / 'checkpoints'), str(writer_s)],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
  assert time.time() - start < 40, 'the exit waited for the failed save'
  assert proc.returncode == 1, proc.stderr[-3000:]
  assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
  assert proc.stderr.strip().splitlines()[-1] == (
      f'error: {NO_SPACE}: {tmp_path / "checkpoints"}')
  assert not any('.orbax-checkpoint-tmp' in name for name in os.listdir(tmp_path / 'checkpoints'))


def test_close_after_a_save_failing_part_way_waits_for_its_threads(tmp_path, monkeypatch):
  """In a process that goes on (a library user): close() raises the failed
  save once Orbax's leftover threads of it have ended (they were running)."""
  import asyncio  # noqa: PLC0415
  import orbax.checkpoint as ocp  # noqa: PLC0415
  from orbax.checkpoint._src.path import async_path  # noqa: PLC0415
  real_mkdir = async_path.mkdir

  async def slow_mkdir(*args, **kwargs):
    await asyncio.sleep(0.5)
    return await real_mkdir(*args, **kwargs)

  def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, NO_SPACE, str(tmp_path))

  monkeypatch.setattr(async_path, 'mkdir', slow_mkdir)
  before = set(orbax_noise.orbax_threads())      # other tests' in this process
  ckpts = checkpoint.RunCheckpoints(str(tmp_path / 'checkpoints'))
  monkeypatch.setattr(ocp.JsonCheckpointHandler, 'async_save', no_space)
  ckpts.save({'w': jax.numpy.zeros((2,))}, {'step': 1}, {})
  with pytest.raises(OSError, match=NO_SPACE):
    ckpts.close()
  assert set(orbax_noise.orbax_threads()) - before == set()
