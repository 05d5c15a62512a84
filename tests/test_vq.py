"""Tests for jepa_jax.vq.codebook against hand-worked numbers."""
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jepa_jax.vq import codebook as vq


def _state(codebook, cluster_size=None, embed_sum=None, usage=None, step=0):
  """A VQState built by hand (defaults: N = 1, m = codebook, usage = 0)."""
  codebook = jnp.asarray(codebook, jnp.float32)
  k = codebook.shape[0]
  return vq.VQState(
      codebook=codebook,
      cluster_size=jnp.ones((k,)) if cluster_size is None
      else jnp.asarray(cluster_size, jnp.float32),
      embed_sum=codebook if embed_sum is None else jnp.asarray(embed_sum, jnp.float32),
      usage=jnp.zeros((k,)) if usage is None else jnp.asarray(usage, jnp.float32),
      step=jnp.asarray(step, jnp.int32))


def _np_tree(tree):
  return jax.tree_util.tree_map(np.asarray, tree)


def _assert_trees_identical(a, b):
  jax.tree_util.tree_map(np.testing.assert_array_equal, _np_tree(a), _np_tree(b))


# ---------------------------------------------------------------------------
# init_state
# ---------------------------------------------------------------------------


def test_init_state_shapes_and_no_debias_start():
  s = vq.init_state(jax.random.PRNGKey(0), 64, 16, scale=2.0)
  chex.assert_shape(s.codebook, (64, 16))
  chex.assert_type([s.codebook, s.cluster_size, s.embed_sum, s.usage], jnp.float32)
  chex.assert_type(s.step, jnp.int32)
  np.testing.assert_array_equal(s.cluster_size, np.ones(64))
  np.testing.assert_array_equal(s.embed_sum, s.codebook)    # m / N == e
  np.testing.assert_array_equal(s.usage, np.zeros(64))
  assert int(s.step) == 0
  assert abs(float(jnp.std(s.codebook)) - 2.0) < 0.2          # 1024 N(0, 4) draws


# ---------------------------------------------------------------------------
# nearest_codes
# ---------------------------------------------------------------------------

_CB = np.array([[0., 0.], [2., 0.], [0., 3.]], np.float32)


def test_nearest_codes_hand_example():
  # Squared distances to (e0, e1, e2), worked by hand; no ties:
  #   [ .5,  .2] -> (.25+.04, 2.25+.04, .25+7.84) = (.29, 2.29, 8.09)  -> 0
  #   [1.8, -.4] -> (3.24+.16, .04+.16, 3.24+11.56) = (3.4, .2, 14.8) -> 1
  #   [ .1, 2. ] -> (.01+4, 3.61+4, .01+1) = (4.01, 7.61, 1.01)       -> 2
  #   [3.,  3. ] -> (18, 1+9, 9+0) = (18, 10, 9)                      -> 2
  z = np.array([[[.5, .2], [1.8, -.4]], [[.1, 2.], [3., 3.]]], np.float32)
  codes, sq = vq.nearest_codes(jnp.asarray(_CB), jnp.asarray(z))
  chex.assert_shape([codes, sq], (2, 2))
  chex.assert_type(codes, jnp.int32)
  np.testing.assert_array_equal(codes, [[0, 1], [2, 2]])
  np.testing.assert_allclose(sq, [[.29, .2], [1.01, 9.]], rtol=1e-5, atol=1e-6)


def test_nearest_codes_exact_hit_has_zero_distance():
  z = jnp.asarray(_CB[::-1].copy())
  codes, sq = vq.nearest_codes(jnp.asarray(_CB), z)
  np.testing.assert_array_equal(codes, [2, 1, 0])
  assert np.all(np.asarray(sq) >= 0.0)
  np.testing.assert_allclose(sq, 0.0, atol=1e-6)


# ---------------------------------------------------------------------------
# ema_update
# ---------------------------------------------------------------------------

# Codebook e = [[1, 0], [0, 1]], N = [1, 1], m = e. Batch and its codes:
_E0 = np.array([[1., 0.], [0., 1.]], np.float32)
_Z = np.array([[3., 1.], [1., 0.], [0., 4.]], np.float32)
_CODES = np.array([0, 0, 1], np.int32)
# n = [2, 1]; s_0 = [3,1] + [1,0] = [4, 1]; s_1 = [0, 4].


