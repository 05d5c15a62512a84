"""Checkpoints: round trip, exact resume after SIGKILL, fallback, preemption, config checks."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import chex
import jax
import numpy as np
import pytest

from jepa_jax import data as data_lib
from jepa_jax.run import checkpoint
from jepa_jax.run import files as run_files
from jepa_jax.run import integrity as checkpoint_integrity
from jepa_jax.run import opening as run_open
from jepa_jax.train import loop as train
from jepa_jax.train import loop_state
from jepa_jax.train import step as step_lib
from jepa_jax.vq import codebook as vq_lib
from conftest import ROOT, load, set_overrides

# Whole runs or subprocesses: left out of the fast subset (pytest -m 'not slow').
pytestmark = pytest.mark.slow

# One small run shared by the resume tests: gentle VQ (EMA + refresh state),
# 2 epochs of 3 steps (the program test_train compiles too), a checkpoint
# every 2 steps and at each epoch end: steps 2 (mid-epoch), 3, 4 (mid), 6.
# Monitor thresholds that make alerts fire from the first embedding-metrics
# point on (rank_low holds throughout: a resumed run that forgot the monitor
# state would log it again), so alerts.jsonl and the monitor state resume too.
# The measurement points are steps 1, 3, 5 (each just before a refresh step)
# and usage is judged from epoch 0 on here, so usage alerts fire too.
OVERRIDES = {'checkpoint.every_steps': 2, 'monitor.rank_alert': 100.0,
             'monitor.usage_decline_checkpoints': 1, 'monitor.val_increase_epochs': 1,
             'monitor.usage_from_epoch': 0}
SUMMARY_KEYS = ('status', 'steps', 'epochs_completed', 'best_val_loss', 'best_epoch',
                'alerts', 'red_flags', 'final_metrics')


def _config(**extra):
  return set_overrides(load('gentle', 'tiny'), {**OVERRIDES, **extra})


def _cli_args(workdir):
  return [sys.executable, '-m', 'jepa_jax.main', '--config=configs/gentle.py:tiny',
          f'--workdir={workdir}'] + [f'--config.{k}={v}' for k, v in OVERRIDES.items()]


def _env():
  return dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=ROOT)


def _final_state(workdir):
  """The latest checkpoint's state and step, restored into the run's structure."""
  cfg = _config()
  ds = data_lib.load_dataset(cfg)
  setup = step_lib.make_setup(cfg, ds)
  abstract = checkpoint.abstract_of(step_lib.init_state(setup, ds.image_shape, cfg.seed))
  ckpts = checkpoint.RunCheckpoints(os.path.join(workdir, 'checkpoints'), read_only=True)
  try:
    restored = ckpts.restore(max(ckpts.steps()), abstract)
  finally:
    ckpts.close()
  return restored


def _logs(workdir):
  return [run_files.read_jsonl(os.path.join(workdir, name)) for name in run_files.STEP_LOGS]


def _start_and_wait_for_checkpoint(workdir):
  """Starts the CLI run and returns once its first checkpoint is complete."""
  proc = subprocess.Popen(_cli_args(workdir), cwd=ROOT, env=_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  ckpt_dir = os.path.join(workdir, 'checkpoints')
  deadline = time.time() + 240
  while time.time() < deadline and proc.poll() is None:
    if os.path.isdir(ckpt_dir) and any(n.isdigit() for n in os.listdir(ckpt_dir)):
      return proc
    time.sleep(0.01)
  proc.kill()
  out, err = proc.communicate()
  pytest.fail(f'no checkpoint appeared while the run was going (rc={proc.returncode}): {err[-2000:]}')


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
  """The uninterrupted run."""
  workdir = str(tmp_path_factory.mktemp('reference'))
  summary = train.train_and_evaluate(_config(), workdir)
  assert summary['status'] == 'completed' and summary['steps'] == 6
  alerts = run_files.read_jsonl(os.path.join(workdir, run_files.ALERTS))
  assert summary['alerts'] >= 2 and [a['step'] for a in alerts[:2]] == [1, 1]
  return workdir


def _summary(workdir):
  with open(os.path.join(workdir, 'summary.json')) as f:
    summary = json.load(f)
  return {k: summary[k] for k in SUMMARY_KEYS}


def test_save_restore_round_trip_of_the_full_train_state(tmp_path):
  cfg = _config()
  ds = data_lib.load_dataset(cfg)
  setup = step_lib.make_setup(cfg, ds)
  fresh = step_lib.init_state(setup, ds.image_shape, cfg.seed)
  # Every leaf gets distinct non-trivial values (opt moments, VQ stats, rng, step).
  leaves, treedef = jax.tree.flatten(fresh)
  rng = np.random.default_rng(0)
  state = jax.tree.unflatten(treedef, [
      (rng.standard_normal(x.shape) * 3).astype(x.dtype) if x.dtype.kind == 'f'
      else (np.asarray(x) + 7).astype(x.dtype) for x in leaves])
  state = checkpoint.detached_copy(jax.device_put(state))
  meta = {'step': 7, 'epoch': 2, 'step_in_epoch': 1, 'loop': loop_state.new_loop_state(),
          'partial_epoch': {'loss': {'dtype': 'float32', 'values': [1.5, 0.1]}}}
  state['step'] = jax.numpy.asarray(7, jax.numpy.int32)
  ckpts = checkpoint.RunCheckpoints(str(tmp_path / 'checkpoints'), keep=2)
  ckpts.save(state, meta, {'seed': 0})
  ckpts.close()
  again = checkpoint.RunCheckpoints(str(tmp_path / 'checkpoints'), keep=2)
  restored = again.restore_latest(checkpoint.abstract_of(fresh))
  again.close()
  assert restored.step == 7 and restored.meta == meta
  assert isinstance(restored.state['vq'], vq_lib.VQState)
  chex.assert_trees_all_equal(restored.state, state)
  chex.assert_trees_all_equal_dtypes(restored.state, state)


def test_retention_keeps_latest_and_best(tmp_path):
  state = {'w': jax.numpy.zeros((2,)), 'step': jax.numpy.zeros((), jax.numpy.int32)}
  ckpts = checkpoint.RunCheckpoints(str(tmp_path), keep=2)
  for step, val in [(1, 1.0), (2, None), (3, 5.0), (4, None), (5, 4.0)]:
    ckpts.save(dict(state, step=jax.numpy.asarray(step)), {'step': step}, {}, val)
  ckpts.close()
  assert ckpts.steps() == [1, 4, 5]        # latest 2, plus step 1: best val loss


def test_a_save_failing_in_the_background_is_raised_at_close(tmp_path, monkeypatch):
  state = {'w': jax.numpy.zeros((2,)), 'step': jax.numpy.ones((), jax.numpy.int32)}
  ckpts = checkpoint.RunCheckpoints(str(tmp_path), keep=2)

  def disk_full(*args, **kwargs):
    raise OSError('disk full')

  monkeypatch.setattr(ckpts.manager, 'save', disk_full)
  ckpts.save(state, {'step': 1}, {})      # returns: the save call runs on its thread
  with pytest.raises(OSError, match='disk full'):
    ckpts.close()
  assert ckpts.steps() == []


def test_close_waits_for_orbax_tmp_cleanup_started_by_the_constructor(tmp_path, monkeypatch):
  """Orbax's CheckpointManager cleans up temporary folders on a thread started
  in its constructor, and its close() does not wait for it: a run stopped
  before its first save exited with it running (a traceback at interpreter
  shutdown). Here the clean-up is slowed down: close() must outlast it."""
  from orbax.checkpoint import checkpoint_manager as ocp_cm  # noqa: PLC0415
  real, finished = ocp_cm.temporary_paths.cleanup_temporary_paths, []

  async def slow_cleanup(*args, **kwargs):
    import asyncio  # noqa: PLC0415
    await asyncio.sleep(0.5)
    out = await real(*args, **kwargs)
    finished.append(True)
    return out

  monkeypatch.setattr(ocp_cm.temporary_paths, 'cleanup_temporary_paths', slow_cleanup)
  ckpts = checkpoint.RunCheckpoints(str(tmp_path / 'checkpoints'))
  assert not finished                            # still running in the background
  ckpts.close()
  assert finished == [True]


def test_killed_run_resumes_to_identical_params_and_logs(reference, tmp_path, capfd):
  workdir = str(tmp_path / 'run')
  proc = _start_and_wait_for_checkpoint(workdir)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not os.path.exists(os.path.join(workdir, 'summary.json'))   # killed mid-run
  assert len(_logs(workdir)[0]) < 2

  # Resume: the same run again (in this process, to skip a second start-up).
  summary = train.train_and_evaluate(_config(), workdir)
  assert 'resuming from checkpoint step' in capfd.readouterr().err
  assert summary['status'] == 'completed' and summary['steps'] == 6
  mine, ref = _final_state(workdir), _final_state(reference)
  assert mine.step == ref.step == 6
  chex.assert_trees_all_equal(mine.state, ref.state)      # bit for bit
  assert _logs(workdir) == _logs(reference)                # no line lost or repeated
  assert _summary(workdir) == _summary(reference)          # monitor state resumed
  with open(os.path.join(workdir, 'final_state.msgpack'), 'rb') as f, \
       open(os.path.join(reference, 'final_state.msgpack'), 'rb') as g:
    assert f.read() == g.read()


def test_unreadable_latest_checkpoint_falls_back_to_previous(reference, tmp_path, capfd):
  workdir = str(tmp_path / 'run')
  shutil.copytree(reference, workdir)
  os.remove(os.path.join(workdir, 'summary.json'))
  ckpt_dir = os.path.join(workdir, 'checkpoints')
  steps = sorted(int(n) for n in os.listdir(ckpt_dir) if n.isdigit())
  latest, previous = steps[-1], steps[-2]
  for root, _, files in os.walk(os.path.join(ckpt_dir, str(latest), 'state')):
    for name in files:                                     # truncate the array data
      if root != os.path.join(ckpt_dir, str(latest), 'state'):
        open(os.path.join(root, name), 'w').close()
  assert (latest, previous) == (6, 4)   # 4: mid-epoch (epoch 1, batch 1)
  summary = train.train_and_evaluate(_config(), workdir)
  err = capfd.readouterr().err
  assert f'checkpoint step {latest} ' in err and 'unreadable' in err
  assert 'resuming from checkpoint step 4 (epoch 1, batch 1)' in err
  assert f'resuming from checkpoint step {previous} ' in err
  assert summary['status'] == 'completed' and summary['resumed_from_step'] == previous
  assert os.path.isdir(os.path.join(workdir, 'corrupt_checkpoints', str(latest)))
  chex.assert_trees_all_equal(_final_state(workdir).state, _final_state(reference).state)
  assert _logs(workdir) == _logs(reference)


def test_sigterm_saves_a_checkpoint_and_reports_preempted(reference, tmp_path):
  workdir = str(tmp_path / 'run')
  proc = _start_and_wait_for_checkpoint(workdir)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err[-3000:]
  assert out.startswith('preempted:')
  summary = json.load(open(os.path.join(workdir, 'summary.json')))
  assert summary['status'] == 'preempted' and summary['steps'] < 6
  saved = _final_state(workdir)
  assert saved.step == summary['steps'] and int(saved.state['step']) == summary['steps']
  # Running the same command again continues, says so, and ends where the
  # uninterrupted run ended.
  out = subprocess.run(_cli_args(workdir), cwd=ROOT, env=_env(), capture_output=True,
                       text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert f'resuming from checkpoint step {saved.step} ' in out.stderr
  assert out.stdout.startswith('completed: 2 epochs, 6 steps')
  chex.assert_trees_all_equal(_final_state(workdir).state, _final_state(reference).state)
  assert _logs(workdir) == _logs(reference)


def test_workdir_of_a_different_config_is_refused(reference, tmp_path):
  workdir = str(tmp_path / 'run')
  shutil.copytree(reference, workdir, ignore=shutil.ignore_patterns('checkpoints'))
  def contents():
    out = {}
    for n in os.listdir(workdir):
      with open(os.path.join(workdir, n), 'rb') as f:
        out[n] = f.read()
    return out
  before = contents()
  with pytest.raises(checkpoint.CheckpointError,
                     match=r'different config \(vq.commitment_cost: 0.15 -> 0.2\).*'
                           'allow_config_change=True'):
    train.train_and_evaluate(_config(**{'vq.commitment_cost': 0.2}), workdir)
  assert contents() == before
  # Result-neutral keys (progress bar, checkpoint settings) are not a different config.
  assert run_open.check_workdir(
      workdir, run_open.config_to_json(_config(**{'checkpoint.keep': 9})),
      allow_config_change=False)


def test_rewind_jsonl_keeps_lines_up_to_the_step_and_drops_a_torn_line(tmp_path):
  path = str(tmp_path / 'log.jsonl')
  with open(path, 'w') as f:
    f.write('{"step": 2, "a": 1}\n{"step": 4, "a": 2}\n{"step": 6, "a": 3}\n{"step": 8, "a"')
  assert run_files.rewind_jsonl(path, 4) == 2
  assert run_files.read_jsonl(path) == [{'step': 2, 'a': 1}, {'step': 4, 'a': 2}]


def test_arc_run_resumes_from_a_mid_epoch_checkpoint_exactly(tmp_path):
  """Padded colour-id data: the run as it was when its mid-epoch checkpoint 4
  was the latest (later checkpoint, summary and final weights lost, logs
  written past it) continues to the uninterrupted run's weights and logs."""
  cfg = load('arc_gentle', 'tiny')
  cfg.checkpoint.every_steps = 2
  cfg.monitor.rank_alert = 100.0
  ref, run = tmp_path / 'ref', tmp_path / 'run'
  assert train.train_and_evaluate(cfg, str(ref))['steps'] == 6
  shutil.copytree(ref, run)
  shutil.rmtree(run / 'checkpoints' / '6')
  for name in ('summary.json', 'final_state.msgpack'):
    os.remove(run / name)
  assert len(run_files.read_jsonl(run / run_files.EPOCH_METRICS)) == 2
  summary = train.train_and_evaluate(cfg, str(run))
  assert summary['resumed_from_step'] == 4 and summary['status'] == 'completed'
  assert (run / 'final_state.msgpack').read_bytes() == (ref / 'final_state.msgpack').read_bytes()
  assert _logs(str(run)) == _logs(str(ref))
  assert _summary(str(run)) == _summary(str(ref))
  assert run_files.read_jsonl(run / run_files.ALERTS)          # alerts fired and resumed


