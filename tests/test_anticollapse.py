"""State transitions and values of the anti-collapse options (chex)."""
import chex
import jax
import jax.numpy as jnp
import numpy as np

from jepa_jax.vq import anticollapse as ac
from jepa_jax.vq import codebook as vq


def _state(codebook, usage=None, cluster=None):
  cb = jnp.asarray(codebook, jnp.float32)
  k = cb.shape[0]
  return vq.VQState(codebook=cb,
                    cluster_size=jnp.asarray(cluster if cluster is not None else np.ones(k),
                                             jnp.float32),
                    embed_sum=cb, usage=jnp.asarray(
                        usage if usage is not None else np.zeros(k), jnp.float32),
                    step=jnp.zeros((), jnp.int32))


def test_l2_normalize_state_unit_codes_and_consistent_stats():
  s = ac.l2_normalize_state(_state([[3.0, 4.0], [0.0, -2.0]], cluster=[2.0, 0.5]))
  np.testing.assert_allclose(s.codebook, [[0.6, 0.8], [0.0, -1.0]], atol=1e-6)
  np.testing.assert_allclose(s.embed_sum, [[1.2, 1.6], [0.0, -0.5]], atol=1e-6)


def test_rotation_trick_forward_is_q_and_jacobian_is_scaled_rotation():
  z = jnp.array([1.0, 2.0, -0.5])
  q = jnp.array([-0.3, 0.4, 1.2])
  np.testing.assert_allclose(ac.rotation_trick(z, q), q, atol=1e-5)
  jac = jax.jacobian(ac.rotation_trick)(z, q)
  lam = jnp.linalg.norm(q) / jnp.linalg.norm(z)
  # (λR)^T (λR) = λ² I: gradients keep their angles, scaled by λ.
  np.testing.assert_allclose(jac.T @ jac, lam ** 2 * np.eye(3), atol=1e-5)
  np.testing.assert_allclose(jac @ (z / jnp.linalg.norm(z)), lam * q / jnp.linalg.norm(q),
                             atol=1e-5)                 # R maps ẑ to q̂
  # Straight-through would give the identity; the trick does not.
  assert not np.allclose(jac, np.eye(3), atol=1e-2)
  assert jnp.all(jax.grad(lambda qq: ac.rotation_trick(z, qq).sum())(q) == 0)


def test_reanchor_moves_dead_codes_onto_nearest_features_only():
  codebook = [[0.0, 0.0], [10.0, 10.0], [-5.0, 5.0]]
  z = jnp.array([[0.1, 0.0], [9.0, 9.5], [1.0, 1.0], [-4.0, 4.0]])
  # Code 0 holds all assignments, codes 1 and 2 none.
  s = ac.reanchor(_state(codebook, usage=[30.0, 0.0, 0.0], cluster=[5.0, 0.5, 0.5]), z,
                  strength=10.0, eps=1e-3)
  a_dead = np.exp(-1e-3)
  np.testing.assert_allclose(s.codebook[1], (1 - a_dead) * np.array([10.0, 10.0])
                             + a_dead * np.array([9.0, 9.5]), rtol=1e-5)
  np.testing.assert_allclose(s.codebook[2], (1 - a_dead) * np.array([-5.0, 5.0])
                             + a_dead * np.array([-4.0, 4.0]), rtol=1e-5)
  a_live = np.exp(-1.0 * 3 * 10.0 - 1e-3)               # share 1, K = 3
  np.testing.assert_allclose(s.codebook[0], a_live * np.array([0.1, 0.0]), atol=1e-7)
  np.testing.assert_allclose(s.embed_sum, s.codebook * np.array([5.0, 0.5, 0.5])[:, None],
                             rtol=1e-6)
  chex.assert_trees_all_equal(s.usage, jnp.array([30.0, 0.0, 0.0]))


def test_reanchor_before_any_assignment_changes_nothing():
  st = _state([[1.0, 2.0], [3.0, 4.0]])
  s = jax.jit(ac.reanchor)(st, jnp.ones((4, 2)))
  chex.assert_trees_all_equal(s, st)


