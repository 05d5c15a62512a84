"""Balanced (Sinkhorn) code assignment and the IBQ estimator
(jepa_jax/assignment.py), alone and in the quantizer layer."""
import os
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from jepa_jax.vq import assignment as asg
from jepa_jax.config import load as config_lib
from jepa_jax.vq import quantizer as qz
from jepa_jax.vq.assignment import nearest_codes
from conftest import load, set_overrides

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _points(seed, n, k, d=4):
  """Tokens around 0 and codes off to one side, so that nearest-code
  assignment is very uneven (the case balancing is for)."""
  u = jax.random.normal(jax.random.PRNGKey(seed), (n, d))
  e = 0.5 * jax.random.normal(jax.random.PRNGKey(100 + seed), (k, d)) + 0.7
  return u, e


def test_normalized_cost_is_standardised_euclidean_distance():
  u, e = _points(0, 10, 6)
  dist = np.sqrt(((np.asarray(u)[:, None] - np.asarray(e)[None]) ** 2).sum(-1))
  want = (dist - dist.mean()) / (dist.std() + 1e-6)
  np.testing.assert_allclose(asg.normalized_cost(u, e), want, atol=1e-4)
  # With weights the statistics are those of the valid rows only.
  w = np.array([1.0] * 7 + [0.0] * 3)
  got = np.asarray(asg.normalized_cost(u, e, w))[:7]
  np.testing.assert_allclose(got, np.asarray(asg.normalized_cost(u[:7], e)), atol=1e-4)


def test_token_marginal_exact_and_code_marginal_approaches_uniform():
  u, e = _points(1, 48, 12)
  cost = asg.normalized_cost(u, e)
  errors = []
  for iters in (1, 5, 50):
    plan = np.exp(np.asarray(asg.sinkhorn_log_plan(cost, 0.1, iters)))
    np.testing.assert_allclose(plan.sum(1), 1 / 48, rtol=1e-4)      # every iteration
    errors.append(np.abs(np.asarray(asg.code_marginal(np.log(plan))) - 1 / 12).max())
  assert errors[0] > errors[1] > errors[2]
  assert errors[2] < 1e-4 / 12
  # Far from uniform under nearest-code assignment: the balancing is doing it.
  nearest = np.bincount(np.asarray(nearest_codes(e, u)[0]), minlength=12)
  balanced = np.bincount(np.asarray(asg.sinkhorn_codes(u, e, 0.1, 50)), minlength=12)
  assert nearest.max() >= 3 * balanced.max()
  assert balanced.min() > 0 and nearest.min() == 0


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_tiny_epsilon_on_a_balanced_problem_is_the_optimal_assignment(seed):
  """N = 2K tokens, each code taking exactly 2: as epsilon -> 0 the argmax
  of the plan is the min-cost balanced assignment (Hungarian method on the
  cost with every code column repeated twice)."""
  k, m = 8, 2
  u, e = _points(seed, k * m, k)
  cost = np.asarray(asg.normalized_cost(u, e))
  rows, cols = linear_sum_assignment(np.repeat(cost, m, axis=1))
  optimal = cols[np.argsort(rows)] // m
  codes = np.asarray(asg.sinkhorn_codes(u, e, epsilon=0.003, num_iters=3000))
  np.testing.assert_array_equal(codes, optimal)
  np.testing.assert_array_equal(np.bincount(codes, minlength=k), [m] * k)


def test_a_batch_already_balanced_keeps_its_nearest_codes():
  """Three tokens close to each code: the nearest codes are already the
  balanced optimum, and OptVQ's defaults (epsilon 0.1, 5 iterations) keep them."""
  e = jax.random.normal(jax.random.PRNGKey(0), (16, 4))
  u = jnp.repeat(e, 3, axis=0) + 0.05 * jax.random.normal(jax.random.PRNGKey(1), (48, 4))
  near = np.asarray(nearest_codes(e, u)[0])
  np.testing.assert_array_equal(near, np.repeat(np.arange(16), 3))
  np.testing.assert_array_equal(asg.sinkhorn_codes(u, e), near)


