"""Tests for jepa_jax.objective.losses against hand-computed and closed-form values."""
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jepa_jax.objective import losses


# ---------------------------------------------------------------------------
# InfoNCE
# ---------------------------------------------------------------------------

# Rows chosen so that the l2-normalised vectors are exact by hand:
#   pred   -> p = [[.6, .8], [1, 0], [0, 1]]
#   target -> t = [[1, 0], [0, -1], [-.6, .8]]
_PRED = np.array([[3., 4.], [1., 0.], [0., 2.]], np.float32)
_TARGET = np.array([[2., 0.], [0., -5.], [-3., 4.]], np.float32)
_SIM = np.array([[.6, -.8, .28],      # p @ t.T, written out by hand
                 [1., 0., -.6],
                 [0., -1., .8]])


def _logsumexp(row):
  return math.log(sum(math.exp(v) for v in row))


def test_infonce_matches_hand_computed_value():
  tau = 0.5
  logits = _SIM / tau                 # [[1.2,-1.6,.56],[2,0,-1.2],[0,-2,1.6]]
  np.testing.assert_allclose(logits, [[1.2, -1.6, .56], [2., 0., -1.2], [0., -2., 1.6]])
  # CE(logits_i, label=i) = logsumexp(logits_i) - logits_ii
  per_row = [_logsumexp(logits[i]) - logits[i, i] for i in range(3)]
  expected = sum(per_row) / 3
  got = losses.infonce_loss(jnp.asarray(_PRED), jnp.asarray(_TARGET), jnp.float32(tau))
  chex.assert_shape(got, ())
  np.testing.assert_allclose(float(got), expected, rtol=1e-6)


def test_infonce_is_one_directional():
  # Swapping pred and target changes the loss: softmax runs over targets only.
  a = losses.infonce_loss(_PRED, _TARGET, 0.5)
  b = losses.infonce_loss(_TARGET, _PRED, 0.5)
  sim_t = _SIM.T / 0.5
  expected_b = sum(_logsumexp(sim_t[i]) - sim_t[i, i] for i in range(3)) / 3
  np.testing.assert_allclose(float(b), expected_b, rtol=1e-6)
  assert abs(float(a) - float(b)) > 1e-3


def test_infonce_perfect_alignment_small_temperature_is_near_zero():
  x = 3.0 * jnp.eye(4, 8)
  loss = losses.infonce_loss(x, 0.5 * x, jnp.float32(0.01))
  # logits: 100 on the diagonal, 0 elsewhere -> loss = log(1 + 3 e^-100) ~ 0
  assert float(loss) < 1e-6
  # ...and a large temperature on the same pair gives a clearly positive loss.
  assert float(losses.infonce_loss(x, x, 10.0)) > 1.0


def test_infonce_temperature_gradient_matches_analytic():
  tau = 0.5
  g = jax.grad(losses.infonce_loss, argnums=2)(
      jnp.asarray(_PRED), jnp.asarray(_TARGET), jnp.float32(tau))
  # L(tau) = mean_i [lse_j(s_ij / tau) - s_ii / tau]
  # dL/dtau = mean_i [-(1/tau^2) (sum_j softmax_ij s_ij - s_ii)]
  logits = _SIM / tau
  soft = np.exp(logits - logits.max(1, keepdims=True))
  soft /= soft.sum(1, keepdims=True)
  expected = np.mean(-((soft * _SIM).sum(1) - np.diag(_SIM)) / tau**2)
  assert np.isfinite(float(g)) and abs(float(g)) > 1e-3
  np.testing.assert_allclose(float(g), expected, rtol=1e-5)


def test_infonce_zero_rows_bf16_and_jit():
  pred = jnp.zeros((3, 4), jnp.bfloat16)              # degenerate: zero vectors
  target = jnp.ones((3, 4), jnp.bfloat16)
  loss, grads = jax.jit(jax.value_and_grad(losses.infonce_loss, argnums=(0, 2)))(
      pred, target, jnp.float32(0.1))
  assert loss.dtype == jnp.float32
  # Zero predictions -> uniform softmax over 3 targets.
  np.testing.assert_allclose(float(loss), math.log(3), rtol=1e-6)
  chex.assert_tree_all_finite(grads)


# ---------------------------------------------------------------------------
# Epps-Pulley / SIGReg
# ---------------------------------------------------------------------------


def _ep_closed_form(y):
  """N * int_R |phi_N(t) - e^{-t^2/2}|^2 e^{-t^2/2} dt, exactly (float64).

  |phi_N - phi|^2 w = (1/N^2) sum_jk cos(t(y_j - y_k)) e^{-t^2/2}
                      - (2/N) sum_j cos(t y_j) e^{-t^2}
                      + e^{-3 t^2 / 2}
  and int cos(a t) e^{-b t^2} dt = sqrt(pi/b) e^{-a^2/(4b)}.
  """
  y = np.asarray(y, np.float64)
  n = y.size
  d = y[:, None] - y[None, :]
  t1 = math.sqrt(2 * math.pi) * np.exp(-d**2 / 2).sum() / n**2   # b = 1/2
  t2 = 2 * math.sqrt(math.pi) * np.exp(-y**2 / 4).sum() / n       # b = 1
  t3 = math.sqrt(2 * math.pi / 3)                                  # b = 3/2
  return n * (t1 - t2 + t3)