def test_assignment_entropy_loss_values():
  cb = jnp.array([[0.0, 0.0], [100.0, 0.0], [0.0, 100.0], [100.0, 100.0]])
  # One-hot assignments spread uniformly over the 4 codes: 0 − log 4.
  np.testing.assert_allclose(ac.assignment_entropy_loss(cb, cb), -np.log(4), atol=1e-5)
  # All vectors on one code: 0 − 0.
  np.testing.assert_allclose(ac.assignment_entropy_loss(jnp.zeros((6, 2)), cb), 0.0,
                             atol=1e-5)
  # Equidistant vectors (uniform soft assignment): log 4 − log 4.
  mid = jnp.full((3, 2), 50.0)
  np.testing.assert_allclose(ac.assignment_entropy_loss(mid, cb, 1e6), 0.0, atol=1e-4)


def test_simvq_gradient_reaches_linear_map_only():
  basis = jax.random.normal(jax.random.PRNGKey(0), (5, 3))
  w = jnp.eye(3) * 2.0
  np.testing.assert_allclose(ac.simvq_codebook(basis, w), 2.0 * basis, rtol=1e-6)
  gb, gw = jax.grad(lambda b, m: ac.simvq_codebook(b, m).sum(), argnums=(0, 1))(basis, w)
  assert jnp.all(gb == 0) and jnp.any(gw != 0)


def test_fsq_grid_codes_and_straight_through():
  levels = (8, 8, 4, 3)
  assert ac.fsq_codebook_size(levels) == 768
  # Inputs that land on every grid point: b = round values, z = atanh((b+off)/half) - shift.
  axes = []
  for lv in levels:
    half, off = (lv - 1) / 2, (0.5 if lv % 2 == 0 else 0.0)
    b = np.arange(lv) - lv // 2                         # integer levels
    axes.append(np.arctanh((b + off) / half * 0.999) - np.arctanh(off / half))
  z = jnp.asarray(np.stack(np.meshgrid(*axes, indexing='ij'), -1).reshape(-1, 4), jnp.float32)
  q, codes, _ = ac.fsq_quantize(z, levels)
  codes = np.asarray(codes)
  np.testing.assert_array_equal(np.sort(codes), np.arange(768))   # a bijection onto [0, 768)
  # Values on each axis lie on that axis's L-level grid in [-1, 1].
  for axis, lv in enumerate(levels):
    assert len(np.unique(np.round(np.asarray(q[:, axis]), 5))) == lv
    assert np.abs(np.asarray(q[:, axis])).max() <= 1.0
  # Distinct grid points <-> distinct codes.
  assert len(np.unique(np.asarray(q), axis=0)) == len(np.unique(codes))
  g = jax.grad(lambda x: ac.fsq_quantize(x, levels)[0].sum())(jnp.zeros((1, 4)))
  assert jnp.all(g > 0)                                # tanh slope through round_ste
  # Hand example: levels (3,): b = tanh(z) -> round -> {-1, 0, 1}, code = idx.
  q1, c1, _ = ac.fsq_quantize(jnp.array([[-5.0], [0.1], [5.0]]), (3,))
  np.testing.assert_array_equal(np.asarray(c1), [0, 1, 2])
  np.testing.assert_allclose(q1[:, 0], [-1.0, 0.0, 1.0])


def test_update_usage_ema_hand_example_and_weights():
  st = _state(np.zeros((3, 2))).replace(usage_ema=jnp.array([0.2, 0.0, 0.4]))
  s = ac.update_usage_ema(st, jnp.array([0, 0, 2, 1]), decay=0.5)
  np.testing.assert_allclose(s.usage_ema, [0.1 + 0.25, 0.125, 0.2 + 0.125], rtol=1e-6)
  # Weight-0 rows (padding) are no assignment.
  s = ac.update_usage_ema(st, jnp.array([0, 0, 2, 1]), decay=0.5,
                          weights=jnp.array([1.0, 1.0, 0.0, 0.0]))
  np.testing.assert_allclose(s.usage_ema, [0.1 + 0.5, 0.0, 0.2], rtol=1e-6)


