"""ViT context/target encoder and narrow JEPA predictor (flax.linen).

Both are plain `nn.Module`s: parameters are explicit pytrees made by `init` and
used by `apply`, so the target encoder is just a second copy of the encoder's
params updated by EMA (`ema_params`), never a module with hidden state.

Token layout. An image (H, W, C) is cut into non-overlapping `patch_size`
patches on a (H/p) x (W/p) grid, numbered row-major 0..N-1. Positions are
fixed 2-D sin-cos embeddings (MAE / I-JEPA). Encoders see a subset of tokens
given by integer indices, so masking never changes shapes.

Categorical grids (`patch_embed='colour'`, e.g. ARC). Each cell holds a
colour id; a cell < 0 is padding. Every cell gets a learned colour embedding
(an `nn.Embed` table with one extra row shared by all padding cells, so the
padding's values never matter) and a strided convolution over the cell
embeddings makes the patch tokens. A token is valid if any of its cells is a
real grid cell (`token_validity`). Given token validity flags, encoder and
predictor attention ignore invalid keys, so the outputs at valid tokens do
not depend on padding at all; without flags (pixel images) none is masked.

Computation dtype (`model.dtype`, see `compute_dtype`). Every module takes a
flax `dtype`: the dtype its activations are computed in. Parameters are
always created in float32 (flax's `param_dtype` default) and cast to `dtype`
where they are used, so the gradients, the optimizer state and the EMA
target stay float32. With bfloat16 (mixed precision, as the flax examples'
`half_precision`): the patch embedding, attention and MLP matmuls and the
residual stream are bfloat16; LayerNorm statistics are computed in float32
(flax's `force_float32_reductions`), attention softmax in float32 (the fused
path casts the probabilities back to bfloat16; flax's MHA with
`force_fp32_for_softmax` keeps them float32 for the weights-by-values
product); the last layers (the encoder's final LayerNorm, the predictor's
final LayerNorm and output projection) run in float32, so both modules
return float32 and every loss, VQ distance and statistic downstream is
float32. With float32 (the default) every cast is the identity.
"""
from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


DTYPES = ('float32', 'bfloat16')


def compute_dtype(name: str):
  """The jnp dtype of `model.dtype` ('float32' or 'bfloat16')."""
  if name not in DTYPES:
    raise ValueError(f'model dtype must be one of {DTYPES}, got {name!r}')
  return jnp.dtype(name)


def sincos_pos_embed_2d(dim: int, grid_h: int, grid_w: int, span=None) -> np.ndarray:
  """Fixed 2-D sin-cos positional embedding, shape (grid_h * grid_w, dim).

  Half the channels encode the row, half the column; each half is
  [sin(pos * w_k), cos(pos * w_k)] with w_k = 10000^(-k / (dim/4)),
  k = 0..dim/4-1 (Vaswani et al. 2017, 2-D form of MAE, He et al. 2022).
  pos = 0..g-1; with `span` (S_h, S_w) the g cells spread over a grid of S:
  pos_i = (i + 1/2) S / g - 1/2 (a smaller view's positions resampled to the
  training grid, as DINO interpolates its table; S = g gives 0..g-1).
  """
  if dim % 4:
    raise ValueError(f'embed dim must be divisible by 4 for 2-D sin-cos, got {dim}')
  quarter = dim // 4
  omega = 1.0 / (10000 ** (np.arange(quarter, dtype=np.float64) / quarter))
  axes = [(np.arange(g) + 0.5) * big / g - 0.5          # exactly 0..g-1 when big = g
          for g, big in zip((grid_h, grid_w), span or (grid_h, grid_w))]
  rows, cols = np.meshgrid(*axes, indexing='ij')

  def encode(pos):
    angles = pos.reshape(-1)[:, None] * omega[None, :]
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)

  return np.concatenate([encode(rows), encode(cols)], axis=1).astype(np.float32)


def gather_tokens(x: jax.Array, idx: jax.Array) -> jax.Array:
  """x (B, N, D), idx (B, K) int -> (B, K, D)."""
  return jnp.take_along_axis(x, idx[..., None], axis=1)