@pytest.mark.parametrize('kind', ['normal', 'uniform', 'shifted', 'constant'])
def test_epps_pulley_trapezoid_matches_closed_form(kind):
  rng = np.random.default_rng(0)
  y = {'normal': rng.standard_normal(64),
       'uniform': rng.uniform(0.0, 3.0, 64),
       'shifted': 0.5 * rng.standard_normal(64) + 1.0,
       'constant': np.full(64, 0.7)}[kind].astype(np.float32)
  got = float(losses.epps_pulley(jnp.asarray(y), num_points=257, t_max=8.0))
  np.testing.assert_allclose(got, _ep_closed_form(y), rtol=1e-4)


def test_epps_pulley_default_nodes_equal_full_line_trapezoid():
  # Half-line trapezoid doubled == plain trapezoid over [-3, 3] on the mirrored grid.
  y = np.random.default_rng(1).standard_normal(50)
  t = np.linspace(-3.0, 3.0, 33)                       # mirror of 17 nodes on [0, 3]
  ecf = np.exp(1j * t[:, None] * y[None, :]).mean(1)
  integrand = np.abs(ecf - np.exp(-t**2 / 2))**2 * np.exp(-t**2 / 2)
  expected = y.size * np.sum((integrand[1:] + integrand[:-1]) / 2 * np.diff(t))
  got = float(losses.epps_pulley(jnp.asarray(y, jnp.float32)))
  np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_epps_pulley_rejects_non_1d():
  with pytest.raises(ValueError):
    losses.epps_pulley(jnp.zeros((4, 2)))


def test_sigreg_directions_are_unit_and_rng_determined():
  a = losses.sigreg_directions(jax.random.PRNGKey(0), 16, 32)
  chex.assert_shape(a, (16, 32))
  np.testing.assert_allclose(np.linalg.norm(np.asarray(a), axis=0), 1.0, rtol=1e-6)
  np.testing.assert_array_equal(a, losses.sigreg_directions(jax.random.PRNGKey(0), 16, 32))
  b = losses.sigreg_directions(jax.random.PRNGKey(1), 16, 32)
  assert float(jnp.max(jnp.abs(a - b))) > 0.1


def test_sigreg_is_mean_of_per_slice_epps_pulley():
  x = jax.random.normal(jax.random.PRNGKey(2), (40, 5))
  key = jax.random.PRNGKey(3)
  a = losses.sigreg_directions(key, 5, 6)
  per_slice = [float(losses.epps_pulley(x @ a[:, m], num_points=9, t_max=2.5))
               for m in range(6)]
  got = losses.sigreg_loss(x, key, num_slices=6, num_points=9, t_max=2.5)
  np.testing.assert_allclose(float(got), np.mean(per_slice), rtol=1e-5)


def _normal_and_collapsed():
  kx, ku, kv = jax.random.split(jax.random.PRNGKey(4), 3)
  normal = jax.random.normal(kx, (1024, 16))
  u = jax.random.normal(ku, (1024, 1))
  v = jax.random.normal(kv, (1, 16))
  return normal, {
      'zeros': jnp.zeros((1024, 16)),
      'all_rows_equal': jnp.broadcast_to(v, (1024, 16)),
      'rank1': u * v / jnp.linalg.norm(v),
  }


def test_sigreg_small_for_gaussian_large_for_collapsed():
  normal, collapsed = _normal_and_collapsed()
  key = jax.random.PRNGKey(5)
  sig = jax.jit(losses.sigreg_loss)
  g = float(sig(normal, key))
  # Expected value per slice for N(0, I) is about sqrt(2pi) - sqrt(2pi/3) ~ 1.06,
  # tiny compared to N = 1024.
  assert 0.0 < g < 3.0
  for name, c in collapsed.items():
    assert float(sig(c, key)) > 20 * g, name


def test_sigreg_same_rng_same_value_different_rng_different_value():
  normal, _ = _normal_and_collapsed()
  k1, k2 = jax.random.PRNGKey(6), jax.random.PRNGKey(7)
  s1 = losses.sigreg_loss(normal, k1, num_slices=8)
  np.testing.assert_array_equal(s1, losses.sigreg_loss(normal, k1, num_slices=8))
  assert float(s1) != float(losses.sigreg_loss(normal, k2, num_slices=8))


