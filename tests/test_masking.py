"""Multi-block masking: fixed counts, disjoint context/targets, determinism."""
import jax
import ml_collections
import numpy as np

from jepa_jax.model import masking


def _cfg(m=2, tgt=(2, 2), ctx_block=(3, 3), k=8):
  c = ml_collections.ConfigDict()
  c.num_target_blocks, c.target_block_size = m, tgt
  c.context_block_size, c.num_context_tokens = ctx_block, k
  return c


def test_shapes_counts_and_disjointness():
  grid = (4, 4)
  ctx, tgt = masking.sample_masks(jax.random.PRNGKey(0), np.arange(64), grid, _cfg())
  ctx, tgt = np.asarray(ctx), np.asarray(tgt)
  assert ctx.shape == (64, 8) and tgt.shape == (64, 2, 4)
  for c, t in zip(ctx, tgt):
    assert len(set(c.tolist())) == 8                      # K distinct tokens
    assert not set(c.tolist()) & set(t.reshape(-1).tolist())  # no target in context
    for block in t:                                        # each block is a 2x2 square
      rows, cols = block // 4, block % 4
      assert rows.max() - rows.min() == 1 and cols.max() - cols.min() == 1
      assert len(set(block.tolist())) == 4
  assert ctx.min() >= 0 and ctx.max() < 16


def test_context_prefers_context_block_on_larger_grid():
  grid = (8, 8)
  cfg = _cfg(m=1, tgt=(2, 2), ctx_block=(4, 4), k=10)
  ctx, tgt = masking.sample_masks(jax.random.PRNGKey(1), np.arange(32), grid, cfg)
  # With a 4x4 context block (16 tokens) and one 2x2 target, at least 12
  # block tokens are free, so all 10 context tokens lie in one 4x4 window.
  for c in np.asarray(ctx):
    rows, cols = c // 8, c % 8
    assert rows.max() - rows.min() <= 3 and cols.max() - cols.min() <= 3


def test_masks_depend_on_sample_index_not_batch_position():
  grid, cfg = (4, 4), _cfg()
  key = jax.random.PRNGKey(3)
  ids = np.array([5, 9, 11, 2])
  ctx_a, tgt_a = masking.sample_masks(key, ids, grid, cfg)
  ctx_b, tgt_b = masking.sample_masks(key, ids[::-1], grid, cfg)
  np.testing.assert_array_equal(np.asarray(ctx_a), np.asarray(ctx_b)[::-1])
  np.testing.assert_array_equal(np.asarray(tgt_a), np.asarray(tgt_b)[::-1])
  ctx_c, _ = masking.sample_masks(jax.random.PRNGKey(4), ids, grid, cfg)
  assert not np.array_equal(np.asarray(ctx_a), np.asarray(ctx_c))
