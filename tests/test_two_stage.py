"""Two-stage runs: stage 1 without VQ, stage 2 adds VQ on the frozen stage-1 encoder."""
import json
import os
import re

import chex
import jax
import numpy as np
import pytest

from jepa_jax import data as data_lib
from jepa_jax import diagnose
from jepa_jax import evaluate
from jepa_jax.config import load as config_lib
from jepa_jax.model import vit as model_lib
from jepa_jax.run import checkpoint
from jepa_jax.train import stages
from jepa_jax.train import start as start_state
from jepa_jax.train import step as step_lib
from jepa_jax.vq import codebook as vq_lib
from conftest import load

# Whole runs or subprocesses: left out of the fast subset (pytest -m 'not slow').
pytestmark = pytest.mark.slow


def _state_of(stage_cfg, workdir):
  ds = data_lib.load_dataset(stage_cfg)
  setup = step_lib.make_setup(stage_cfg, ds)
  abstract = checkpoint.abstract_of(step_lib.init_state(setup, ds.image_shape,
                                                        stage_cfg.seed))
  ckpts = checkpoint.RunCheckpoints(os.path.join(workdir, 'checkpoints'), read_only=True)
  try:
    return ckpts.restore(max(ckpts.steps()), abstract).state
  finally:
    ckpts.close()


@pytest.fixture(scope='module')
def two_stage_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('two_stage'))
  cfg = load('two_stage', 'tiny')
  return cfg, workdir, stages.run(cfg, workdir)


def test_two_stage_freezes_the_encoder_and_trains_the_codebook(two_stage_run):
  cfg, workdir, summary = two_stage_run
  assert summary['status'] == 'completed'
  assert [summary['stages'][s]['steps'] for s in ('stage1', 'stage2')] == [6, 6]
  cfg1, cfg2 = (stages.stage_config(cfg, s, init_from=os.path.join(workdir, 'stage1'))
                for s in (1, 2))
  stored = json.load(open(os.path.join(workdir, 'stage2', 'config.json')))
  assert stored['vq']['enabled'] and stored['vq']['commitment_cost'] == 0.05
  assert not json.load(open(os.path.join(workdir, 'stage1', 'config.json')))['vq']['enabled']
  s1 = _state_of(cfg1, os.path.join(workdir, 'stage1'))
  s2 = _state_of(cfg2, os.path.join(workdir, 'stage2'))
  assert 'vq' not in s1 and int(s2['step']) == 6
  # Frozen: bit-identical through stage 2. Trained: predictor and codebook.
  chex.assert_trees_all_equal(s2['params']['encoder'], s1['params']['encoder'])
  chex.assert_trees_all_equal(s2['target_params'], s1['target_params'])
  assert not np.array_equal(s2['params']['predictor']['params']['proj']['kernel'],
                            s1['params']['predictor']['params']['proj']['kernel'])
  ds = data_lib.load_dataset(cfg2)
  setup2 = step_lib.make_setup(cfg2, ds)
  start = start_state.starting_state(cfg2, setup2, ds, step_lib.init_state(
      setup2, ds.image_shape, cfg2.seed))
  chex.assert_trees_all_equal(start['params']['encoder'], s1['params']['encoder'])
  np.testing.assert_array_equal(start['vq'].embed_sum, start['vq'].codebook)
  np.testing.assert_array_equal(start['vq'].cluster_size, 1.0)
  assert not np.allclose(s2['vq'].codebook, start['vq'].codebook)   # EMA moved it
  # Frozen params have no optimizer state (optax set_to_zero branch): no
  # moments, so no update and no weight decay; the predictor has moments.
  paths = [checkpoint._path_name(p) for p, _ in
           jax.tree_util.tree_flatten_with_path(s2['opt_state'])[0]]
  assert not [p for p in paths if '/encoder/' in p]
  assert [p for p in paths if '/predictor/' in p]


