"""Squared Euclidean distances between two sets of vectors, and the nearest
code of each vector.

`pairwise_sq_dist` is the one place the expansion
||a - b||^2 = ||a||^2 - 2 a.b + ||b||^2 is written (one matmul at full
float32 precision, `precision=HIGHEST`, so TPUs and GPUs do not round the
dot products to bfloat16 / tf32); `nearest_codes` (the VQ lookup, optionally
in memory-bounded tiles), k-means, refresh and re-anchoring
(`anticollapse`) and the assignment-entropy loss use it.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import jax
import jax.numpy as jnp

_HIGHEST = jax.lax.Precision.HIGHEST


def pairwise_sq_dist(a, b, a_sq=None, b_sq=None):
  """D_ij = ||a_i||^2 - 2 a_i.b_j + ||b_j||^2 for a (N, D), b (K, D): (N, K).

  a_sq (N, 1) and b_sq (K,) are the squared norms when the caller has them
  (e.g. computed once outside a loop over tiles), else computed here. The
  expansion can come out slightly negative for (near-)equal vectors.
  """
  if a_sq is None:
    a_sq = jnp.sum(a * a, axis=-1, keepdims=True)
  if b_sq is None:
    b_sq = jnp.sum(b * b, axis=-1)
  return a_sq - 2.0 * jnp.matmul(a, b.T, precision=_HIGHEST) + b_sq[None, :]


def _tile_search(zf, codebook, code_tile):
  """Running (min, argmin) over code tiles of `code_tile` codes: (N,), (N,).

  Per tile: d = ||z||^2 - 2 z.e + ||e||^2 for that tile's codes only; a later
  tile replaces the running best only when strictly closer, and argmin
  takes the first minimum inside a tile, so ties resolve to the lowest code
  index exactly as a single argmin over all codes does.
  """
  k, dim = codebook.shape
  num_tiles = -(-k // code_tile)
  pad = num_tiles * code_tile - k
  e_sq = jnp.sum(codebook * codebook, axis=-1)
  # Padded codes get distance +inf, so they are never chosen.
  e_sq = jnp.concatenate([e_sq, jnp.full((pad,), jnp.inf, jnp.float32)])
  cb = jnp.concatenate([codebook, jnp.zeros((pad, dim), jnp.float32)])
  cb = cb.reshape(num_tiles, code_tile, dim)
  e_sq = e_sq.reshape(num_tiles, code_tile)
  z_sq = jnp.sum(zf * zf, axis=-1, keepdims=True)

  def body(carry, tile):
    best_d, best_i = carry
    i, c, c_sq = tile
    d = pairwise_sq_dist(zf, c, z_sq, c_sq)
    local_i = jnp.argmin(d, axis=-1)
    local_d = jnp.take_along_axis(d, local_i[:, None], axis=-1)[:, 0]
    better = local_d < best_d
    return (jnp.where(better, local_d, best_d),
            jnp.where(better, local_i.astype(jnp.int32) + i * code_tile, best_i)), None

  n = zf.shape[0]
  init = (jnp.full((n,), jnp.inf, jnp.float32), jnp.zeros((n,), jnp.int32))
  (best_d, best_i), _ = jax.lax.scan(
      body, init, (jnp.arange(num_tiles, dtype=jnp.int32), cb, e_sq))
  return best_i, best_d


def nearest_codes(codebook, z, max_elements: Optional[int] = None
                  ) -> Tuple[jax.Array, jax.Array]:
  """Nearest code of each vector: k(z) = argmin_k ||z - e_k||^2.

  ||z - e_k||^2 is expanded as ||z||^2 - 2 z.e_k + ||e_k||^2 (one matmul,
  run at full float32 precision). z: (..., D); codebook: (K, D).
  Returns codes (...,) int32 and the squared distance ||z - e_k||^2 to the
  chosen code (...,) float32, computed directly from the difference.

  Memory bound: with `max_elements=None` the full (N, K) distance matrix is
  built. Otherwise no distance block larger than `max_elements` floats is
  materialised: tokens are processed in chunks (`lax.map`) and, inside a
  chunk, codes in tiles with a running minimum (`lax.scan`). Ties resolve to
  the lowest code index in both paths, so the results are the same.

  Source: van den Oord et al. 2017 (VQ-VAE), Eq. 1.
  """
  codebook = jnp.asarray(codebook, jnp.float32)
  z = jnp.asarray(z, jnp.float32)
  lead = z.shape[:-1]
  zf = z.reshape(-1, z.shape[-1])                                  # (N, D)
  n, k = zf.shape[0], codebook.shape[0]
  if max_elements is None or n * k <= max_elements:
    dist = pairwise_sq_dist(zf, codebook)                          # (N, K)
    codes = jnp.argmin(dist, axis=-1).astype(jnp.int32)            # (N,)
  else:
    if max_elements < 1:
      raise ValueError(f'max_elements must be >= 1, got {max_elements}')
    # Square-ish blocks: codes in tiles of ~sqrt(max_elements) (all codes if
    # fewer), as many tokens per chunk as the bound then allows.
    code_tile = min(k, max(1, math.isqrt(max_elements)))
    token_chunk = max(1, min(n, max_elements // code_tile))
    num_chunks = -(-n // token_chunk)
    zp = jnp.concatenate(
        [zf, jnp.zeros((num_chunks * token_chunk - n, zf.shape[1]), jnp.float32)])
    codes, _ = jax.lax.map(lambda zc: _tile_search(zc, codebook, code_tile),
                           zp.reshape(num_chunks, token_chunk, -1))
    codes = codes.reshape(-1)[:n]
  # The reported distance is recomputed directly, ||z - e_k||^2, for the
  # chosen codes: exact (no cancellation) and the same in both paths.
  sq = jnp.sum(jnp.square(zf - jnp.take(codebook, codes, axis=0)), axis=-1)
  return codes.reshape(lead), sq.reshape(lead)