def test_restore_into_another_shape_lists_every_mismatch(tmp_path):
  """RunCheckpoints.restore refuses a state whose names or shapes differ, naming each."""
  state = jax.tree.map(jax.numpy.asarray, {
      'step': np.int32(4), 'params': {'w': np.ones((3, 2), np.float32),
                                      'b': np.zeros((2,), np.float32)}})
  ckpts = checkpoint.RunCheckpoints(str(tmp_path / 'checkpoints'))
  ckpts.save(state, {'step': 4}, {'seed': 0})
  ckpts.wait()
  wrong = jax.tree.map(jax.numpy.asarray, {
      'step': np.int32(0), 'params': {'w': np.ones((3, 5), np.float32),
                                      'c': np.zeros((2,), np.float32)}})
  with pytest.raises(checkpoint.CheckpointError) as err:
    ckpts.restore(4, checkpoint.abstract_of(wrong))
  msg = str(err.value)
  assert 'checkpoint step 4' in msg and '(3 mismatches)' in msg
  assert 'params/w: checkpoint (3, 2)' in msg and 'run (3, 5)' in msg
  assert 'params/b: in the checkpoint' in msg and 'params/c: missing from the checkpoint' in msg
  restored = ckpts.restore(4, checkpoint.abstract_of(state))
  chex.assert_trees_all_equal(restored.state, state)
  ckpts.close()