def test_sinkhorn_codes_jit_static_shapes_and_determinism():
  u, e = _points(4, 2 * 3 * 5, 7)
  u = u.reshape(2, 15, 4)
  traces = []

  def f(u, e):
    traces.append(1)
    return asg.sinkhorn_codes(u, e, 0.1, 5)

  jf = jax.jit(f)
  a = jf(u, e)
  b = jf(u + 0.01, e)          # same shapes: no retrace
  assert len(traces) == 1
  chex.assert_shape(a, (2, 15))
  assert a.dtype == jnp.int32
  np.testing.assert_array_equal(a, jf(u, e))                       # deterministic
  np.testing.assert_array_equal(a, asg.sinkhorn_codes(u, e, 0.1, 5))  # jit == eager
  assert b.shape == a.shape
  # Duplicate codes tie: the lower index wins, every time.
  dup = jnp.concatenate([e[:1], e[:1], e[1:]])
  c = np.asarray(asg.sinkhorn_codes(u, dup, 0.1, 5))
  assert 1 not in c and 0 in c


def test_padded_tokens_carry_no_mass():
  """Tokens with weight 0 change neither the valid tokens' codes nor the
  plan: the result equals running on the valid tokens alone."""
  u, e = _points(5, 24, 6)
  w = np.array([1.0] * 18 + [0.0] * 6, np.float32)
  junk = u.at[18:].set(50.0)                      # far-away padding
  np.testing.assert_array_equal(asg.sinkhorn_codes(junk, e, 0.1, 5, w)[:18],
                                asg.sinkhorn_codes(u[:18], e, 0.1, 5))
  plan = np.exp(np.asarray(asg.sinkhorn_log_plan(asg.normalized_cost(junk, e, w),
                                                 0.1, 20, w)))
  assert np.all(np.isfinite(plan)) and plan[18:].max() == 0.0
  np.testing.assert_allclose(plan.sum(), 1.0, rtol=1e-5)


def _ibq_and_st_grads(temperature=2.0):
  """Codebook gradients of sum(r * q~) + ||sg(u) - q||^2 (the decoder's and
  the codebook loss's) under IBQ and under the straight-through layer."""
  u, e = _points(6, 10, 16)
  r = jax.random.normal(jax.random.PRNGKey(7), (10, 4))
  codes = nearest_codes(e, u)[0]

  def ibq_loss(e):
    q = asg.ibq_estimator(u, e, codes, temperature)
    return jnp.sum(r * q) + jnp.sum(jnp.square(jax.lax.stop_gradient(u) - q))

  def st_loss(e):
    q = jnp.take(e, codes, axis=0)
    q_st = u + jax.lax.stop_gradient(q - u)
    return jnp.sum(r * q_st) + jnp.sum(jnp.square(jax.lax.stop_gradient(u) - q))

  return u, e, codes, jax.grad(ibq_loss)(e), jax.grad(st_loss)(e)


def test_ibq_value_is_the_chosen_code_and_every_code_gets_a_gradient():
  u, e, codes, g_ibq, g_st = _ibq_and_st_grads()
  np.testing.assert_array_equal(asg.ibq_estimator(u, e, codes, 2.0),
                                jnp.take(e, codes, axis=0))     # exact value
  unused = np.setdiff1d(np.arange(16), np.asarray(codes))
  assert len(unused) >= 8
  row_norms = np.linalg.norm(np.asarray(g_st), axis=1)
  assert np.all(row_norms[unused] == 0)          # nearest-code VQ: nothing
  assert np.all(np.linalg.norm(np.asarray(g_ibq), axis=1) > 0)   # IBQ: every code
  # The tokens get a gradient through the logits only (no identity copy).
  g_u = jax.grad(lambda u: jnp.sum(asg.ibq_estimator(u, e, codes, 2.0)))(u)
  assert np.all(np.isfinite(g_u)) and np.abs(np.asarray(g_u)).max() > 0