def patches(images, p: int):
  """(B, H, W, C) -> (B, N, p * p * C): each token's patch of pixels (or
  cells), tokens row-major as the encoder cuts them; NumPy or JAX arrays."""
  b, h, w, c = images.shape
  x = images.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, (h // p) * (w // p), p * p * c)


def token_validity(images: jax.Array, patch_size: int) -> jax.Array:
  """(B, H, W, 1) colour ids (padding < 0) -> (B, N) bool, row-major tokens:
  a token is valid iff at least one cell of its patch is a grid cell (>= 0)."""
  (b, h, w), p = images.shape[:3], patch_size
  cells = images[..., 0] >= 0
  return cells.reshape(b, h // p, p, w // p, p).any(axis=(2, 4)).reshape(b, -1)


def pool_tokens(x, weights, axes):
  """Mean of tokens x over `axes`; with weights (x's shape without the last
  axis, e.g. validity flags), sum w x / max(sum w, tiny) (0 where every
  weight is 0). The per-image / per-block mean of the losses and the
  embedding metrics."""
  if weights is None:
    return x.mean(axes)
  w = weights.astype(x.dtype)[..., None]
  return (w * x).sum(axes) / jnp.maximum(w.sum(axes), jnp.finfo(x.dtype).tiny)


def key_mask(valid: Optional[jax.Array]):
  """(B, K) bool validity -> (B, 1, 1, K) attention mask over keys, or None."""
  return None if valid is None else valid[:, None, None, :]


class _DenseParams(nn.Module):
  """The kernel and bias of a flax `nn.DenseGeneral`, created but not applied.

  Same names, shapes and initialisation as DenseGeneral (lecun-normal on the
  flattened (fan_in, fan_out) kernel, zero bias), so a module built from
  these has the parameter tree and initial values of the flax layer.
  """
  kernel_shape: tuple
  bias_shape: tuple
  fan_in_dims: int          # leading kernel dims that are inputs

  @nn.compact
  def __call__(self):
    shape, n_in = self.kernel_shape, self.fan_in_dims

    def kernel_init(rng, shape, dtype=jnp.float32):
      flat = (int(np.prod(shape[:n_in])), int(np.prod(shape[n_in:])))
      return nn.initializers.lecun_normal()(rng, flat, dtype).reshape(shape)

    kernel = self.param('kernel', kernel_init, shape)
    bias = self.param('bias', nn.initializers.zeros_init(), self.bias_shape)
    return kernel, bias


class SelfAttention(nn.Module):
  """Multi-head self-attention with the parameters of flax's MHA.

  The parameter tree is that of `nn.MultiHeadDotProductAttention` (query /
  key / value kernels (D, H, Dh) with biases (H, Dh), out kernel (H, Dh, D)
  with bias (D,)), with the same initial values, so checkpoints and the
  other modules are unchanged. The computation is the same formula,

      softmax(mask(q k^T / sqrt(Dh))) v W_o + b_o,  q, k, v = x W_{q,k,v} + b,

  with masked logits set to finfo(float32).min before the softmax (as flax),
  but written for the CPU: one (D, 3·H·Dh) matmul for q, k and v on the
  (B·L, D) rows, and one (H·Dh, D) output matmul.
  `mask`: None or bool broadcastable to (B, 1, 1, L) (True: key may be used).
  `dtype`: the computation dtype (the float32 kernels are cast to it; the
  softmax runs in float32 and its probabilities are cast back).
  """
  num_heads: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, mask=None):
    b, l, d = x.shape
    h = self.num_heads
    if d % h:
      raise ValueError(f'embed dim {d} not divisible by {h} heads')
    dh = d // h
    qkv = [_DenseParams((d, h, dh), (h, dh), 1, name=n)() for n in ('query', 'key', 'value')]
    w_out, b_out = _DenseParams((h, dh, d), (d,), 2, name='out')()
    w = jnp.concatenate([k.reshape(d, h * dh) for k, _ in qkv], axis=1).astype(self.dtype)
    bias = jnp.concatenate([bb.reshape(h * dh) for _, bb in qkv]).astype(self.dtype)
    x = x.astype(self.dtype)
    y = (x.reshape(b * l, d) @ w + bias).reshape(b, l, 3, h, dh)
    q, k, v = y[:, :, 0], y[:, :, 1], y[:, :, 2]           # (B, L, H, Dh)
    q = q / jnp.sqrt(dh).astype(q.dtype)
    logits = jnp.einsum('bqhd,bkhd->bhqk', q, k)
    if mask is not None:
      logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
    attn = jax.nn.softmax(logits.astype(jnp.float32)).astype(x.dtype)
    o = jnp.einsum('bhqk,bkhd->bqhd', attn, v)
    w_out, b_out = w_out.astype(self.dtype), b_out.astype(self.dtype)
    out = o.reshape(b * l, h * dh) @ w_out.reshape(h * dh, d) + b_out
    return out.reshape(b, l, d)


class MlpBlock(nn.Module):
  hidden: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    x_in = nn.gelu(nn.Dense(self.hidden, dtype=self.dtype)(x))
    return nn.Dense(x.shape[-1], dtype=self.dtype)(x_in)


class Block(nn.Module):
  """Pre-norm transformer block: x + MHA(LN(x)); x + MLP(LN(x)).

  `attention`: 'flax' (flax's MultiHeadDotProductAttention, the default) or
  'fused' (`SelfAttention`: same parameters, one fused qkv matmul; equal to
  float32 rounding, so a run's numbers differ from 'flax' in the last bits).
  `dtype`: the computation dtype of every layer (module docstring).
  """
  num_heads: int
  mlp_ratio: float = 4.0
  attention: str = 'flax'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, mask=None):
    dt = self.dtype
    y = nn.LayerNorm(dtype=dt)(x)
    name = 'MultiHeadDotProductAttention_0'
    if self.attention == 'fused':
      x = x + SelfAttention(self.num_heads, dtype=dt, name=name)(y, mask)
    elif self.attention == 'flax':
      x = x + nn.MultiHeadDotProductAttention(
          num_heads=self.num_heads, dtype=dt, force_fp32_for_softmax=True,
          name=name)(y, y, mask=mask)
    else:
      raise ValueError(f"attention must be 'flax' or 'fused', got {self.attention!r}")
    y = nn.LayerNorm(dtype=dt)(x)
    return x + MlpBlock(int(self.mlp_ratio * x.shape[-1]), dtype=dt)(y)


