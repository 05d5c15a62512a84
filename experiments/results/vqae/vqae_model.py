"""Encoder and decoder of the VQ autoencoder in `experiments.results.vqae.vqae` (8x8 digits,
a 4x4 grid of tokens, one per 2x2 patch)."""
from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from jepa_jax.model import vit


def patchify(x, p: int = 2):
  """(B, H, W, 1) -> (B, H/p, W/p, p*p): each token's p x p pixels."""
  b, h, w, _ = x.shape
  return vit.patches(x, p).reshape(b, h // p, w // p, p * p)


def unpatchify(t, p: int = 2):
  """Inverse of `patchify`: (B, h, w, p*p) -> (B, h*p, w*p, 1)."""
  b, h, w, _ = t.shape
  t = t.reshape(b, h, w, p, p).transpose(0, 1, 3, 2, 4)
  return t.reshape(b, h * p, w * p, 1)


class Encoder(nn.Module):
  """(B, 8, 8, 1) -> (B, 16, D): 2x2 patches, dense, conv 3x3 over the 4x4
  token grid (a token sees 6x6 pixels), dense to D [, LayerNorm]."""
  dim: int
  width: int
  token_norm: bool

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Dense(self.width)(patchify(x)))
    x = nn.relu(nn.Conv(self.width, (3, 3))(x))
    x = nn.Dense(self.dim)(x)
    if self.token_norm:
      x = nn.LayerNorm()(x)
    return x.reshape(x.shape[0], -1, self.dim)


class Decoder(nn.Module):
  """(B, 16, D) -> (B, 8, 8, 1): dense, conv 3x3 over the token grid, dense
  to each token's 2x2 pixels."""
  width: int

  @nn.compact
  def __call__(self, t):
    b, n, d = t.shape
    side = int(round(n ** 0.5))
    x = nn.relu(nn.Dense(self.width)(t.reshape(b, side, side, d)))
    x = nn.relu(nn.Conv(self.width, (3, 3))(x))
    return unpatchify(nn.Dense(4)(x))


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def init_model(dim: int, width: int, token_norm: bool, key):
  """Encoder and decoder params; jitted once per shape, shared by every config."""
  k_enc, k_dec = jax.random.split(key)
  enc = Encoder(dim, width, token_norm).init(k_enc, jnp.zeros((1, 8, 8, 1), jnp.float32))
  dec = Decoder(width).init(k_dec, jnp.zeros((1, 16, dim), jnp.float32))
  return enc, dec