def test_ibq_gradient_is_the_softmax_jacobian():
  """d(sum_j r_j . q~)/dE_k by hand: r_k-part of the chosen code plus
  sum_i p_ik (r_i . (E_k - q_bar_i)) (2 / T) (u_i - E_k), q_bar_i = p_i E."""
  t = 3.0
  u, e = _points(8, 5, 6)
  r = jax.random.normal(jax.random.PRNGKey(9), (5, 4))
  codes = nearest_codes(e, u)[0]
  g = jax.grad(lambda e: jnp.sum(r * asg.ibq_estimator(u, e, codes, t)))(e)
  un, en, rn = (np.asarray(x, np.float64) for x in (u, e, r))
  logits = -((un[:, None] - en[None]) ** 2).sum(-1) / t
  p = np.exp(logits - logits.max(1, keepdims=True))
  p /= p.sum(1, keepdims=True)
  want = np.zeros_like(en)
  for i in range(5):
    want[int(codes[i])] += rn[i]
    qbar = p[i] @ en
    for k in range(6):
      want[k] += p[i, k] * (rn[i] @ (en[k] - qbar)) * (2 / t) * (un[i] - en[k])
  np.testing.assert_allclose(g, want, atol=1e-4)


def _tiny(**overrides):
  cfg = set_overrides(load('gentle', 'tiny'), {'train.warmup_epochs': 0, **overrides})
  config_lib.validate(cfg)
  return cfg


def test_the_layer_uses_balanced_codes_in_training_and_nearest_when_asked():
  spec = qz.make_spec(_tiny(**{'vq.assignment': 'sinkhorn', 'vq.sinkhorn_iters': 7}))
  assert (spec.assignment, spec.sinkhorn_epsilon, spec.sinkhorn_iters) == ('sinkhorn', 0.1, 7)
  state = qz.init_state(spec, jax.random.PRNGKey(1))
  z = jax.random.normal(jax.random.PRNGKey(2), (4, 6, spec.embed_dim))
  w = jnp.ones((4, 6)).at[3].set(0.0)
  out, codes, aux = qz.quantize(spec, state.codebook, {}, z, weights=w)
  np.testing.assert_array_equal(codes, asg.sinkhorn_codes(z, state.codebook, 0.1, 7, w))
  np.testing.assert_array_equal(out, jnp.take(state.codebook, codes, axis=0))
  near = qz.quantize(spec, state.codebook, {}, z, weights=w, nearest=True)[1]
  np.testing.assert_array_equal(near, qz.assign(spec, state, {}, z))
  assert not np.array_equal(near, codes)


def test_the_layer_with_ibq_trains_every_code_through_its_losses():
  """Gradient mode + 'ibq': the same forward as straight-through; the
  decoder-side gradient and the codebook loss reach every code."""
  over = {'vq.ema_decay': None, 'vq.codebook_size': 32}
  specs = {est: qz.make_spec(_tiny(**over, **{'vq.estimator': est}))
           for est in ('straight_through', 'ibq')}
  assert specs['ibq'].ibq and specs['ibq'].ibq_temperature == 2.0
  state = qz.init_state(specs['ibq'], jax.random.PRNGKey(1))
  z = jax.random.normal(jax.random.PRNGKey(2), (2, 4, specs['ibq'].embed_dim))
  r = jax.random.normal(jax.random.PRNGKey(3), z.shape)
  grads, outs = {}, {}
  for est, spec in specs.items():
    def loss(cb, spec=spec):
      out, _, aux = qz.quantize(spec, cb, {}, z)
      parts = qz.losses(spec, aux['u'], aux['quantized'], aux['codebook'])
      return jnp.sum(r * out) + parts['codebook'] + parts['commitment']
    outs[est] = qz.quantize(spec, state.codebook, {}, z)
    grads[est] = np.linalg.norm(np.asarray(jax.grad(loss)(state.codebook)), axis=1)
  np.testing.assert_array_equal(outs['ibq'][0], outs['straight_through'][0])
  np.testing.assert_array_equal(outs['ibq'][1], outs['straight_through'][1])
  used = np.unique(np.asarray(outs['ibq'][1]))
  assert (grads['straight_through'] > 0).sum() == len(used) < 32
  assert (grads['ibq'] > 0).all()