class ViTEncoder(nn.Module):
  """Patch embedding + fixed 2-D positions + pre-norm blocks + final LayerNorm.

  `__call__(images, token_idx=None, token_valid=None)`: images (B, H, W, C);
  token_idx (B, K) selects which patch tokens the encoder sees (None: all N);
  token_valid (B, K) (or (B, N) without token_idx) bool flags the tokens
  attention may use as keys (None: all). Returns (B, K, D). `pos_span`: the
  grid a smaller image's positions spread over (`sincos_pos_embed_2d`).

  patch_embed='conv': a strided convolution of the pixel values.
  patch_embed='colour': images hold colour ids (padding < 0); cell embedding
  E[id] (E has num_colours + 1 rows, the last for padding) then the strided
  convolution over the (B, H, W, colour_dim) cell embeddings.
  `dtype`: the blocks' computation dtype; the output is float32 (the final
  LayerNorm runs in float32). `top_layers` K > 1: `top_layers_mean` of the
  last K blocks instead (`loss.target_layers`). With `with_head=True` (needs
  `head_prototypes` > 0): (tokens, `ProjectionHead` of their mean over the
  valid tokens).
  """
  patch_size: int
  embed_dim: int
  depth: int
  num_heads: int
  mlp_ratio: float = 4.0
  patch_embed: str = 'conv'
  num_colours: int = 10
  colour_dim: int = 16
  attention: str = 'flax'
  dtype: Any = jnp.float32
  head_prototypes: int = 0  # > 0: a `ProjectionHead` with that many prototypes

  @nn.compact
  def __call__(self, images, token_idx: Optional[jax.Array] = None,
               token_valid: Optional[jax.Array] = None, with_head: bool = False,
               top_layers: int = 1, pos_span=None):
    b, h, w, _ = images.shape
    p = self.patch_size
    if self.patch_embed == 'colour':
      ids = images[..., 0]
      ids = jnp.where(ids >= 0, jnp.clip(jnp.round(ids), 0, self.num_colours - 1),
                      self.num_colours).astype(jnp.int32)
      images = nn.Embed(self.num_colours + 1, self.colour_dim, dtype=self.dtype,
                        name='colour_embed')(ids)
    x = nn.Conv(self.embed_dim, (p, p), strides=(p, p), padding='VALID',
                dtype=self.dtype, name='patch_embed')(images)
    gh, gw = h // p, w // p
    x = x.reshape(b, gh * gw, self.embed_dim)
    x = x + jnp.asarray(sincos_pos_embed_2d(self.embed_dim, gh, gw, pos_span), self.dtype)[None]
    if token_idx is not None:
      x = gather_tokens(x, token_idx)
    mask = key_mask(token_valid)
    outputs = []
    for i in range(self.depth):
      x = Block(self.num_heads, self.mlp_ratio, self.attention, self.dtype,
                name=f'block_{i}')(x, mask)
      outputs.append(x)
    x = nn.LayerNorm(dtype=jnp.float32, name='norm')(x)
    if top_layers > 1:                      # the final norm's parameters stay in the tree
      x = top_layers_mean(outputs[-top_layers:])
    if not with_head:
      return x
    head = ProjectionHead(4 * self.embed_dim, self.embed_dim, self.head_prototypes,
                          name='head')
    return x, head(pool_tokens(x, token_valid, 1))