def test_reanchor_threshold_and_weights():
  codebook = [[0.0, 0.0], [10.0, 10.0], [-5.0, 5.0]]
  z = jnp.array([[0.1, 0.0], [9.0, 9.5], [1.0, 1.0], [-4.0, 4.0]])
  st = _state(codebook)
  share = jnp.array([0.5, 0.0, 0.2])               # K share = 1.5, 0, 0.6
  s = ac.reanchor(st, z, strength=1.0, share=share, threshold=1.0,
                  weights=jnp.array([1.0, 0.0, 1.0, 1.0]))
  np.testing.assert_array_equal(s.codebook[0], st.codebook[0])   # above the threshold
  # Code 1's nearest vector (9, 9.5) is padding: its anchor is (1, 1) instead.
  a1 = np.exp(-1e-3)
  np.testing.assert_allclose(s.codebook[1], (1 - a1) * np.array([10.0, 10.0]) + a1 * 1.0,
                             rtol=1e-5)
  a2 = np.exp(-0.6 - 1e-3)
  np.testing.assert_allclose(s.codebook[2], (1 - a2) * np.array([-5.0, 5.0])
                             + a2 * np.array([-4.0, 4.0]), rtol=1e-5)


def test_assignment_entropy_weights_drop_padding_rows():
  cb = jax.random.normal(jax.random.PRNGKey(0), (5, 3))
  z = jax.random.normal(jax.random.PRNGKey(1), (6, 3))
  w = jnp.array([1.0, 0.0, 1.0, 1.0, 0.0, 1.0])
  keep = np.asarray(w) > 0
  np.testing.assert_allclose(ac.assignment_entropy_loss(z, cb, 2.0, weights=w),
                             ac.assignment_entropy_loss(z[keep], cb, 2.0), rtol=1e-5)
  np.testing.assert_allclose(ac.assignment_entropy_loss(z, cb, 2.0, weights=jnp.ones(6)),
                             ac.assignment_entropy_loss(z, cb, 2.0), rtol=1e-6)


def test_refresh_due_warmup_schedule():
  due = lambda t, w, wi: bool(ac.refresh_due(jnp.int32(t), 23, w, wi))  # noqa: E731
  fired = [t for t in range(100) if due(t, 30, 5)]
  # Every 5 steps before step 30, then the plain 23-step interval.
  assert fired == [4, 9, 14, 19, 24, 29, 45, 68, 91]
  assert [t for t in range(100) if due(t, 0, 5)] == [22, 45, 68, 91]     # off
  jitted = jax.jit(ac.refresh_due, static_argnums=(1, 2, 3))
  assert [t for t in range(50) if jitted(jnp.int32(t), 23, 30, 5)] == fired[:7]


def test_refresh_far_restarts_dead_codes_on_distinct_far_vectors():
  # Codes 0 (live) at the origin; 1, 2 dead. z: two vectors at the live code,
  # two far ones; the far ones carry almost all the D^2 mass (32 and 25 vs 0.01).
  cb = [[0.0, 0.0], [5.0, 5.0], [9.0, 9.0]]
  z = jnp.array([[0.0, 0.1], [0.1, 0.0], [4.0, -4.0], [-4.0, 3.0]])
  s = _state(cb, usage=[10.0, 0.0, 0.0], cluster=[3.0, 0.2, 0.2])
  far = {(4.0, -4.0), (-4.0, 3.0)}
  refresh_far = jax.jit(ac.refresh_far)
  for seed in range(5):
    new = refresh_far(s, z, jax.random.PRNGKey(seed), 0.01)
    picked = {tuple(np.asarray(new.codebook[i]).tolist()) for i in (1, 2)}
    assert picked == far                        # distinct, and the far ones
    chex.assert_trees_all_equal(new.codebook[0], s.codebook[0])
    chex.assert_trees_all_equal(new.embed_sum[1:], new.codebook[1:])
    chex.assert_trees_all_equal(new.cluster_size, jnp.array([3.0, 1.0, 1.0]))
    chex.assert_trees_all_equal(new.usage, jnp.zeros(3))
  # Weights: a zero-weight vector is never chosen, however far.
  w = jnp.array([1.0, 1.0, 0.0, 1.0])
  new = refresh_far(s, z, jax.random.PRNGKey(0), 0.01, weights=w)
  rows = {tuple(np.asarray(new.codebook[i]).tolist()) for i in (1, 2)}
  assert (4.0, -4.0) not in rows and (-4.0, 3.0) in rows and len(rows) == 2
  # No assignment counted yet: nothing is dead, the state only starts a window.
  fresh = _state(cb, usage=[0.0, 0.0, 0.0])
  chex.assert_trees_all_equal(refresh_far(fresh, z, jax.random.PRNGKey(0), 0.01),
                              fresh)