def test_sigreg_gradient_finite_and_pushes_collapse_apart():
  x = 0.01 * jax.random.normal(jax.random.PRNGKey(8), (64, 4))
  key = jax.random.PRNGKey(9)
  loss_fn = lambda v: losses.sigreg_loss(v, key, num_slices=16)
  g = jax.grad(loss_fn)(x)
  chex.assert_tree_all_finite(g)
  # A small step against the gradient lowers the loss of a near-collapsed batch.
  assert float(loss_fn(x - 1e-3 * g)) < float(loss_fn(x))


# ---------------------------------------------------------------------------
# Invariance and relational
# ---------------------------------------------------------------------------


def test_invariance_hand_value():
  pred = jnp.array([[1., 2., 3.], [0., 0., 0.]])
  target = jnp.array([[1., 0., 3.], [1., -1., 0.]])
  # squared diffs: [0, 4, 0], [1, 1, 0] -> sum 6 over 6 entries
  np.testing.assert_allclose(float(losses.invariance_loss(pred, target)), 1.0)
  assert float(losses.invariance_loss(pred, pred)) == 0.0


def test_relational_orthogonal_vs_identical():
  ortho = jnp.eye(3)                      # all off-diagonal cosines 0
  same = jnp.ones((3, 3))                 # all off-diagonal cosines 1
  np.testing.assert_allclose(float(losses.relational_loss(ortho, same)), 1.0, rtol=1e-6)
  assert float(losses.relational_loss(ortho, ortho)) == pytest.approx(0.0, abs=1e-7)
  assert float(losses.relational_loss(same, same)) == pytest.approx(0.0, abs=1e-7)


def test_relational_hand_value_and_invariances():
  a = jnp.array([[1., 0.], [0., 1.], [1., 1.]])
  b = jnp.array([[1., 0.], [1., 0.], [0., 1.]])
  # S_a off-diag: (0,1)=0, (0,2)=1/sqrt2, (1,2)=1/sqrt2
  # S_b off-diag: (0,1)=1, (0,2)=0,       (1,2)=0
  # squared diffs 1, 1/2, 1/2 (each twice) -> 4 / (3*2) = 2/3
  np.testing.assert_allclose(float(losses.relational_loss(a, b)), 2 / 3, rtol=1e-6)
  # Compares structure, not embeddings: per-row positive scaling and a rotation
  # of one set change nothing.
  c, s = math.cos(0.7), math.sin(0.7)
  rot = jnp.array([[c, -s], [s, c]])
  a2 = (a @ rot) * jnp.array([[2.], [0.5], [3.]])
  np.testing.assert_allclose(float(losses.relational_loss(a2, b)), 2 / 3, rtol=1e-5)
  # A single sample has no pairs.
  assert float(losses.relational_loss(a[:1], b[:1])) == 0.0


# ---------------------------------------------------------------------------
# VQ terms
# ---------------------------------------------------------------------------

_Z = jnp.array([[1., 2.], [3., 4.]])
_ZQ = jnp.array([[0., 2.], [3., 6.]])      # row squared distances 1 and 4


def test_vq_loss_values():
  np.testing.assert_allclose(float(losses.commitment_loss(_Z, _ZQ)), 2.5)
  np.testing.assert_allclose(float(losses.codebook_loss(_Z, _ZQ)), 2.5)
  # (B, K, D) inputs: sum over D, mean over B and K.
  z3 = jnp.stack([_Z, jnp.zeros_like(_Z)])
  q3 = jnp.stack([_ZQ, jnp.zeros_like(_ZQ)])
  np.testing.assert_allclose(float(losses.commitment_loss(z3, q3)), 1.25)


def test_vq_loss_element_mean_reduction():
  # Element mean (F.mse_loss): (1 + 0 + 0 + 4) / 4 elements = 1.25 = sum / D.
  for fn in (losses.commitment_loss, losses.codebook_loss):
    np.testing.assert_allclose(float(fn(_Z, _ZQ, reduction='mean')), 1.25)
    np.testing.assert_allclose(float(fn(_Z, _ZQ, reduction='mean')),
                               float(jnp.mean((_Z - _ZQ) ** 2)))
  w = jnp.array([0.0, 1.0])          # only the second row (squared error 4 over 2 dims)
  np.testing.assert_allclose(float(losses.commitment_loss(_Z, _ZQ, w, 'mean')), 2.0)
  with pytest.raises(ValueError, match='reduction'):
    losses.commitment_loss(_Z, _ZQ, reduction='max')


def test_commitment_gradient_reaches_z_only():
  gz, gq = jax.grad(losses.commitment_loss, argnums=(0, 1))(_Z, _ZQ)
  np.testing.assert_allclose(gz, 2 * (_Z - _ZQ) / 2)     # d/dz mean_rows ||z - q||^2
  np.testing.assert_array_equal(gq, jnp.zeros_like(_ZQ))


def test_codebook_gradient_reaches_z_q_only():
  gz, gq = jax.grad(losses.codebook_loss, argnums=(0, 1))(_Z, _ZQ)
  np.testing.assert_array_equal(gz, jnp.zeros_like(_Z))
  np.testing.assert_allclose(gq, 2 * (_ZQ - _Z) / 2)