def top_layers_mean(outputs) -> jax.Array:
  """data2vec's target (Baevski et al. 2022, 'Training targets'): the top K
  blocks' outputs h_k (B, N, D), each normalised without parameters, averaged
  in float32: (1/K) sum_k (h_k - mean_D h_k) / sqrt(var_D h_k + 1e-6)."""
  return sum((h - h.mean(-1, keepdims=True)) * jax.lax.rsqrt(h.var(-1, keepdims=True) + 1e-6)
             for h in (o.astype(jnp.float32) for o in outputs)) / len(outputs)


class ProjectionHead(nn.Module):
  """DINO's projection head, float32: (B, D) -> (B, K) prototype scores.

      h = W3 gelu(W2 gelu(W1 x))            MLP to a bottleneck
      s_k = <h / ||h||, c_k / ||c_k||>       cosine with prototype c_k

  The cosine is DINO's weight-normalised last layer with its norm fixed at 1
  (Caron et al. 2021, Sec. 3.1 and appendix: 3 layers of hidden width 2048,
  bottleneck 256; here `hidden` and `bottleneck` are the caller's, scaled to
  the encoder's width). Built inside the encoder (`ViTEncoder.head_prototypes`)
  so the target encoder's EMA carries the teacher's head with it.
  """
  hidden: int
  bottleneck: int
  prototypes: int

  @nn.compact
  def __call__(self, x):
    x = nn.gelu(nn.Dense(self.hidden, name='dense_0')(x))
    x = nn.gelu(nn.Dense(self.hidden, name='dense_1')(x))
    h = nn.Dense(self.bottleneck, name='bottleneck')(x)
    c = self.param('prototypes', nn.initializers.lecun_normal(),
                   (self.bottleneck, self.prototypes))
    unit = lambda v, axis: v * jax.lax.rsqrt(
        jnp.maximum(jnp.sum(jnp.square(v), axis, keepdims=True), 1e-12))
    return unit(h, -1) @ unit(c, 0)


