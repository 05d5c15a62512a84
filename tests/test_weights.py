"""Weighted losses and VQ updates: weight-0 rows (padding) count for nothing."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jepa_jax.objective import losses
from jepa_jax.vq import codebook as vq_lib


@pytest.fixture(scope='module')
def rows():
  rng = np.random.default_rng(2)
  w = (rng.random(24) < 0.6).astype(np.float32)
  w[:2] = 1.0
  p, t = rng.normal(size=(2, 24, 8)).astype(np.float32)
  return p, t, w, w > 0


def test_weighted_losses_equal_losses_of_valid_rows(rows):
  p, t, w, keep = rows
  junk = np.where(keep[:, None], p, 1e3)            # invalid rows: any content
  tau = jnp.float32(0.1)
  key = jax.random.PRNGKey(0)

  @jax.jit
  def all_losses(x, y, w=None):
    kw = {} if w is None else {'weights': w}
    return {'infonce': losses.infonce_loss(x, y, tau, **kw),
            'sigreg': losses.sigreg_loss(x, key, 16, **kw),
            'invariance': losses.invariance_loss(x, y, **kw),
            'relational': losses.relational_loss(x, y, **kw),
            'commitment': losses.commitment_loss(x, y, **kw),
            'codebook': losses.codebook_loss(x, y, **kw)}

  chex.assert_trees_all_close(all_losses(junk, t, w), all_losses(p[keep], t[keep]),
                              rtol=2e-5)
  # Gradients never reach invalid rows.
  g = jax.jit(jax.grad(lambda x: sum(all_losses(x, t, w).values())))(junk)
  assert np.all(np.asarray(g)[~keep] == 0) and np.any(np.asarray(g)[keep] != 0)


def test_weighted_vq_updates_ignore_invalid_rows(rows):
  p, _, w, keep = rows
  state = vq_lib.init_state(jax.random.PRNGKey(0), 6, 8)
  codes, _ = vq_lib.nearest_codes(state.codebook, p)
  junk = np.where(keep[:, None], p, 1e3)
  a = vq_lib.ema_update(state, junk, codes, 0.9, weights=w)
  b = vq_lib.ema_update(state, p[keep], codes[keep], 0.9)
  chex.assert_trees_all_close(a, b, rtol=1e-6)
  a = vq_lib.count_usage(state, codes, weights=w)
  b = vq_lib.count_usage(state, codes[keep])
  chex.assert_trees_all_equal(a, b)
  chex.assert_trees_all_equal(vq_lib.usage_stats(codes, 6, weights=w),
                              vq_lib.usage_stats(codes[keep], 6))
  # Refresh replaces dead codes with valid rows only.
  dead_state = state.replace(usage=jnp.asarray([100.0, 0, 0, 0, 0, 0]))
  new = vq_lib.refresh(dead_state, junk, jax.random.PRNGKey(3), 0.5, weights=w)
  replaced = np.asarray(new.codebook)[1:]
  valid_rows = p[keep]
  for row in replaced:
    assert np.min(np.abs(valid_rows - row).sum(1)) == 0
