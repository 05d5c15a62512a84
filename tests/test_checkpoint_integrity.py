"""Damaged bytes in a checkpoint: a checksum mismatch, or a non-finite loss
right after a resume, falls back to the previous checkpoint."""
import glob
import json
import os
import shutil

import jax
import numpy as np
import pytest

from jepa_jax import data as data_lib
from jepa_jax.run import checkpoint
from jepa_jax.run import files as run_files
from jepa_jax.run import integrity as checkpoint_integrity
from jepa_jax.train import loop as train
from jepa_jax.train import loop_state
from jepa_jax.train import step as step_lib
from conftest import load, set_overrides

# Whole runs: left out of the fast subset (pytest -m 'not slow').
pytestmark = pytest.mark.slow

# 2 epochs of 3 steps, a checkpoint every 2 steps and at each epoch end: the
# run keeps steps 3, 4 (mid-epoch: epoch 1, batch 1) and 6.
OVERRIDES = {'checkpoint.every_steps': 2}


def _config():
  return set_overrides(load('gentle', 'tiny'), OVERRIDES)


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('reference'))
  summary = train.train_and_evaluate(_config(), workdir)
  assert summary['status'] == 'completed' and summary['steps'] == 6
  return workdir


def _copy(reference, tmp_path):
  workdir = str(tmp_path / 'run')
  shutil.copytree(reference, workdir)
  return workdir


def _final_weights(workdir):
  with open(os.path.join(workdir, run_files.FINAL_STATE), 'rb') as f:
    return f.read()


def _abstract():
  cfg = _config()
  ds = data_lib.load_dataset(cfg)
  setup = step_lib.make_setup(cfg, ds)
  return checkpoint.abstract_of(step_lib.init_state(setup, ds.image_shape, cfg.seed))


def _restore_unchecked(workdir, step, abstract):
  """Checkpoint `step`'s state as Orbax reads it (no checksums), or None."""
  ckpts = checkpoint.RunCheckpoints(os.path.join(workdir, 'checkpoints'), read_only=True)
  try:
    return ckpts.manager.restore(step, args=checkpoint.ocp.args.Composite(
        state=checkpoint.ocp.args.PyTreeRestore(
            item=abstract,
            restore_args=checkpoint.ocp.checkpoint_utils.construct_restore_args(abstract))
    ))['state']
  except Exception:  # pylint: disable=broad-except
    return None
  finally:
    ckpts.close()


def _garble_silently(workdir, step):
  """Garbles 512 bytes of a data file of checkpoint `step` at a place Orbax
  still reads back without an error (its zstd blocks carry no checksum) but
  with an array changed; returns the names of the arrays that changed."""
  abstract = _abstract()
  before = checkpoint_integrity.digests(_restore_unchecked(workdir, step, abstract))
  files = sorted(glob.glob(os.path.join(workdir, 'checkpoints', str(step), 'state',
                                        'ocdbt.process_0', 'd', '*')),
                 key=os.path.getsize, reverse=True)
  junk = np.random.default_rng(0).integers(0, 256, 512, dtype=np.uint8).tobytes()
  for path in files:
    with open(path, 'rb') as f:
      data = f.read()
    for fraction in (0.3, 0.5, 0.7, 0.2, 0.8):
      at = int(len(data) * fraction)
      with open(path, 'wb') as f:
        f.write(data[:at] + junk + data[at + 512:])
      after = _restore_unchecked(workdir, step, abstract)
      changed = [] if after is None else checkpoint_integrity.mismatches(before, after)
      if changed:
        return changed
      with open(path, 'wb') as f:
        f.write(data)
  pytest.fail(f'no place in checkpoint {step} garbles an array silently')


def test_garbled_bytes_in_the_latest_checkpoint_fall_back_to_the_previous_one(
    reference, tmp_path, capfd):
  """512 garbled bytes of a data file used to restore without a warning."""
  workdir = _copy(reference, tmp_path)
  changed = _garble_silently(workdir, 6)
  capfd.readouterr()
  summary = train.train_and_evaluate(_config(), workdir)
  err = capfd.readouterr().err
  assert ('warning: checkpoint step 6 in ' in err
          and f'checksum mismatch in {len(changed)} array(s): {changed[0]}' in err), err
  assert 'resuming from checkpoint step 4 (epoch 1, batch 1)' in err
  assert os.path.isdir(os.path.join(workdir, 'corrupt_checkpoints', '6'))
  assert summary['status'] == 'completed' and summary['resumed_from_step'] == 4
  assert _final_weights(workdir) == _final_weights(reference)       # bit for bit


def test_a_non_finite_loss_right_after_a_resume_sets_the_checkpoint_aside(
    reference, tmp_path, capfd):
  """A latest checkpoint whose params are NaN though its checksums hold (the
  state was bad when it was saved): every rerun used to resume it and fail."""
  workdir = _copy(reference, tmp_path)
  ckpt_dir = os.path.join(workdir, 'checkpoints')
  ckpts = checkpoint.RunCheckpoints(ckpt_dir)
  try:
    restored = ckpts.restore(4, _abstract())
    for step in (4, 6):
      shutil.rmtree(os.path.join(ckpt_dir, str(step)))
    ckpts.manager.reload()
    state = dict(restored.state)
    state['params'] = jax.tree.map(lambda x: x * np.nan, state['params'])
    with open(os.path.join(workdir, run_files.CONFIG)) as f:
      ckpts.save(state, restored.meta, json.load(f))
  finally:
    ckpts.close()
  with pytest.raises(loop_state.TrainingError, match=r'non-finite loss at step 6: loss=nan, 2 step\(s\) '
                     r'after resuming from checkpoint step 4: that checkpoint is treated '
                     r'as damaged'):
    train.train_and_evaluate(_config(), workdir)
  err = capfd.readouterr().err
  assert 'warning: checkpoint step 4 in ' in err and 'treated as damaged' in err
  assert os.path.isdir(os.path.join(workdir, 'corrupt_checkpoints', '4'))
  summary = train.train_and_evaluate(_config(), workdir)        # the same command again
  assert 'resuming from checkpoint step 3 ' in capfd.readouterr().err
  assert summary['status'] == 'completed' and summary['resumed_from_step'] == 3
  assert _final_weights(workdir) == _final_weights(reference)


def test_digests_name_each_changed_array():
  tree = {'a': jax.numpy.ones((2, 3)), 'b': {'c': jax.numpy.zeros(4, jax.numpy.int32)},
          'key': jax.random.key(0)}
  saved = checkpoint_integrity.digests(tree)
  assert sorted(saved) == ['a', 'b/c', 'key']
  changed = dict(tree, a=tree['a'].at[1, 2].set(1.5))
  assert checkpoint_integrity.mismatches(saved, changed) == ['a']
  assert checkpoint_integrity.mismatches(saved, tree) == []
