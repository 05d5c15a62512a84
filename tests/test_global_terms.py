"""The LeJEPA-style global terms: loss.global_weight and loss.sigreg_input."""
import dataclasses
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jepa_jax.objective import losses
from jepa_jax.objective import terms as objective
from jepa_jax.train import step as step_lib


def _spec(**kw):
  base = dict(infonce=1.0, sigreg=0.02, invariance=0.1, relational=0.05,
              relational_context=0.025, sigreg_num_slices=16, sigreg_num_points=17,
              temperature_init=0.1, temperature_min=0.07, temperature_max=0.15)
  return step_lib.LossSpec(**{**base, **kw})


def _terms(spec):
  rng = np.random.default_rng(0)
  b, k, m, t, d = 6, 5, 2, 3, 8
  z = jnp.asarray(rng.normal(size=(b, k, d)), jnp.float32)
  pred = jnp.asarray(rng.normal(size=(b, m, t, d)), jnp.float32)
  tgt = jnp.asarray(rng.normal(size=(b, m, t, d)), jnp.float32)
  t_pool = jnp.asarray(rng.normal(size=(b, d)), jnp.float32)
  setup = types.SimpleNamespace(loss=spec)
  key = jax.random.PRNGKey(3)
  parts = objective._jepa_terms(setup, 0.1, z, pred, tgt, t_pool, None, None,
                                None, None, key)
  return parts, z, t_pool, key


def test_global_term_is_the_mse_of_the_pooled_context_to_the_pooled_target():
  parts, z, t_pool, _ = _terms(_spec(global_=0.5))
  want = np.mean((np.asarray(z).mean(1) - np.asarray(t_pool)) ** 2)
  assert float(parts['global']) == pytest.approx(want, rel=1e-5)
  assert _spec(global_=0.5).weights['global'] == 0.5


def test_without_its_weight_the_global_term_is_neither_computed_nor_weighted():
  parts, *_ = _terms(_spec())
  assert 'global' not in parts and 'global' not in _spec().weights


def test_pooled_sigreg_reads_one_mean_token_per_image():
  spec = _spec(sigreg_input='pooled')
  parts, z, _, key = _terms(spec)
  want = losses.sigreg_loss(z.mean(1), key, num_slices=16, num_points=17)
  assert float(parts['sigreg']) == pytest.approx(float(want), rel=1e-6)
  tokens, *_ = _terms(dataclasses.replace(spec, sigreg_input='tokens'))
  assert float(tokens['sigreg']) != pytest.approx(float(want), rel=1e-3)


def test_the_config_keys_reach_the_loss_spec_and_are_validated():
  from jepa_jax.config import checks as config_checks
  from jepa_jax.errors import ConfigError
  from configs import no_vq_gentle
  cfg = no_vq_gentle.get_config('tiny')
  cfg.loss.global_weight, cfg.loss.sigreg_input = 0.3, 'pooled'
  spec = step_lib.LossSpec.from_config(cfg.loss)
  assert (spec.global_, spec.sigreg_input) == (0.3, 'pooled')
  cfg.loss.sigreg_input = 'pool'
  with pytest.raises(ConfigError) as err:
    config_checks.validate(cfg)
  assert err.value.key == 'loss.sigreg_input'