def _expected_ema(eps):
  decay = 0.5
  n0, n1 = 2., 1.
  s0, s1 = np.array([4., 1.]), np.array([0., 4.])
  N0 = decay * 1. + (1 - decay) * n0                   # 1.5
  N1 = decay * 1. + (1 - decay) * n1                   # 1.0
  m0 = decay * _E0[0] + (1 - decay) * s0               # [2.5, 0.5]
  m1 = decay * _E0[1] + (1 - decay) * s1               # [0.0, 2.5]
  total = N0 + N1                                      # 2.5
  Ns0 = (N0 + eps) / (total + 2 * eps) * total
  Ns1 = (N1 + eps) / (total + 2 * eps) * total
  return _state(np.stack([m0 / Ns0, m1 / Ns1]), [N0, N1], np.stack([m0, m1]),
                usage=[n0, n1], step=1)


def test_ema_update_hand_worked_eps_half():
  # eps = .5 makes the smoothing visible: N' = (2/3.5*2.5, 1.5/3.5*2.5) = (10/7, 15/14)
  # so e_0 = [2.5, .5] * 7/10 = [1.75, .35] and e_1 = [0, 2.5 * 14/15] = [0, 7/3].
  got = vq.ema_update(_state(_E0), jnp.asarray(_Z), jnp.asarray(_CODES), 0.5, eps=0.5)
  want = _expected_ema(0.5)
  np.testing.assert_allclose(want.codebook, [[1.75, .35], [0., 7. / 3.]], rtol=1e-6)
  chex.assert_trees_all_close(got, want, rtol=1e-6, atol=1e-6)


def test_ema_update_hand_worked_eps_small():
  got = vq.ema_update(_state(_E0), jnp.asarray(_Z), jnp.asarray(_CODES), 0.5, eps=1e-5)
  want = _expected_ema(1e-5)
  # With eps -> 0, N' -> N: e_0 ~ [2.5, .5] / 1.5, e_1 ~ [0, 2.5] / 1.
  np.testing.assert_allclose(want.codebook, [[2.5 / 1.5, .5 / 1.5], [0., 2.5]], rtol=1e-4)
  chex.assert_trees_all_close(got, want, rtol=1e-6, atol=1e-6)


def test_laplace_smoothing_gives_finite_code_for_empty_cluster():
  # Code 0 has cluster size exactly 0 and is not chosen: without smoothing
  # e_0 = m_0 / 0 would be inf.
  cb = np.array([[1., 1.], [2., 0.], [0., 2.]], np.float32)
  s = _state(cb, cluster_size=[0., 2., 3.], embed_sum=[[1e-3, 1e-3], [4., 0.], [0., 6.]])
  z = jnp.asarray([[2., 0.], [0., 2.]])
  new = vq.ema_update(s, z, jnp.asarray([1, 2]), 0.9, eps=1e-5)
  assert np.all(np.isfinite(new.codebook))
  # N_0 = .9*0 + .1*0 = 0; N' = (N + eps)/(sum N + 3 eps) * sum N
  N = np.array([0., .9 * 2 + .1, .9 * 3 + .1])
  np.testing.assert_allclose(new.cluster_size, N, rtol=1e-6)
  smoothed = vq._laplace_smoothed_sizes(new.cluster_size, 1e-5)
  np.testing.assert_allclose(float(jnp.sum(smoothed)), N.sum(), rtol=1e-6)
  expect_ns0 = 1e-5 / (N.sum() + 3e-5) * N.sum()
  np.testing.assert_allclose(float(smoothed[0]), expect_ns0, rtol=1e-4)
  # e_0 = .9 * m_0 / N'_0, pointing the same way as before.
  np.testing.assert_allclose(new.codebook[0], .9 * 1e-3 / expect_ns0 * np.ones(2), rtol=1e-4)


