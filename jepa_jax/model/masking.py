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

Padded grids (`sample_masks_valid`, e.g. ARC on a fixed canvas): only valid
tokens (those covering real grid cells) may be context or target. Shapes stay
the same; every slot carries a validity flag instead, False where it could
not be filled (a 1x1 grid has one valid token: one context slot is valid and
no target slot is). See `sample_one_valid`.

The views (`context_view`, `data.context_augment` / `data.target_augment`):
the images an encoder sees, changed per sample by a keyed colour jitter
(`colour_jitter`) and / or a random resized crop (`crop_flip`), the
distortions of joint-embedding recipes; I-JEPA uses none.
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


def _valid_box(valid_grid):
  """Bounding box (r0, r1, c0, c1), inclusive, of the True cells of (gh, gw).

  All False gives the whole grid.
  """
  gh, gw = valid_grid.shape
  rows, cols = valid_grid.any(axis=1), valid_grid.any(axis=0)
  r0, c0 = jnp.argmax(rows), jnp.argmax(cols)
  r1, c1 = gh - 1 - jnp.argmax(rows[::-1]), gw - 1 - jnp.argmax(cols[::-1])
  return r0, r1, c0, c1


def _block_in_box(rng, grid, block, box):
  """A (bh, bw) block placed uniformly inside `box` where it fits, else at the
  box's top-left corner (clipped to the grid) -> its row-major indices."""
  gh, gw = grid
  bh, bw = block
  r0, r1, c0, c1 = box
  kr, kc = jax.random.split(rng)
  r = jax.random.randint(kr, (), r0, jnp.maximum(r0, r1 - bh + 1) + 1)
  c = jax.random.randint(kc, (), c0, jnp.maximum(c0, c1 - bw + 1) + 1)
  r, c = jnp.minimum(r, gh - bh), jnp.minimum(c, gw - bw)
  rows = r + jnp.arange(bh)[:, None]
  cols = c + jnp.arange(bw)[None, :]
  return (rows * gw + cols).reshape(-1)


def sample_one_valid(rng, valid, grid, num_target_blocks, target_block,
                     context_block, num_context_tokens):
  """Masks for one padded sample with token validity `valid` (N,) bool.

  1. One valid token, uniformly drawn, is reserved for the context, so any
     sample with a valid token has a valid context.
  2. M target blocks of (th, tw) tokens, each placed uniformly inside the
     bounding box of the valid tokens where it fits (else at the box's
     corner). A target slot is valid iff its token is valid and is not the
     reserved token.
  3. K context tokens by priority: the reserved token first, then valid
     non-target tokens of a random (ch, cw) context block (placed like the
     targets), then the other valid non-target tokens. Slots left over (fewer
     valid tokens than K) are invalid.

  Returns ctx_idx (K,), tgt_idx (M, T) int32 and ctx_valid (K,),
  tgt_valid (M, T) bool. Indices of invalid slots are arbitrary in-range
  tokens and must be ignored through the flags.
  """
  n = grid[0] * grid[1]
  k_res, k_tgt, k_ctx, k_prio = jax.random.split(rng, 4)
  box = _valid_box(valid.reshape(grid))
  tokens = jnp.arange(n)
  reserved = jnp.argmax(jnp.where(valid, jax.random.uniform(k_res, (n,)), -1.0))
  tgt_idx = jax.vmap(lambda k: _block_in_box(k, grid, target_block, box))(
      jax.random.split(k_tgt, num_target_blocks))
  tgt_valid = valid[tgt_idx] & (tgt_idx != reserved)
  is_target = jnp.zeros((n,), bool).at[tgt_idx.reshape(-1)].set(True)
  is_target = is_target & (tokens != reserved)
  in_ctx_block = jnp.zeros((n,), bool).at[
      _block_in_box(k_ctx, grid, context_block, box)].set(True)
  priority = in_ctx_block.astype(jnp.float32) + jax.random.uniform(k_prio, (n,))
  priority = jnp.where(tokens == reserved, 3.0, priority)
  priority = jnp.where(is_target | ~valid, -jnp.inf, priority)
  top, ctx_idx = jax.lax.top_k(priority, num_context_tokens)
  order = jnp.argsort(ctx_idx)
  return (ctx_idx[order].astype(jnp.int32), tgt_idx.astype(jnp.int32),
          jnp.isfinite(top[order]), tgt_valid)


def sample_masks_valid(rng, sample_ids, grid, mask_cfg, token_valid):
  """Masks for a batch of padded samples; `sample_masks` with validity.

  token_valid: (B, N) bool, the valid tokens of each sample.
  Returns ctx_idx (B, K), tgt_idx (B, M, T), ctx_valid (B, K) and
  tgt_valid (B, M, T); see `sample_one_valid`.
  """
  keys = jax.vmap(lambda i: jax.random.fold_in(rng, i))(sample_ids)
  return jax.vmap(lambda k, v: sample_one_valid(
      k, v, tuple(grid), mask_cfg.num_target_blocks,
      tuple(mask_cfg.target_block_size), tuple(mask_cfg.context_block_size),
      mask_cfg.num_context_tokens))(keys, token_valid)


