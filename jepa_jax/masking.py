"""Multi-block masking with fixed token counts (I-JEPA style, static shapes).

For each sample on a (gh, gw) token grid:

* M target blocks, each exactly (th, tw) tokens at a uniformly random
  position, so every block has T = th * tw tokens. Blocks may overlap; each
  is predicted in its own predictor sequence (as in I-JEPA).
* A context of exactly K tokens, never containing a target token: tokens
  inside a random (ch, cw) context block are preferred, the rest of the K are
  filled from other non-target tokens. Config validation guarantees
  K <= N - M*T, so enough non-target tokens always exist.

Because M, T and K are fixed by the config, every step has the same shapes and
the train step compiles once. Randomness for sample i derives from
`fold_in(rng, global_sample_index_i)`, so masks do not depend on how a global
batch is split over devices.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def _block_indices(rng, grid, block):
  gh, gw = grid
  bh, bw = block
  kr, kc = jax.random.split(rng)
  r = jax.random.randint(kr, (), 0, gh - bh + 1)
  c = jax.random.randint(kc, (), 0, gw - bw + 1)
  rows = r + jnp.arange(bh)[:, None]
  cols = c + jnp.arange(bw)[None, :]
  return (rows * gw + cols).reshape(-1)


def sample_one(rng, grid, num_target_blocks, target_block, context_block,
               num_context_tokens):
  """Masks for one sample -> (ctx_idx (K,), tgt_idx (M, T)), int32."""
  n = grid[0] * grid[1]
  k_tgt, k_ctx, k_prio = jax.random.split(rng, 3)
  tgt_idx = jax.vmap(lambda k: _block_indices(k, grid, target_block))(
      jax.random.split(k_tgt, num_target_blocks))
  is_target = jnp.zeros((n,), bool).at[tgt_idx.reshape(-1)].set(True)
  in_ctx_block = jnp.zeros((n,), bool).at[
      _block_indices(k_ctx, grid, context_block)].set(True)
  # Priority: context-block tokens (1 + u) above other tokens (u), u ~ U[0, 1);
  # target tokens are excluded. top_k then gives exactly K distinct tokens.
  priority = in_ctx_block.astype(jnp.float32) + jax.random.uniform(k_prio, (n,))
  priority = jnp.where(is_target, -jnp.inf, priority)
  _, ctx_idx = jax.lax.top_k(priority, num_context_tokens)
  return jnp.sort(ctx_idx).astype(jnp.int32), tgt_idx.astype(jnp.int32)


def sample_masks(rng, sample_ids, grid, mask_cfg):
  """Masks for a batch.

  Args:
    rng: the step's mask key (same on every replica).
    sample_ids: (B,) int global indices of the samples in the global batch.
    grid: (gh, gw) token grid.
    mask_cfg: `config.masking` (num_target_blocks, target_block_size,
      context_block_size, num_context_tokens).
  Returns:
    ctx_idx (B, K) and tgt_idx (B, M, T).
  """
  keys = jax.vmap(lambda i: jax.random.fold_in(rng, i))(sample_ids)
  return jax.vmap(lambda k: sample_one(
      k, tuple(grid), mask_cfg.num_target_blocks,
      tuple(mask_cfg.target_block_size), tuple(mask_cfg.context_block_size),
      mask_cfg.num_context_tokens))(keys)
