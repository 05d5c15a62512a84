"""Options C and D as the reference describes them: the codebook's own
learning rate (configs/gradient_long.py) and the two-stage run whose stage 2
trains only the codebook (configs/two_stage_reference.py)."""
import os

import chex
import jax
import numpy as np
import pytest

from jepa_jax import data as data_lib
from jepa_jax.config import load as config_lib
from jepa_jax.train import stages
from jepa_jax.train import step as step_lib
from conftest import load, set_overrides

FAST = {'xla_cpu_use_fusion_emitters': False, 'xla_backend_optimization_level': 0}


def test_codebook_learning_rate_is_validated_and_off_by_default():
  assert load('gradient').vq.codebook_learning_rate is None
  assert config_lib.ADDED_KEYS['vq.codebook_learning_rate'] is None
  cfg = load('gradient_long')
  config_lib.validate(cfg)
  assert (cfg.vq.ema_decay, cfg.vq.codebook_learning_rate, cfg.train.num_epochs) == (
      None, 1e-4, 60)
  for name, value, why in (('gentle', 1e-4, 'this config has none'),
                           ('gradient', -1.0, 'must be > 0')):
    bad = set_overrides(load(name), {'vq.codebook_learning_rate': value})
    with pytest.raises(config_lib.ConfigError, match=why) as err:
      config_lib.validate(bad)
    assert err.value.key == 'vq.codebook_learning_rate'


def _one_step(codebook_lr):
  cfg = set_overrides(load('gradient', 'tiny'), {
      'train.warmup_epochs': 0, 'vq.refresh_enabled': False,
      'vq.codebook_learning_rate': codebook_lr})
  config_lib.validate(cfg)
  ds = data_lib.load_dataset(cfg)
  setup = step_lib.make_setup(cfg, ds)
  state0 = jax.tree.map(np.asarray, step_lib.init_state(setup, ds.image_shape, cfg.seed))
  images, ids = next(iter(data_lib.epoch_batches(ds.train_images, cfg.train.batch_size,
                                                 cfg.seed, 0, 1)))
  step = jax.jit(step_lib.make_train_step(setup)).lower(state0, images, ids).compile(
      compiler_options=FAST)
  state, _ = step(state0, images, ids)
  return state0, jax.tree.map(np.asarray, state)


def test_codebook_learning_rate_scales_only_the_codebook_update():
  lr = load('gradient').train.learning_rate
  start, plain = _one_step(None)
  _, same = _one_step(lr)
  _, low = _one_step(lr / 10)
  # the same peak: the same step (two AdamWs over the split tree, one
  # clipping). atol: a leaf whose gradient is float noise (the attention key
  # bias, which softmax ignores) gets an Adam step of noise, up to ~lr.
  tol = dict(rtol=1e-5, atol=1e-5)
  chex.assert_trees_all_close(same['params'], plain['params'], **tol)
  np.testing.assert_allclose(same['vq'].codebook, plain['vq'].codebook, rtol=1e-6)
  # a tenth: the other params' step unchanged, the codebook's a tenth
  chex.assert_trees_all_close(low['params'], plain['params'], **tol)
  moved = plain['vq'].codebook - start['vq'].codebook
  assert np.abs(moved).max() > 0
  np.testing.assert_allclose(low['vq'].codebook - start['vq'].codebook, moved / 10,
                             rtol=1e-3, atol=1e-8)


def test_two_stage_reference_trains_only_the_codebook_in_stage_2(tmp_path):
  cfg = load('two_stage_reference')
  assert (cfg.train.num_epochs, cfg.stage2.train.num_epochs) == (50, 15)
  assert set(cfg.stage2.train.frozen) == {'encoder', 'target_encoder', 'predictor',
                                          'temperature'}
  alt = load('two_stage')                        # the named alternative, unchanged
  assert (alt.train.num_epochs, alt.stage2.train.num_epochs) == (30, 10)
  assert alt.stage2.train.frozen == ('encoder', 'target_encoder')
  cfg = load('two_stage_reference', 'tiny')
  workdir = str(tmp_path)
  summary = stages.run(cfg, workdir)
  assert summary['status'] == 'completed'
  from test_two_stage import _state_of          # noqa: PLC0415
  cfg1, cfg2 = (stages.stage_config(cfg, s, init_from=os.path.join(workdir, 'stage1'))
                for s in (1, 2))
  s1 = _state_of(cfg1, os.path.join(workdir, 'stage1'))
  s2 = _state_of(cfg2, os.path.join(workdir, 'stage2'))
  chex.assert_trees_all_equal(s2['params'], s1['params'])    # encoder, predictor, T
  chex.assert_trees_all_equal(s2['target_params'], s1['target_params'])
  ds = data_lib.load_dataset(cfg2)
  setup2 = step_lib.make_setup(cfg2, ds)
  from jepa_jax.train import start as start_state               # noqa: PLC0415
  start = start_state.starting_state(cfg2, setup2, ds, step_lib.init_state(
      setup2, ds.image_shape, cfg2.seed))
  assert not np.allclose(s2['vq'].codebook, start['vq'].codebook)   # the codebook learned


def test_two_stage_settled_is_option_d_with_a_scheduled_stage2_ema_step():
  settled, ref = load('two_stage_settled'), load('two_stage_reference')
  assert ref.variant == 'two_stage_reference'
  stage2 = stages.stage_config(settled, 2, init_from='x')
  assert stage2.vq.ema_decay_schedule == 'learning_rate'
  assert stages.stage_config(ref, 2, init_from='x').vq.ema_decay_schedule == 'constant'
  assert stages.stage_config(settled, 1).vq.enabled is False
  settled.variant = ref.variant
  del settled.stage2.vq['ema_decay_schedule']
  assert settled.to_dict() == ref.to_dict()


def test_early_refresh_settled_is_early_refresh_with_a_lower_final_learning_rate():
  settled, ref = load('early_refresh_settled'), load('early_refresh')
  assert settled.train.min_learning_rate == 1e-6 and ref.train.min_learning_rate == 1e-5
  settled.variant, settled.train.min_learning_rate = ref.variant, ref.train.min_learning_rate
  assert settled.to_dict() == ref.to_dict()
