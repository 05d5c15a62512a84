"""Digits data, deterministic order, config loading and validation."""
import os

import numpy as np
import pytest

from jepa_jax import data
from jepa_jax.config import load as config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = ('sixth_run', 'vq_no_refresh', 'no_vq', 'gentle', 'gradient')


def cfg_of(name, arg=None):
  spec = os.path.join(ROOT, 'configs', f'{name}.py') + (f':{arg}' if arg else '')
  return config_lib.load_config(spec)


def test_digits_split_is_fixed_and_disjoint():
  ds = data.load_dataset(cfg_of('gentle'))
  assert ds.train_images.shape[1:] == (8, 8, 1) and ds.train_images.dtype == np.float32
  assert len(ds.train_images) + len(ds.val_images) == 1797
  assert len(ds.val_images) == 270
  ds2 = data.load_dataset(cfg_of('no_vq'))
  np.testing.assert_array_equal(ds.val_labels, ds2.val_labels)
  assert abs(ds.train_images.mean()) < 1e-4


def test_epoch_order_is_a_function_of_seed_and_epoch():
  a = data.epoch_permutation(100, 0, 3)
  np.testing.assert_array_equal(a, data.epoch_permutation(100, 0, 3))
  assert not np.array_equal(a, data.epoch_permutation(100, 0, 4))
  assert not np.array_equal(a, data.epoch_permutation(100, 1, 3))
  images = np.arange(100, dtype=np.float32)[:, None, None, None]
  batches = list(data.epoch_batches(images, 32, 0, 3, num_steps=3))
  assert len(batches) == 3 and all(b.shape[0] == 32 for b, _ in batches)
  ids = np.concatenate([i for _, i in batches])
  np.testing.assert_array_equal(ids, a[:96])
  resumed = list(data.epoch_batches(images, 32, 0, 3, num_steps=3, start_step=2))
  np.testing.assert_array_equal(resumed[0][1], batches[2][1])


def test_variant_values_from_the_reference():
  six, gentle = cfg_of('sixth_run'), cfg_of('gentle')
  assert (six.vq.commitment_cost, six.vq.ema_decay, six.vq.refresh_interval,
          six.vq.refresh_usage_threshold, six.train.num_epochs) == (0.3, 0.99, 121, 0.05, 80)
  assert (gentle.vq.commitment_cost, gentle.vq.ema_decay, gentle.vq.refresh_interval,
          gentle.vq.refresh_usage_threshold) == (0.15, 0.95, 726, 0.01)
  # Refresh as often per epoch as the reference (500 / 3000 of its ~95 steps).
  spe = 1527 // six.train.batch_size
  assert spe == 23
  assert six.vq.refresh_interval / spe == pytest.approx(500 / 95, rel=0.01)
  assert gentle.vq.refresh_interval / spe == pytest.approx(3000 / 95, rel=0.01)
  assert six.vq.loss_reduction == gentle.vq.loss_reduction == 'sum'
  assert cfg_of('no_vq_gentle').loss == gentle.loss and not cfg_of('no_vq_gentle').vq.enabled
  assert (gentle.loss.temperature_min, gentle.loss.temperature_max) == (0.05, 0.20)
  assert (gentle.loss.relational_loss.weight,
          gentle.loss.relational_loss.context_self_weight) == (0.025, 0.01)
  assert cfg_of('gradient').vq.ema_decay is None
  assert not cfg_of('no_vq').vq.enabled
  nr = cfg_of('vq_no_refresh')
  assert not nr.vq.refresh_enabled and nr.train.num_epochs == 30
  for v in VARIANTS:
    config_lib.validate(cfg_of(v))
    config_lib.validate(cfg_of(v, 'tiny'))


@pytest.mark.parametrize('key,value,fragment', [
    ('loss.sigreg_weight', -1.0, 'loss.sigreg_weight'),
    ('vq.ema_decay', 1.0, 'vq.ema_decay'),
    ('loss.temperature_min', 0.5, 'loss.temperature_min'),
    ('vq.codebook_size', 0, 'vq.codebook_size'),
    ('data.name', 'imagenet', 'data.name'),
    ('model.attention', 'flash', 'model.attention'),
    ('model.dtype', 'float16', 'model.dtype'),
    ('checkpoint.every_epochs', 0, 'checkpoint.every_epochs'),
])
def test_bad_values_name_the_key(key, value, fragment):
  cfg = cfg_of('gentle')
  node = cfg
  *parents, leaf = key.split('.')
  for p in parents:
    node = node[p]
  node[leaf] = value
  with pytest.raises(config_lib.ConfigError) as err:
    config_lib.validate(cfg)
  assert fragment in str(err.value) and '\n' not in str(err.value)


def test_masking_too_many_context_tokens_for_grid():
  cfg = cfg_of('gentle')
  cfg.masking.num_context_tokens = 9
  with pytest.raises(config_lib.ConfigError, match='masking.num_context_tokens'):
    config_lib.check_against_data(cfg, (8, 8, 1))
  assert config_lib.check_against_data(cfg_of('gentle'), (8, 8, 1)) == (4, 4)


def test_unknown_variant_string():
  with pytest.raises(ValueError, match='unknown config variant'):
    cfg_of('gentle', 'huge')
