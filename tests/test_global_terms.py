"""The global terms: loss.global_weight (LeJEPA-style), loss.global_infonce_weight
(instance discrimination), loss.global_dino_weight (DINO) and loss.sigreg_input."""
import dataclasses
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jepa_jax.objective import losses
from jepa_jax.objective import prototypes
from jepa_jax.objective import terms as objective
from jepa_jax.train import step as step_lib


def _spec(**kw):
  base = dict(infonce=1.0, sigreg=0.02, invariance=0.1, relational=0.05,
              relational_context=0.025, sigreg_num_slices=16, sigreg_num_points=17,
              temperature_init=0.1, temperature_min=0.07, temperature_max=0.15)
  return objective.LossSpec(**{**base, **kw})


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
  spec = objective.LossSpec.from_config(cfg.loss)
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


def _sinkhorn_by_hand(teacher, eps, iters):
  """SwAV's probability-domain Sinkhorn-Knopp (prototypes, then samples),
  rows of the result summing to 1: an independent derivation."""
  q = np.exp((teacher - teacher.max()) / eps).T              # (K, B)
  k, b = q.shape
  q /= q.sum()
  for _ in range(iters):
    q /= q.sum(1, keepdims=True) * k
    q /= q.sum(0, keepdims=True) * b
  return (q * b).T


def test_dino_loss_is_cross_entropy_against_the_sinkhorn_centred_teacher():
  rng = np.random.default_rng(1)
  s, t = rng.normal(size=(2, 6, 5)).astype(np.float32)
  q = _sinkhorn_by_hand(t.astype(np.float64), 0.5, 3)
  log_s = s / 0.1 - np.log(np.exp(s / 0.1).sum(1, keepdims=True))
  want = -np.mean((q * log_s).sum(1))
  got = prototypes.dino_loss(jnp.asarray(s), jnp.asarray(t), 0.1, 0.5)
  assert float(got) == pytest.approx(want, rel=1e-5)


def test_dino_teacher_is_balanced_over_the_batch_and_gets_no_gradient():
  rng = np.random.default_rng(2)
  s, t = (jnp.asarray(x) for x in rng.normal(size=(2, 8, 4)).astype(np.float32))
  t = t.at[:, 0].add(3.0)                   # one prototype dominates every image
  g_s, g_t = jax.grad(lambda a, b: prototypes.dino_loss(a, b, 0.1, 0.5, num_iters=50),
                      argnums=(0, 1))(s, t)
  assert float(jnp.abs(g_t).max()) == 0.0 and float(jnp.abs(g_s).max()) > 0.0
  # The student's best answer is the teacher's target: its mass per prototype is 1/K.
  q = _sinkhorn_by_hand(np.asarray(t, np.float64), 0.5, 50)
  np.testing.assert_allclose(q.mean(0), np.full(4, 0.25), atol=1e-4)
  np.testing.assert_allclose(q.sum(1), 1.0, atol=1e-6)


def test_dino_loss_with_zero_weights_is_the_loss_of_the_valid_rows():
  rng = np.random.default_rng(3)
  s, t = rng.normal(size=(2, 7, 5)).astype(np.float32)
  w = np.array([1, 1, 0, 1, 1, 0, 1], np.float32)
  got = prototypes.dino_loss(s, t, 0.1, 0.04, weights=w)
  want = prototypes.dino_loss(s[w > 0], t[w > 0], 0.1, 0.04)
  assert float(got) == pytest.approx(float(want), rel=1e-5)


def test_dino_config_trains_a_head_whose_teacher_is_the_targets_ema():
  """configs/dino.py at :tiny: the head lives in the encoder's tree (so the
  target encoder's EMA is the teacher's head), one step gives a finite
  'global_dino' term, the student head moves and the teacher follows by
  1 - 0.996 of the gap; the probe's encoder (no head) reads the same tree."""
  from jepa_jax import data as data_lib
  from jepa_jax.model import vit
  from conftest import load
  cfg = load('dino', 'tiny')
  cfg.train.warmup_epochs = 0                      # a step-0 learning rate above 0
  ds = data_lib.load_dataset(cfg)
  setup = step_lib.make_setup(cfg, ds)
  state = step_lib.init_state(setup, ds.image_shape, cfg.seed)
  head = state['params']['encoder']['params']['head']
  assert head['prototypes'].shape == (cfg.model.embed_dim, 256)
  images = jnp.asarray(ds.train_images[:16])
  new, metrics = jax.jit(step_lib.make_train_step(setup))(
      state, images, jnp.arange(16, dtype=jnp.int32))
  assert np.isfinite(float(metrics['global_dino'])) and float(metrics['global_dino']) > 0
  old_c = np.asarray(head['prototypes'])
  new_c = np.asarray(new['params']['encoder']['params']['head']['prototypes'])
  tgt_c = np.asarray(new['target_params']['params']['head']['prototypes'])
  assert np.abs(new_c - old_c).max() > 0
  np.testing.assert_allclose(tgt_c - old_c, (1 - 0.996) * (new_c - old_c), atol=1e-7)
  plain = vit.make_encoder(cfg.model)                  # what evaluate builds
  toks = plain.apply(new['target_params'], images)
  assert toks.shape == (16, ds.image_shape[0] // cfg.model.patch_size
                        * (ds.image_shape[1] // cfg.model.patch_size), cfg.model.embed_dim)


def test_dino_keys_are_validated():
  from jepa_jax.config import checks as config_checks
  from jepa_jax.errors import ConfigError
  from conftest import load
  for key, bad in (('loss.dino_teacher_temperature', 0.0), ('loss.dino_prototypes', 0),
                   ('loss.global_dino_weight', -1.0)):
    cfg = load('dino', 'tiny')
    cfg[key.split('.')[0]][key.split('.')[1]] = bad
    with pytest.raises(ConfigError) as err:
      config_checks.validate(cfg)
    assert err.value.key == key