def test_every_epochs_saves_every_nth_epoch_end_and_the_last(tmp_path):
  cfg = _config(**{'checkpoint.every_steps': None, 'checkpoint.every_epochs': 2,
                   'checkpoint.keep': 10, 'train.num_epochs': 3})
  summary = train.train_and_evaluate(cfg, str(tmp_path))
  spe = summary['steps_per_epoch']
  ckpts = checkpoint.RunCheckpoints(str(tmp_path / 'checkpoints'), read_only=True)
  try:
    assert ckpts.steps() == [2 * spe, 3 * spe]      # epoch 1's end skipped, the last kept
  finally:
    ckpts.close()
  # A finished run restarted finds its last checkpoint and does not train again.
  again = train.train_and_evaluate(cfg, str(tmp_path))
  assert again['status'] == 'completed' and again['steps'] == 3 * spe


def _two_small_checkpoints(directory):
  """Checkpoints 2 and 4 of a small state; returns (state, RunCheckpoints)."""
  state = jax.tree.map(jax.numpy.asarray, {
      'step': np.int32(2), 'params': {'w': np.ones((3, 2), np.float32)}})
  ckpts = checkpoint.RunCheckpoints(directory)
  for step in (2, 4):
    state = {**state, 'step': jax.numpy.asarray(np.int32(step))}
    ckpts.save(state, {'step': step}, {'seed': 0})
    ckpts.wait()
  ckpts.close()
  return state