@pytest.mark.parametrize('overrides, key', [
    ({'vq.assignment': 'balanced'}, 'vq.assignment'),
    ({'vq.assignment': 'sinkhorn', 'vq.sinkhorn_epsilon': 0.0}, 'vq.sinkhorn_epsilon'),
    ({'vq.assignment': 'sinkhorn', 'vq.sinkhorn_iters': 0}, 'vq.sinkhorn_iters'),
    ({'vq.estimator': 'ibq'}, 'vq.estimator'),                 # EMA codebook
    ({'vq.estimator': 'ibq', 'vq.ema_decay': None, 'vq.ibq_temperature': -1.0},
     'vq.ibq_temperature'),
    ({'vq.quantizer': 'fsq', 'vq.fsq_levels': (8, 8, 4, 3), 'vq.refresh_enabled': False,
      'vq.commitment_cost': 0.0, 'vq.assignment': 'sinkhorn'}, 'vq.assignment'),
])
def test_bad_remedy_keys_are_refused_naming_the_key(overrides, key):
  cfg = set_overrides(load('gentle', 'tiny'), overrides)
  with pytest.raises(config_lib.ConfigError) as err:
    config_lib.validate(cfg)
  assert err.value.key == key


def test_ibq_on_an_ema_codebook_is_one_line_before_anything_is_written(tmp_path):
  """The docs/errors.md row: status 2, one line, an empty workdir."""
  work = tmp_path / 'run'
  out = subprocess.run(
      [sys.executable, '-m', 'jepa_jax.main', '--config=configs/gentle.py:tiny',
       f'--workdir={work}', '--config.vq.estimator=ibq'],
      capture_output=True, text=True, cwd=ROOT, timeout=300,
      env={**os.environ, 'PYTHONPATH': ROOT})
  assert out.returncode == 2, out.stderr
  lines = [l for l in out.stderr.splitlines() if l.strip()]
  assert lines == ["config error: config.vq.estimator='ibq': 'ibq' trains every code "
                   'by gradient; an EMA codebook takes none: set vq.ema_decay=None']
  assert not work.exists() or not os.listdir(work)


def test_jepa_train_step_with_balanced_codes_and_ibq():
  """Both remedies in the JEPA step (one compile each; gradient codebook, no
  weight decay on it, no refresh): with nearest codes and straight-through
  only the rows of codes the batch used move in one step; IBQ moves every
  row; so do balanced codes (16 images x 8 context tokens = 128 tokens
  spread over all 32 codes)."""
  from test_quantizer import _run  # noqa: PLC0415  (the tiny step runner)
  moved = {}
  for assignment, est in (('nearest', 'straight_through'), ('nearest', 'ibq'),
                          ('sinkhorn', 'straight_through')):
    cfg = _tiny(**{'vq.assignment': assignment, 'vq.estimator': est,
                   'vq.ema_decay': None, 'vq.refresh_enabled': False})
    setup, s0, states, metrics, _, _ = _run(cfg, num_steps=1)
    assert setup.quantizer.assignment == assignment
    assert all(np.isfinite(m['loss']) for m in metrics)
    delta = np.abs(states[0]['vq'].codebook - s0['vq'].codebook).max(axis=1)
    moved[assignment, est] = int((delta > 0).sum())
  k = cfg.vq.codebook_size
  assert 0 < moved['nearest', 'straight_through'] < k
  assert moved['nearest', 'ibq'] == k
  assert moved['sinkhorn', 'straight_through'] == k