def test_unused_codes_keep_direction_and_place_then_shrink_once_below_eps():
  key = jax.random.PRNGKey(1)
  s0 = vq.init_state(key, 3, 4)
  z = jax.random.normal(jax.random.PRNGKey(2), (6, 4))
  codes = jnp.asarray([0, 1, 0, 1, 0, 1])          # code 2 is never chosen

  e2 = np.asarray(s0.codebook[2])

  def cosine(a, b):
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))

  # First update: the zero-debias pitfall would make e_2 a zero vector here.
  s1 = vq.ema_update(s0, z, codes, 0.9)
  assert np.linalg.norm(s1.codebook[2]) > 0.5 * np.linalg.norm(e2)
  assert cosine(np.asarray(s1.codebook[2]), e2) > 1 - 1e-6

  step = jax.jit(lambda s: vq.ema_update(s, z, codes, 0.9))
  s = s1
  for _ in range(59):
    s = step(s)
  assert int(s.step) == 60
  np.testing.assert_allclose(s.usage, [180., 180., 0.])
  e2_new = np.asarray(s.codebook[2])
  assert np.all(np.isfinite(np.asarray(s.codebook)))
  assert np.linalg.norm(e2_new) > 0
  assert cosine(e2_new, e2) > 1 - 1e-6
  # N_2 and m_2 both decayed by .9^60; e_2 = m_2 / N'_2 is their smoothed ratio.
  np.testing.assert_allclose(s.cluster_size[2], .9 ** 60, rtol=1e-4)
  np.testing.assert_allclose(s.embed_sum[2], .9 ** 60 * e2, rtol=1e-4, atol=1e-9)
  # While N_2 = .9^60 >> eps it keeps its place; once N_2 << eps (.9^160 ~ 5e-8
  # against 1e-5), N'_2 ~ eps and e_2 shrinks by the decay a step.
  assert np.linalg.norm(e2_new) == pytest.approx(np.linalg.norm(e2), rel=0.01)
  for _ in range(100):
    s = step(s)
  before = np.linalg.norm(np.asarray(s.codebook[2]))
  after = np.linalg.norm(np.asarray(step(s).codebook[2]))
  assert before < 0.01 * np.linalg.norm(e2) and after / before == pytest.approx(0.9, rel=1e-2)


