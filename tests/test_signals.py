"""SIGTERM / SIGINT: a clean stop with a summary in set-up and in training; Ctrl-C twice."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from jepa_jax import data as data_lib
from jepa_jax.run import checkpoint
from jepa_jax.train import devices as parallel
from jepa_jax.train import interrupts
from jepa_jax.train import loop as train
from conftest import ROOT, load

# Whole runs or subprocesses: left out of the fast subset (pytest -m 'not slow').
pytestmark = pytest.mark.slow


def _steps(workdir):
  ckpts = checkpoint.RunCheckpoints(os.path.join(workdir, 'checkpoints'), read_only=True)
  try:
    return ckpts.steps()
  finally:
    ckpts.close()


def test_sigterm_while_compiling_writes_a_preempted_summary(tmp_path, monkeypatch):
  compile_step = parallel.compile_train_step
  def compile_then_sigterm(*args):
    out = compile_step(*args)
    os.kill(os.getpid(), signal.SIGTERM)       # arrives before the first step
    return out
  monkeypatch.setattr(parallel, 'compile_train_step', compile_then_sigterm)
  cfg, workdir = load('no_vq', 'tiny'), str(tmp_path)
  summary = train.train_and_evaluate(cfg, workdir)
  assert summary['status'] == 'preempted' and summary['steps'] == 0
  assert 'SIGTERM during set-up' in summary['reason']
  assert json.load(open(tmp_path / 'summary.json'))['status'] == 'preempted'
  assert not os.path.exists(tmp_path / '.lock')
  assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL     # handlers put back
  monkeypatch.setattr(parallel, 'compile_train_step', compile_step)
  again = train.train_and_evaluate(cfg, workdir)                 # the same command goes on
  assert again['status'] == 'completed' and again['steps'] == 6


def test_sigterm_inside_the_checkpoint_manager_constructor_closes_it(tmp_path, monkeypatch):
  """The signal lands inside Orbax's CheckpointManager constructor, after it
  started its clean-up thread: the stop is raised once the handle is held,
  the manager is closed, and no Orbax thread outlives the call (one that
  did failed at interpreter shutdown with a traceback)."""
  made, real = [], checkpoint.ocp.CheckpointManager
  def manager_then_sigterm(*args, **kwargs):
    manager = real(*args, **kwargs)
    made.append(manager)
    if len(made) == 1:
      os.kill(os.getpid(), signal.SIGTERM)   # handled at the next bytecode, in here
      sum(range(1000))
    return manager
  monkeypatch.setattr(checkpoint.ocp, 'CheckpointManager', manager_then_sigterm)
  closed = []
  close = checkpoint.RunCheckpoints.close
  monkeypatch.setattr(checkpoint.RunCheckpoints, 'close',
                      lambda self: (closed.append(self.manager), close(self)))
  summary = train.train_and_evaluate(load('gentle', 'tiny'), str(tmp_path / 'run'))
  assert summary['status'] == 'preempted' and summary['steps'] == 0
  assert made and made[0] in closed
  assert json.load(open(tmp_path / 'run' / 'summary.json'))['status'] == 'preempted'


def test_sigint_in_training_saves_at_the_next_step_boundary(tmp_path, monkeypatch):
  batches = data_lib.epoch_batches
  def batches_then_sigint(*args, **kwargs):
    for i, batch in enumerate(batches(*args, **kwargs)):
      yield batch
      if 'start_step' in kwargs and i == 0:    # the loop's epoch 0, after batch 1
        os.kill(os.getpid(), signal.SIGINT)
  monkeypatch.setattr(data_lib, 'epoch_batches', batches_then_sigint)
  cfg = load('gentle', 'tiny')
  cfg.checkpoint.every_steps = None                  # only the stop saves mid-epoch
  cfg.data.prefetch_to_device = 0     # batch i is read just before step i (not ahead)
  before = signal.getsignal(signal.SIGINT)           # SIG_IGN when run in the background
  summary = train.train_and_evaluate(cfg, str(tmp_path))
  # Sent while step 2 was being fetched: step 2 is the next boundary.
  assert summary['status'] == 'interrupted' and summary['steps'] == 2
  assert _steps(str(tmp_path)) == [2]
  assert json.load(open(tmp_path / 'summary.json'))['status'] == 'interrupted'
  assert signal.getsignal(signal.SIGINT) is before  # the caller's handler is back


def test_a_second_ctrl_c_exits_at_once(monkeypatch, capsys):
  exits = []
  monkeypatch.setattr(interrupts.os, '_exit', exits.append)
  interrupts.set_phase('setup')
  interrupts.set_phase('loop')
  try:
    interrupts._handler(signal.SIGINT, None)        # first: recorded, no exit
    assert interrupts.requested() == 'interrupted' and exits == []
    interrupts._handler(signal.SIGINT, None)        # second: out now
    assert exits == [130]
  finally:
    interrupts.set_phase('startup')
  err = capsys.readouterr().err
  assert 'Ctrl-C again: exit at once' in err and 'second Ctrl-C: exiting now' in err


# A config file that marks its loading (flag parsing: the CLI's start-up) and
# then waits there, so the signal lands in start-up on any machine: a fixed
# delay (1 s) once landed in set-up after the workdir was written (CI).
_SLOW_CONFIG = '''
import pathlib, time
from configs import gentle
def get_config(arg=None):
  pathlib.Path({marker!r}).write_text('parsing')
  time.sleep(120)
  return gentle.get_config('tiny')
'''


def test_cli_ctrl_c_at_start_up_is_one_line_without_traceback(tmp_path):
  marker, config = tmp_path / 'parsing', tmp_path / 'slow_config.py'
  config.write_text(_SLOW_CONFIG.format(marker=str(marker)))
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=ROOT)
  proc = subprocess.Popen([sys.executable, '-m', 'jepa_jax.main',
                           f'--config={config}', f'--workdir={tmp_path / "run"}'],
                          cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 240
  while not marker.exists() and time.time() < deadline:
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    time.sleep(0.01)
  proc.send_signal(signal.SIGINT)
  out, err = proc.communicate(timeout=300)
  assert 'Traceback' not in err and 'KeyboardInterrupt' not in err, err[-3000:]
  assert proc.returncode == 130, (proc.returncode, err[-3000:])
  lines = [l for l in err.splitlines() if l.strip()]
  assert lines == ['SIGINT: stopped before a run started; nothing written'], err
  assert not (tmp_path / 'run').exists()


def test_cli_sigterm_once_the_workdir_is_set_up_leaves_a_preempted_summary(tmp_path):
  """SIGTERM as soon as config.json exists (the train step is compiling next):
  exit 0, summary.json `preempted`, no traceback."""
  workdir = tmp_path / 'run'
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=ROOT)
  proc = subprocess.Popen([sys.executable, '-m', 'jepa_jax.main',
                           '--config=configs/gentle.py:tiny', f'--workdir={workdir}'],
                          cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 240
  while not (workdir / 'config.json').exists() and time.time() < deadline:
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    time.sleep(0.01)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 0 and 'Traceback' not in err, err[-3000:]
  assert out.startswith('preempted:')
  summary = json.load(open(workdir / 'summary.json'))
  assert summary['status'] == 'preempted' and summary['steps'] < 6


# A CLI run whose XLA compile of PROGRAM gets SIGNAL 0.2 s in; no persistent
# cache, so the compile is real. XLA's wait for a compile lets the signal
# through while the compile goes on on XLA's thread.
_SIGNAL_IN_A_COMPILE = '''
import os, runpy, signal, sys, threading
from jax._src import compiler
real = compiler.backend_compile_and_load
def compile_and_signal(*args, **kwargs):
  module = args[1] if len(args) > 1 else kwargs['module']
  if os.environ['PROGRAM'] in str(module.operation.attributes['sym_name']):
    threading.Timer(0.2, os.kill, (os.getpid(), getattr(signal, os.environ['SIGNAL']))).start()
  return real(*args, **kwargs)
compiler.backend_compile_and_load = compile_and_signal
sys.argv = ['jepa_jax.main'] + sys.argv[1:]
runpy.run_module('jepa_jax.main', run_name='__main__', alter_sys=True)
'''


@pytest.mark.parametrize('program,signal_name,status', [
    ('jit_init', 'SIGINT', 130),            # before the workdir is the run's
    ('jit_train_step', 'SIGTERM', 0),       # after: a summary
])
def test_cli_signal_during_a_compile_exits_cleanly_without_a_crash(
    tmp_path, program, signal_name, status):
  """Stops in a compile used to end in a segmentation fault (status -11):
  unwinding out of the compile call, or JAX's teardown at exit, freed what
  XLA's compile thread was using (3 of 3 and 4 of 4 tries)."""
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=ROOT, PROGRAM=program,
             SIGNAL=signal_name)
  env.pop('JAX_COMPILATION_CACHE_DIR', None)
  workdir = tmp_path / 'run'
  out = subprocess.run([sys.executable, '-c', _SIGNAL_IN_A_COMPILE,
                        '--config=configs/gentle.py:tiny', f'--workdir={workdir}',
                        '--config.train.compilation_cache_dir='],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == status, (out.returncode, out.stderr[-3000:])
  # Held until the compile returns, the stop lands before or after the run
  # owns the workdir: one line and nothing written, or the summary.
  word = {'SIGINT': 'interrupted', 'SIGTERM': 'preempted'}[signal_name]
  lines = [l for l in out.stderr.splitlines() if l.strip()]
  if lines:
    assert lines == [f'{word}: {signal_name} during set-up of the run, before it wrote '
                     'anything; no summary'], out.stderr[-3000:]
    assert not os.path.exists(workdir / 'summary.json')
  if not lines:
    assert out.stdout.startswith(f'{word}: 0 epochs'), out.stderr[-3000:]
    assert json.load(open(workdir / 'summary.json'))['status'] == word