# Context colour augmentation (`data.context_augment='colour'`): ranges of the
# per-channel gain and offset (offsets in units of the standardised channel's
# std) and the probability of a grey image.
COLOUR_GAIN, COLOUR_OFFSET, GREY_PROB = (0.6, 1.4), 0.4, 0.2
AUGMENT_TAG = 0xC01
TARGET_TAG = 0x7A6     # the target view's own draw (`data.target_augment`)


def colour_jitter(key, sample_ids, images):
  """Each image's colours changed at random, per sample (`fold_in(key, id)`):
  channels permuted (3-channel images), then x_c -> g_c x_c + o_c with
  g_c ~ U(COLOUR_GAIN), o_c ~ U(+-COLOUR_OFFSET), then with probability
  GREY_PROB every channel replaced by their mean. Geometry is untouched, so
  the masks' tokens still cover the same pixels. The colour distortions of
  joint-embedding recipes (SimCLR, Chen et al. 2020; the views of DINO and
  LeJEPA) in a form for standardised images; I-JEPA uses none."""
  c = images.shape[-1]

  def one(k, x):
    kp, kg, ko, ks = jax.random.split(k, 4)
    if c > 1:
      x = x[..., jax.random.permutation(kp, c)]
    g = jax.random.uniform(kg, (c,), minval=COLOUR_GAIN[0], maxval=COLOUR_GAIN[1])
    o = jax.random.uniform(ko, (c,), minval=-COLOUR_OFFSET, maxval=COLOUR_OFFSET)
    x = x * g + o
    grey = jax.random.bernoulli(ks, GREY_PROB)
    return jnp.where(grey, jnp.broadcast_to(x.mean(-1, keepdims=True), x.shape), x)

  keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(sample_ids)
  return jax.vmap(one)(keys, images).astype(images.dtype)


# Context crop (`data.context_augment` with 'crop'): the default range of the
# crop's share of the image's area (`data.crop_area`; random-resized-crop's
# global views in DINO use (0.4, 1), SimCLR and LeJEPA's minimal example
# (0.08, 1)) and the log-uniform range of its aspect ratio; every crop is
# resized to the image's size and mirrored left-right with probability FLIP_PROB.
CROP_AREA, CROP_RATIO, FLIP_PROB = (0.3, 1.0), (3 / 4, 4 / 3), 0.5
CROP_TAG = 0xC20


def crop_flip(key, sample_ids, images, area=None, size=None):
  """Each image (b, H, W, C) replaced by a random crop of it, resized to
  (H, W) (or `size` (h', w'): a smaller view, LeJEPA's and DINO's local
  crops) by bilinear interpolation, mirrored with probability FLIP_PROB,
  per sample (`fold_in(key, id)`): area share a ~ U(area) (default
  CROP_AREA), aspect ratio r log-uniform in CROP_RATIO, crop
  (h, w) = (H sqrt(a/r), W sqrt(a r))
  capped at the image, its corner uniform. Random-resized-crop of
  joint-embedding recipes (SimCLR, Chen et al. 2020; DINO; LeJEPA's views),
  with static shapes. The tokens of the result no longer sit on the
  original's pixels: only pooled terms may compare it with the target."""
  _, hh, ww, cc = images.shape
  lo, hi = CROP_AREA if area is None else area
  oh, ow = size or (hh, ww)

  def one(k, x):
    ka, kr, ky, kx, kf = jax.random.split(k, 5)
    a = jax.random.uniform(ka, (), minval=lo, maxval=hi)
    log_r = jax.random.uniform(kr, (), minval=jnp.log(CROP_RATIO[0]),
                               maxval=jnp.log(CROP_RATIO[1]))
    h = jnp.minimum(1.0, jnp.sqrt(a / jnp.exp(log_r))) * hh
    w = jnp.minimum(1.0, jnp.sqrt(a * jnp.exp(log_r))) * ww
    y0 = jax.random.uniform(ky, ()) * (hh - h)
    x0 = jax.random.uniform(kx, ()) * (ww - w)
    scale = jnp.stack([oh / h, ow / w])
    out = jax.image.scale_and_translate(
        x.astype(jnp.float32), (oh, ow, cc), (0, 1), scale, -jnp.stack([y0, x0]) * scale,
        method='linear', antialias=False)
    return jnp.where(jax.random.bernoulli(kf, FLIP_PROB), out[:, ::-1], out)

  keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(sample_ids)
  return jax.vmap(one)(keys, images).astype(images.dtype)


def context_view(augment: str, key, sample_ids, images, crop_area=None, size=None):
  """The context encoder's images under `data.context_augment`: '' the
  images, 'colour' `colour_jitter`, 'crop' `crop_flip` (area share in
  `crop_area`, `data.crop_area`; resized to `size`), 'colour+crop' both
  (crop first)."""
  parts = augment.split('+') if augment else []
  if 'crop' in parts:
    images = crop_flip(jax.random.fold_in(key, CROP_TAG), sample_ids, images, crop_area,
                       size)
  if 'colour' in parts:
    images = colour_jitter(jax.random.fold_in(key, AUGMENT_TAG), sample_ids, images)
  return images