def test_ema_update_psum_over_shards_matches_whole_batch():
  s = vq.init_state(jax.random.PRNGKey(3), 5, 3)
  z = jax.random.normal(jax.random.PRNGKey(4), (8, 3))
  codes, _ = vq.nearest_codes(s.codebook, z)
  whole = vq.ema_update(s, z, codes, 0.8)
  sharded = jax.vmap(lambda zz, cc: vq.ema_update(s, zz, cc, 0.8, axis_name='d'),
                     axis_name='d')(z.reshape(2, 4, 3), codes.reshape(2, 4))
  for r in range(2):
    replica = jax.tree_util.tree_map(lambda x: x[r], sharded)
    chex.assert_trees_all_close(replica, whole, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------
# quantize / straight-through / gradient mode
# ---------------------------------------------------------------------------


def test_quantize_forward_value_state_and_straight_through():
  s = _state(_CB, cluster_size=[1., 2., 3.], usage=[4., 5., 6.], step=7)
  before = _np_tree(s)
  z = jnp.asarray([[.5, .2], [1.8, -.4], [3., 3.]])
  z_st, codes, aux = vq.quantize(s, z)
  _assert_trees_identical(s, before)
  np.testing.assert_array_equal(codes, [0, 1, 2])
  np.testing.assert_array_equal(z_st, _CB[[0, 1, 2]])           # exactly e_k
  np.testing.assert_array_equal(aux['quantized'], _CB[[0, 1, 2]])
  np.testing.assert_allclose(aux['sq_distance'], [.29, .2, 9.], rtol=1e-5)

  w = jnp.asarray([[1., -2.], [3., .5], [-1., 4.]])
  g = jax.grad(lambda zz: jnp.sum(w * vq.quantize(s, zz)[0]))(z)
  np.testing.assert_array_equal(g, w)
  # z_st passes no gradient to the codebook.
  g_cb = jax.grad(lambda cb: jnp.sum(w * vq.quantize(s.replace(codebook=cb), z)[0]))(
      s.codebook)
  np.testing.assert_array_equal(g_cb, np.zeros_like(_CB))

  jac = jax.jacobian(lambda zz: vq.quantize(s, zz)[0])(z[:2])
  chex.assert_shape(jac, (2, 2, 2, 2))
  np.testing.assert_array_equal(jac.reshape(4, 4), np.eye(4))


def test_quantized_gradient_reaches_only_chosen_codebook_rows():
  s = _state(_CB)
  z = jnp.asarray([[.5, .2], [.1, -.3], [3., 3.]])             # codes 0, 0, 2
  w = jnp.asarray([[1., 2.], [3., 4.], [5., 6.]])

  def f(codebook):
    _, _, aux = vq.quantize(s.replace(codebook=codebook), z)
    return jnp.sum(w * aux['quantized'])

  g = jax.grad(f)(s.codebook)
  np.testing.assert_array_equal(g, [[1. + 3., 2. + 4.], [0., 0.], [5., 6.]])

  # Gradient-mode codebook loss ||sg(z) - z_q||^2: d/de_k = 2 sum_{i->k} (e_k - z_i).
  def codebook_loss(codebook):
    _, _, aux = vq.quantize(s.replace(codebook=codebook), z)
    return jnp.sum(jnp.square(jax.lax.stop_gradient(z) - aux['quantized']))

  g = jax.grad(codebook_loss)(s.codebook)
  want = np.array([2 * ((0 - .5) + (0 - .1)), 2 * ((0 - .2) + (0 + .3))])
  np.testing.assert_allclose(g[0], want, rtol=1e-6, atol=1e-7)
  np.testing.assert_array_equal(g[1], [0., 0.])
  np.testing.assert_allclose(g[2], [2 * (0 - 3.), 2 * (3 - 3.)], atol=1e-7)


def test_count_usage_only_counts():
  s = _state(_CB, cluster_size=[1., 2., 3.], usage=[1., 0., 0.], step=4)
  new = vq.count_usage(s, jnp.asarray([[2, 2], [0, 2]]))
  for name in ('codebook', 'cluster_size', 'embed_sum'):
    np.testing.assert_array_equal(getattr(new, name), getattr(s, name))
  np.testing.assert_array_equal(new.usage, [1. + 1., 0., 0. + 3.])
  assert int(new.step) == 5


# ---------------------------------------------------------------------------
# dead codes and refresh
# ---------------------------------------------------------------------------


def test_dead_codes_rule():
  # mean usage = 24/6 = 4; threshold .5 -> dead iff usage < 2.
  s = _state(np.zeros((6, 2)), usage=[10., 0., 5., 1., 6., 2.])
  np.testing.assert_array_equal(vq.dead_codes(s, .5),
                                [False, True, False, True, False, False])
  np.testing.assert_array_equal(vq.dead_codes(s, 0.), [False] * 6)
  empty = _state(np.zeros((6, 2)))
  np.testing.assert_array_equal(vq.dead_codes(empty, 1.), [False] * 6)


def test_refresh_replaces_exactly_dead_codes():
  k, d = 6, 3
  cb = np.arange(k * d, dtype=np.float32).reshape(k, d) + 100.
  s = _state(cb, cluster_size=[3., .01, 4., .5, 6., 7.],
             embed_sum=cb * 2., usage=[10., 0., 5., 1., 6., 2.], step=9)
  dead = np.array([False, True, False, True, False, False])
  z = jax.random.normal(jax.random.PRNGKey(5), (2, 4, d))       # 8 distinct rows
  rows = np.asarray(z).reshape(-1, d)
  rng = jax.random.PRNGKey(6)

  new = vq.refresh(s, z, rng, .5)
  np.testing.assert_array_equal(new.codebook[~dead], cb[~dead])
  np.testing.assert_array_equal(new.cluster_size[~dead], np.asarray(s.cluster_size)[~dead])
  np.testing.assert_array_equal(new.embed_sum[~dead], cb[~dead] * 2.)
  for kk in np.flatnonzero(dead):
    hits = np.all(rows == np.asarray(new.codebook[kk]), axis=1)
    assert hits.any(), f'code {kk} is not a row of z'
  np.testing.assert_array_equal(new.cluster_size[dead], [1., 1.])
  np.testing.assert_array_equal(new.embed_sum[dead], new.codebook[dead])
  np.testing.assert_array_equal(new.usage, np.zeros(k))
  assert int(new.step) == 9

  # Same result under jit and as a lax.cond branch (both predicate values).
  @jax.jit
  def cond_refresh(state, pred):
    return jax.lax.cond(pred, lambda st: vq.refresh(st, z, rng, .5), lambda st: st, state)

  _assert_trees_identical(cond_refresh(s, True), new)
  _assert_trees_identical(cond_refresh(s, False), s)
  _assert_trees_identical(jax.jit(vq.refresh)(s, z, rng, .5), new)

  # Nothing is dead before any assignment is counted: only usage resets (already 0).
  fresh = _state(cb)
  _assert_trees_identical(vq.refresh(fresh, z, rng, .5), fresh)


# ---------------------------------------------------------------------------
# usage_stats
# ---------------------------------------------------------------------------


def test_usage_stats_hand_examples():
  uniform = vq.usage_stats(jnp.asarray([[0, 1, 2, 3], [3, 2, 1, 0]]), 8)
  np.testing.assert_allclose(uniform['vq_codes_used'], 4.)
  np.testing.assert_allclose(uniform['vq_usage_ratio'], .5)
  np.testing.assert_allclose(uniform['vq_perplexity'], 4., rtol=1e-6)

  single = vq.usage_stats(jnp.asarray([5, 5, 5]), 8)
  np.testing.assert_allclose(single['vq_codes_used'], 1.)
  np.testing.assert_allclose(single['vq_usage_ratio'], 1. / 8.)
  np.testing.assert_allclose(single['vq_perplexity'], 1., rtol=1e-6)

  # counts (2, 1, 1, 0): p = (.5, .25, .25), H = .5 ln 2 + .5 ln 4 = 1.5 ln 2.
  skew = jax.jit(vq.usage_stats, static_argnums=1)(jnp.asarray([0, 0, 1, 2]), 4)
  chex.assert_type(skew['vq_codes_used'], jnp.float32)
  np.testing.assert_allclose(skew['vq_codes_used'], 3.)
  np.testing.assert_allclose(skew['vq_usage_ratio'], .75)
  np.testing.assert_allclose(skew['vq_perplexity'], math.exp(1.5 * math.log(2.)), rtol=1e-6)


# --------------------------------------------------------------------------
# Memory-bounded (tiled) nearest-code search
# --------------------------------------------------------------------------


TILINGS = [
    (300, 77, 8, 64),        # codes and tokens tiled, ragged last tiles
    (50, 1000, 4, 400),      # many code tiles, token chunks of 20
    (129, 16, 8, 100),       # fewer codes than a tile: token chunks only
    (10, 10, 3, 1),          # one element at a time
]


def _both_paths(codebook, z, max_elements):
  full = jax.jit(vq.nearest_codes)(codebook, z)
  tiled = jax.jit(lambda c, x: vq.nearest_codes(c, x, max_elements=max_elements))(
      codebook, z)
  return [tuple(np.asarray(a) for a in r) for r in (full, tiled)]


@pytest.mark.parametrize('n,k,d,max_elements', TILINGS)
def test_tiled_search_equals_untiled_on_random_inputs(n, k, d, max_elements):
  kz, kc = jax.random.split(jax.random.PRNGKey(n + k))
  codebook = jax.random.normal(kc, (k, d))
  z = jax.random.normal(kz, (n, d))
  (full_codes, full_sq), (codes, sq) = _both_paths(codebook, z, max_elements)
  np.testing.assert_array_equal(codes, full_codes)
  np.testing.assert_array_equal(sq, full_sq)


@pytest.mark.parametrize('n,k,d,max_elements', TILINGS)
def test_tiled_search_equals_untiled_with_exact_ties(n, k, d, max_elements):
  # Small-integer coordinates make every distance exact in float32, so ties
  # are real ties whatever the summation order: duplicated codes and tokens
  # sitting exactly on them (or equidistant from two codes) must resolve to
  # the lowest code index in both paths.
  rng = np.random.default_rng(n + k)
  codebook = rng.integers(-3, 4, size=(k, d)).astype(np.float32)
  codebook[k // 2] = codebook[k - 1] = codebook[1]
  z = rng.integers(-3, 4, size=(n, d)).astype(np.float32)
  z[:5] = codebook[1]
  (full_codes, full_sq), (codes, sq) = _both_paths(codebook, z, max_elements)
  np.testing.assert_array_equal(codes, full_codes)
  np.testing.assert_array_equal(sq, full_sq)
  assert np.all(codes[:5] == 1) and np.all(sq[:5] == 0)
  # Every chosen code is the lowest index among the exact minima.
  dist = ((z[:, None, :] - codebook[None]) ** 2).sum(-1)
  np.testing.assert_array_equal(codes, dist.argmin(-1))


def test_tiled_search_keeps_leading_shape_and_quantize_passes_bound():
  state = vq.init_state(jax.random.PRNGKey(0), 40, 6)
  z = jax.random.normal(jax.random.PRNGKey(1), (3, 7, 6))
  codes, sq = vq.nearest_codes(state.codebook, z, max_elements=25)
  assert codes.shape == (3, 7) and sq.shape == (3, 7)
  z_st, codes_q, _ = vq.quantize(state, z, max_elements=25)
  np.testing.assert_array_equal(np.asarray(codes_q), np.asarray(codes))
  np.testing.assert_array_equal(np.asarray(z_st), np.asarray(state.codebook[codes]))

class KmeansInitTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_finds_well_separated_clusters(self):
    rng = np.random.default_rng(0)
    centres = np.array([[5., 0.], [-5., 0.], [0., 5.], [0., -5.]], np.float32)
    z = (centres[rng.integers(0, 4, 400)] + 0.1 * rng.standard_normal((400, 2))
         ).astype(np.float32)
    fit = self.variant(vq.kmeans_init, static_argnums=(2, 3))
    book = np.asarray(fit(jax.random.PRNGKey(1), z, 4, 5))
    chex.assert_shape(book, (4, 2))
    # One code per cluster, each at its cluster's mean.
    nearest = np.argmin(((book[:, None] - centres[None]) ** 2).sum(-1), axis=1)
    assert sorted(nearest.tolist()) == [0, 1, 2, 3]
    np.testing.assert_allclose(book, centres[nearest], atol=0.05)
    np.testing.assert_array_equal(book, np.asarray(fit(jax.random.PRNGKey(1), z, 4, 5)))

  @chex.variants(with_jit=True, without_jit=True)
  def test_fewer_distinct_points_than_codes_stays_finite(self):
    z = np.repeat(np.array([[1., 2.], [3., 4.]], np.float32), 10, axis=0)
    book = np.asarray(self.variant(vq.kmeans_init, static_argnums=(2, 3))(
        jax.random.PRNGKey(0), z, 5, 2))
    assert np.isfinite(book).all()
    assert {tuple(r) for r in book} == {(1., 2.), (3., 4.)}   # codes are data points

  def test_state_from_codebook_statistics_are_consistent(self):
    book = jnp.arange(6.0).reshape(3, 2)
    state = vq.state_from_codebook(book)
    np.testing.assert_array_equal(state.embed_sum, book)
    np.testing.assert_array_equal(state.cluster_size, np.ones(3))
    np.testing.assert_array_equal(state.usage, np.zeros(3))
    assert int(state.step) == 0
    # m / N = e: an EMA step with no assignments keeps every code.
    kept = vq.ema_update(state, jnp.zeros((0, 2)), jnp.zeros((0,), jnp.int32), 0.9)
    np.testing.assert_allclose(kept.codebook, book, rtol=1e-4)


def test_scheduled_decay_scales_the_step_size():
  assert vq.scheduled_decay(0.95, 1.0) == pytest.approx(0.95)
  assert vq.scheduled_decay(0.95, 0.1) == pytest.approx(0.995)
  assert vq.scheduled_decay(0.99, 0.0) == pytest.approx(1.0)