def test_stage2_from_a_checkpoint_of_another_shape_lists_every_mismatch(two_stage_run, tmp_path):
  cfg, workdir, _ = two_stage_run
  bad = load('two_stage', 'tiny')
  bad.stage, bad.init_from = 2, os.path.join(workdir, 'stage1', 'checkpoints', '6')
  bad.model.embed_dim = 32
  with pytest.raises(checkpoint.CheckpointError) as err:
    stages.run(bad, str(tmp_path / 'run'))
  msg = str(err.value)
  assert 'step 6' in msg and 'does not fit this run' in msg
  # One line of the first 5 and the count; every one of them in the file it names.
  match = re.search(r'\((\d+) mismatches\).*; \.\.\. and (\d+) more \(all of them in (.*)\)$',
                    msg)
  total, more, listing = int(match[1]), int(match[2]), match[3]
  assert total == more + 5 and not listing.startswith(str(tmp_path))
  with open(listing) as f:
    full = f.read()
  assert len(full.splitlines()) == total + 1
  for name in ('params/encoder/params/patch_embed/kernel: checkpoint (2, 2, 1, 16) '
               'float32 vs run (2, 2, 1, 32) float32',
               'target_params/params/norm/scale: checkpoint (16,) float32 vs run (32,)',
               'params/predictor/params/embed/kernel: checkpoint (16, 8) float32 vs '
               'run (32, 8)'):
    assert name in full
  assert not os.path.exists(tmp_path / 'run')             # nothing written


def test_init_from_skip_keeps_the_named_groups_fresh(two_stage_run, tmp_path):
  # A no-VQ run on stage 1's encoders with a fresh predictor (the predictor
  # retraining probe): the encoders are loaded, the predictor and temperature
  # are the fresh initialisation; a checkpoint whose predictor does not fit
  # is still accepted, because a skipped group is not read.
  cfg, workdir, _ = two_stage_run
  stage1 = os.path.join(workdir, 'stage1')
  probe = load('no_vq', 'tiny')
  probe.init_from, probe.init_from_skip = stage1, ('predictor', 'temperature')
  probe.model.predictor_dim = 16            # stage 1's predictor is 8 wide
  config_lib.validate(probe)
  ds = data_lib.load_dataset(probe)
  setup = step_lib.make_setup(probe, ds)
  fresh = step_lib.init_state(setup, ds.image_shape, probe.seed)
  start = start_state.starting_state(probe, setup, ds, fresh)
  s1 = _state_of(stages.stage_config(cfg, 1), stage1)
  chex.assert_trees_all_equal(start['params']['encoder'], s1['params']['encoder'])
  chex.assert_trees_all_equal(start['target_params'], s1['target_params'])
  chex.assert_trees_all_equal(start['params']['predictor'], fresh['params']['predictor'])
  chex.assert_trees_all_equal(start['params']['temperature'], fresh['params']['temperature'])
  # Skipping the target encoder keeps it fresh too; the temperature is loaded.
  probe.init_from_skip = ('predictor', 'target_encoder')
  start = start_state.starting_state(probe, setup, ds, fresh)
  chex.assert_trees_all_equal(start['target_params'], fresh['target_params'])
  chex.assert_trees_all_equal(start['params']['encoder'], s1['params']['encoder'])
  chex.assert_trees_all_equal(start['params']['temperature'], s1['params']['temperature'])
  # A name that is no group, or no init_from: refused, one line naming the key.
  for skip, init in ((('decoder',), stage1), (('predictor',), '')):
    probe.init_from_skip, probe.init_from = skip, init
    with pytest.raises(config_lib.ConfigError) as err:
      config_lib.validate(probe)
    assert err.value.key == 'init_from_skip' and '\n' not in str(err.value)


def test_stage2_alone_needs_init_from(tmp_path):
  cfg = load('two_stage', 'tiny')
  cfg.stage = 2
  with pytest.raises(Exception, match='init_from'):
    stages.run(cfg, str(tmp_path))