class Predictor(nn.Module):
  """Narrow I-JEPA predictor.

  `__call__(ctx, ctx_idx, tgt_idx, ctx_valid=None, tgt_valid=None)`: ctx
  (B, K, D) context tokens (possibly quantized), ctx_idx (B, K) their
  positions, tgt_idx (B, M, T) the positions of M target blocks of T tokens.
  Each block is predicted in its own sequence [context tokens + pos ; mask
  token + target pos] as in I-JEPA, so blocks may overlap. With validity
  flags ctx_valid (B, K) and tgt_valid (B, M, T) (both or neither),
  attention ignores invalid context slots and invalid target queries as
  keys. Returns predictions (B, M, T, D), float32 (`dtype`: the blocks'
  computation dtype; the final LayerNorm and projection run in float32).
  """
  embed_dim: int           # output dim = encoder dim
  pred_dim: int
  depth: int
  num_heads: int
  grid: tuple              # (grid_h, grid_w)
  mlp_ratio: float = 4.0
  attention: str = 'flax'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, ctx, ctx_idx, tgt_idx, ctx_valid=None, tgt_valid=None):
    b, k, _ = ctx.shape
    _, m, t = tgt_idx.shape
    pos = jnp.asarray(sincos_pos_embed_2d(self.pred_dim, *self.grid), self.dtype)
    x = nn.Dense(self.pred_dim, dtype=self.dtype, name='embed')(ctx) + pos[ctx_idx]
    mask_token = self.param('mask_token', nn.initializers.normal(0.02),
                            (self.pred_dim,))
    queries = mask_token.astype(self.dtype) + pos[tgt_idx]    # (B, M, T, P)
    x = jnp.broadcast_to(x[:, None], (b, m, k, self.pred_dim))
    x = jnp.concatenate([x, queries], axis=2).reshape(b * m, k + t, self.pred_dim)
    mask = None
    if ctx_valid is not None:
      valid = jnp.concatenate(
          [jnp.broadcast_to(ctx_valid[:, None], (b, m, k)), tgt_valid], axis=2)
      mask = key_mask(valid.reshape(b * m, k + t))
    for i in range(self.depth):
      x = Block(self.num_heads, self.mlp_ratio, self.attention, self.dtype,
                name=f'block_{i}')(x, mask)
    x = nn.LayerNorm(dtype=jnp.float32, name='norm')(x)
    x = nn.Dense(self.embed_dim, dtype=jnp.float32, name='proj')(x[:, k:])
    return x.reshape(b, m, t, self.embed_dim)


def make_encoder(m, head_prototypes: int = 0) -> ViTEncoder:
  """The encoder of `m`, a config's `model` group (with a projection head of
  `head_prototypes` prototypes when > 0: the training objective's)."""
  return ViTEncoder(patch_size=m.patch_size, embed_dim=m.embed_dim, depth=m.depth,
                    num_heads=m.num_heads, mlp_ratio=m.mlp_ratio, patch_embed=m.patch_embed,
                    num_colours=m.num_colours, colour_dim=m.colour_dim, attention=m.attention,
                    dtype=compute_dtype(m.dtype), head_prototypes=head_prototypes)


def make_predictor(m, grid) -> Predictor:
  """The predictor of `m`, a config's `model` group, on the token grid `grid`."""
  return Predictor(embed_dim=m.embed_dim, pred_dim=m.predictor_dim,
                   depth=m.predictor_depth, num_heads=m.predictor_num_heads,
                   grid=tuple(grid), mlp_ratio=m.mlp_ratio, attention=m.attention,
                   dtype=compute_dtype(m.dtype))


def ema_params(target, online, momentum):
  """Target-encoder update (BYOL / I-JEPA): θ_t <- m θ_t + (1 - m) θ_online."""
  return jax.tree.map(lambda t, o: momentum * t + (1.0 - momentum) * o, target, online)


def momentum_schedule(step, total_steps, start, end):
  """Linear EMA momentum from `start` to `end` over the run (I-JEPA: 0.996 -> 1.0)."""
  frac = jnp.clip(step / jnp.maximum(total_steps, 1), 0.0, 1.0)
  return start + (end - start) * frac
