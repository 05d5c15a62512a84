"""Tests for jepa_jax.eval.metrics (effective rank, isotropy)."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jepa_jax.eval import metrics


# ---------------------------------------------------------------------------
# effective_rank
# ---------------------------------------------------------------------------


def _erank_by_hand(sigma, eps=1e-7):
  total = sum(sigma)
  p = [s / total + eps for s in sigma]
  return math.exp(-sum(q * math.log(q) for q in p))


def test_effective_rank_diag_matches_formula():
  x = jnp.diag(jnp.array([3., 2., 1., 0.]))   # singular values 3, 2, 1, 0
  expected = _erank_by_hand([3., 2., 1., 0.])
  # Without eps: p = (1/2, 1/3, 1/6), H = 1/2 ln2 + 1/3 ln3 + 1/6 ln6
  h = 0.5 * math.log(2) + math.log(3) / 3 + math.log(6) / 6
  assert expected == pytest.approx(math.exp(h), rel=1e-5)
  np.testing.assert_allclose(float(metrics.effective_rank(x)), expected, rtol=1e-5)


def test_effective_rank_flat_spectrum_and_rectangular():
  # 5x3 matrix with orthogonal columns of equal norm: three equal singular values.
  x = jnp.zeros((5, 3)).at[0, 0].set(2.).at[2, 1].set(-2.).at[4, 2].set(2.)
  np.testing.assert_allclose(float(metrics.effective_rank(x)), 3.0, rtol=1e-5)


def test_effective_rank_gaussian_well_spread():
  x = jax.random.normal(jax.random.PRNGKey(0), (512, 16))
  r = float(metrics.effective_rank(x))
  assert 0.95 * 16 < r <= 16.0 + 1e-3
  # Scale-free.
  np.testing.assert_allclose(float(metrics.effective_rank(10.0 * x)), r, rtol=1e-5)


def test_effective_rank_rank_one():
  ku, kv = jax.random.split(jax.random.PRNGKey(1))
  x = jnp.outer(jax.random.normal(ku, (256,)), jax.random.normal(kv, (16,)))
  assert 1.0 <= float(metrics.effective_rank(x)) < 1.1


def test_effective_rank_jit_and_zero_input_finite():
  f = jax.jit(metrics.effective_rank)
  assert np.isfinite(float(f(jnp.zeros((8, 4)))))
  np.testing.assert_allclose(float(f(jnp.eye(4))), 4.0, rtol=1e-5)


# ---------------------------------------------------------------------------
# isotropy
# ---------------------------------------------------------------------------


def test_isotropy_diagonal_covariance_hand_value():
  # Centered columns with pairwise zero cross-products:
  # variances (N-1 = 3) are 4/3, 16/3, 36/3 -> lambda_min / lambda_max = 1/9.
  x = jnp.array([[1., 2., 3.], [-1., -2., 3.], [1., -2., -3.], [-1., 2., -3.]])
  np.testing.assert_allclose(float(metrics.isotropy(x)), 1 / 9, rtol=1e-5)
  # Mean offset and global scale do not matter.
  np.testing.assert_allclose(float(metrics.isotropy(5.0 * x + 7.0)), 1 / 9, rtol=1e-5)
  # Dropping the last column: 4/3 vs 16/3.
  np.testing.assert_allclose(float(metrics.isotropy(x[:, :2])), 0.25, rtol=1e-5)


def test_isotropy_isotropic_gaussian_close_to_one():
  x = jax.random.normal(jax.random.PRNGKey(2), (8192, 4))
  v = float(metrics.isotropy(x))
  assert 0.8 < v <= 1.0


def test_isotropy_collapsed_dimension():
  x = np.asarray(jax.random.normal(jax.random.PRNGKey(3), (2048, 8)))
  axis = x.copy()
  axis[:, 3] = 2.5                                     # constant coordinate
  assert float(metrics.isotropy(axis)) < 1e-6
  # Collapse along a non-axis direction: project out a random unit vector.
  u = np.random.default_rng(0).standard_normal(8).astype(np.float32)
  u /= np.linalg.norm(u)
  rotated = x - np.outer(x @ u, u)
  assert float(metrics.isotropy(rotated)) < 1e-6
  # Fewer samples than dimensions: covariance is rank-deficient.
  assert float(metrics.isotropy(x[:4])) < 1e-5


def test_isotropy_in_unit_interval_under_jit():
  f = jax.jit(metrics.isotropy)
  for k in range(3):
    v = float(f(jax.random.normal(jax.random.PRNGKey(10 + k), (64, 6)) * jnp.arange(1, 7)))
    assert 0.0 <= v <= 1.0
  assert float(f(jnp.zeros((16, 3)))) == 0.0