def test_two_stage_folder_is_read_as_one_run_and_evaluated_on_stage2(two_stage_run):
  """What experiments.assess does with WORKDIR/two_stage/seed_S: diagnose
  finds the stage folders stages.py wrote, evaluation runs on the last."""
  _, workdir, _ = two_stage_run
  folders = diagnose.stage_dirs(workdir)
  assert folders == [os.path.join(workdir, stages.STAGE_DIRS[s]) for s in (1, 2)]
  ev = evaluate.evaluate_run(folders[-1])
  assert 'vq' in json.load(open(os.path.join(folders[-1], 'config.json')))
  run = diagnose.load_run(workdir)
  assert run.variant == 'two_stage' and run.status == 'completed'
  assert run.num_epochs == 4 and len(run.parts) == 2 and run.eval == ev
  # Stage 2 (tiny) refreshes every 2 steps: its points move one step earlier,
  # before each refresh (1, 3, 5), offset by stage 1's 6 steps.
  assert [r['step'] for r in run.embedding] == [2, 4, 6, 7, 9, 11]
  assert 'vq_usage_ratio' not in run.embedding[2] and 'vq_usage_ratio' in run.embedding[3]
  assert diagnose.check_run(run)['status'] == 'completed'


def test_arc_two_stage_config_and_kmeans_on_valid_tokens_only(monkeypatch):
  """`configs/two_stage.py:arc`: both stages on ARC grids; the stage-2
  codebook is fitted to the embeddings of valid (non-padding) tokens only."""
  cfg = load('two_stage', 'arc,tiny')
  cfg1, cfg2 = stages.stage_config(cfg, 1), stages.stage_config(cfg, 2, init_from='x')
  for c in (cfg1, cfg2):
    config_lib.validate(c)
    assert c.data.name == 'arc' and c.model.patch_embed == 'colour'
  assert not cfg1.vq.enabled and cfg2.vq.enabled and cfg2.vq.init == 'kmeans'
  cfg2.vq.kmeans_num_samples = 10 ** 7                      # every valid token
  ds = data_lib.load_dataset(cfg2)
  setup = step_lib.make_setup(cfg2, ds)
  fresh = step_lib.init_state(setup, ds.image_shape, cfg2.seed)
  seen, real = [], vq_lib.kmeans_init
  monkeypatch.setattr(vq_lib, 'kmeans_init',
                      lambda rng, z, k, iters: seen.append(z.shape) or real(rng, z, k, iters))
  vq = start_state.kmeans_codebook(cfg2, setup, ds, fresh['params']['encoder'])
  n_valid = int(np.asarray(model_lib.token_validity(
      ds.train_images, cfg2.model.patch_size)).sum())
  n_tokens = len(ds.train_images) * setup.grid[0] * setup.grid[1]
  assert seen == [(n_valid, cfg2.model.embed_dim)] and n_valid < n_tokens / 2
  assert vq.codebook.shape == (cfg2.vq.codebook_size, cfg2.model.embed_dim)
  assert np.all(np.isfinite(vq.codebook))


def test_cli_epochs_override_reaches_both_stages_and_says_so(tmp_path):
  """`--config.train.num_epochs` on a two-stage config used to set stage 1's
  epochs only (stage 2 ran stage2.train.num_epochs); now both, with a note."""
  import subprocess  # noqa: PLC0415
  import sys  # noqa: PLC0415
  from conftest import ROOT  # noqa: PLC0415
  out = subprocess.run(
      [sys.executable, '-m', 'jepa_jax.main', '--config=configs/two_stage.py:tiny',
       f'--workdir={tmp_path}', '--config.train.num_epochs=1'],
      cwd=ROOT, capture_output=True, text=True, timeout=900,
      env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert out.returncode == 0, out.stderr
  assert ('note: --config.train.num_epochs=1 applies to stage 2 as well (instead of '
          'stage2.train.num_epochs=2)') in out.stderr
  for stage in ('stage1', 'stage2'):
    summary = json.load(open(tmp_path / stage / 'summary.json'))
    assert (summary['epochs_completed'], summary['steps']) == (1, 3), stage
    assert json.load(open(tmp_path / stage / 'config.json'))['train']['num_epochs'] == 1