@pytest.mark.parametrize('damage', ['state/_METADATA', 'meta/metadata'])
def test_a_missing_metadata_file_is_a_damaged_checkpoint(tmp_path, capfd, damage):
  """Deleting a metadata file of the latest checkpoint quarantines it (it was
  read as a checkpoint of another model, a refusal for good) and the previous
  one is used."""
  directory = str(tmp_path / 'checkpoints')
  state = _two_small_checkpoints(directory)
  os.remove(os.path.join(directory, '4', damage))
  ckpts = checkpoint.RunCheckpoints(directory)
  try:
    restored = ckpts.restore_latest(checkpoint.abstract_of(state))
  finally:
    ckpts.close()
  assert restored.step == 2
  err = capfd.readouterr().err
  assert 'checkpoint step 4' in err and f'{damage}: missing' in err
  assert os.path.isdir(tmp_path / 'corrupt_checkpoints' / '4')
  assert not (tmp_path / run_files.MISMATCHES).exists()


def test_a_real_mismatch_is_capped_with_the_full_list_in_a_file(tmp_path):
  directory = str(tmp_path / 'checkpoints')
  state = _two_small_checkpoints(directory)
  wrong = {**state, 'params': {f'p{i}': np.zeros((i + 1,), np.float32) for i in range(8)}}
  ckpts = checkpoint.RunCheckpoints(directory)
  try:
    with pytest.raises(checkpoint.CheckpointError) as err:
      ckpts.restore_latest(checkpoint.abstract_of(wrong))
  finally:
    ckpts.close()
  msg, listing = str(err.value), str(tmp_path / run_files.MISMATCHES)
  assert '(9 mismatches)' in msg and msg.count(': missing from the checkpoint') == 5
  assert msg.endswith(f'; ... and 4 more (all of them in {listing})')
  with open(listing) as f:
    lines = f.read().splitlines()
  assert lines[0].endswith(': 9 mismatches') and len(lines) == 10
  assert sorted(os.listdir(directory)) == ['2', '4']       # nothing quarantined


def test_orbax_event_loop_closed_noise_is_dropped_and_other_errors_kept(monkeypatch, capfd):
  import logging
  import threading
  seen = []
  monkeypatch.setattr(sys, 'unraisablehook', lambda u: seen.append(str(u.exc_value)))
  monkeypatch.setattr(threading, 'excepthook', lambda a: seen.append(str(a.exc_value)))
  checkpoint_integrity.quiet_event_loop_closed()       # as at import, over these hooks

  class Closing:
    def __init__(self, message):
      self.message = message

    def __del__(self):
      raise RuntimeError(self.message)

  def raising(message):
    raise RuntimeError(message)

  for message in ('Event loop is closed', 'a real error'):
    Closing(message)                          # an exception in a destructor
    t = threading.Thread(target=raising, args=(message,))
    t.start()
    t.join()
  assert seen == ['a real error', 'a real error']
  logging.getLogger('asyncio').error('Task exception was never retrieved', exc_info=(
      RuntimeError, RuntimeError('Event loop is closed'), None))
  assert 'Event loop is closed' not in capfd.readouterr().err
