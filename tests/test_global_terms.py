"""The global terms: loss.global_weight (LeJEPA-style), loss.global_infonce_weight
(instance discrimination) and loss.sigreg_input."""
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


def test_global_infonce_is_cross_entropy_of_each_view_over_the_batchs_whole_images():
  parts, z, t_pool, _ = _terms(_spec(global_infonce=2.0))
  zp, tp = np.asarray(z).mean(1), np.asarray(t_pool)
  zp = zp / np.linalg.norm(zp, axis=1, keepdims=True)
  tp = tp / np.linalg.norm(tp, axis=1, keepdims=True)
  logits = zp @ tp.T / 0.1                                   # the temperature passed
  log_soft = logits - np.log(np.exp(logits).sum(1, keepdims=True))
  assert float(parts['global_infonce']) == pytest.approx(-np.mean(np.diag(log_soft)), rel=1e-5)
  assert _spec(global_infonce=2.0).weights['global_infonce'] == 2.0


def test_without_their_weights_the_global_terms_are_neither_computed_nor_weighted():
  parts, *_ = _terms(_spec())
  for name in ('global', 'global_infonce'):
    assert name not in parts and name not in _spec().weights


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
  cfg.loss.global_infonce_weight = 0.7
  spec = step_lib.LossSpec.from_config(cfg.loss)
  assert (spec.global_, spec.global_infonce, spec.sigreg_input) == (0.3, 0.7, 'pooled')
  cfg.loss.global_infonce_weight = -1.0
  with pytest.raises(ConfigError) as err:
    config_checks.validate(cfg)
  assert err.value.key == 'loss.global_infonce_weight'
  cfg.loss.global_infonce_weight = 0.7
  cfg.loss.sigreg_input = 'pool'
  with pytest.raises(ConfigError) as err:
    config_checks.validate(cfg)
  assert err.value.key == 'loss.sigreg_input'
