"""Code assignment: how tokens meet codes, as pure functions.

The nearest code. `pairwise_sq_dist` is the one place the expansion
||a - b||^2 = ||a||^2 - 2 a.b + ||b||^2 is written (one matmul at full
float32 precision, `precision=HIGHEST`, so TPUs and GPUs do not round the
dot products to bfloat16 / tf32); `nearest_codes` (the VQ lookup, optionally
in memory-bounded tiles), k-means, refresh and re-anchoring
(`anticollapse`) and the assignment-entropy loss use it.

Beyond the nearest code, two remedies against codebook collapse that change how tokens meet codes,
rather than how codes are restarted (`anticollapse`) or updated (`vq`):

* `sinkhorn_codes`   balanced assignment: the codes of a batch come from an
                     entropic optimal-transport plan with uniform marginals
                     over the codes (a few Sinkhorn-Knopp iterations), then
                     the plan's row-wise argmax; Zhang et al. 2024, "Preventing
                     Local Pitfalls in Vector Quantization via Optimal
                     Transport" (OptVQ).
* `ibq_estimator`    index backpropagation: the layer's output is the chosen
                     code in value, and the gradient flows through a softmax
                     over every code's logit, so every code is trained each
                     step; Shi et al. 2024, "Taming Scalable Visual Tokenizer
                     for Autoregressive Image Generation" (IBQ).

`vq.quantizer` wires them in as `config.vq.assignment` and
`config.vq.estimator = 'ibq'` select. Everything here takes plain arrays and
static numbers, is jittable with static shapes and is deterministic (ties go
to the lowest code index).
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


# Assignment beyond the nearest code ----------------------------------------

# Log-mass of a row that carries no mass (a padded token): finite, so that
# logsumexp and the potentials stay free of inf - inf.
_NO_MASS = -1e30


def normalized_cost(u, codebook, weights=None):
  """OptVQ's cost matrix (N, K) for tokens u (N, d) and codes E (K, d):

    C_ik = ||u_i - E_k||                     (Euclidean, not squared)
    C'   = (C - mean(C)) / (std(C) + 1e-6)   (mean / std over every entry;
                                              over valid rows with weights)

  Standardising makes the entropic regulariser scale-free: the same
  epsilon behaves alike whatever the token scale. (OptVQ then subtracts
  min(C'), a constant shift that changes no Sinkhorn plan and is left out.)
  Source: Zhang et al. 2024 (OptVQ), "normalize_mode: all" of the authors'
  released configs. Stop-gradient'ed.
  """
  sg = jax.lax.stop_gradient
  u, e = sg(jnp.asarray(u, jnp.float32)), sg(jnp.asarray(codebook, jnp.float32))
  cost = jnp.sqrt(jnp.maximum(pairwise_sq_dist(u, e), 0.0))
  if weights is None:
    mean, std = jnp.mean(cost), jnp.std(cost)
  else:
    w = (sg(jnp.asarray(weights, jnp.float32)).reshape(-1) > 0).astype(jnp.float32)
    n = jnp.maximum(jnp.sum(w) * cost.shape[1], 1.0)
    mean = jnp.sum(w[:, None] * cost) / n
    std = jnp.sqrt(jnp.sum(w[:, None] * jnp.square(cost - mean)) / n)
  return (cost - mean) / (std + 1e-6)


def sinkhorn_log_plan(cost, epsilon: float, num_iters: int, weights=None):
  """log P (N, K) of the entropic OT plan between N tokens and K codes.

    P = argmin_{P 1 = a, P^T 1 = b} <P, C> - epsilon H(P)
    a_i = w_i / sum_j w_j   (1/N without weights; padded tokens, w_i = 0,
                             carry no mass),      b_k = 1 / K
    log P_ik = -C_ik / epsilon + alpha_i + beta_k   (`sinkhorn_potentials`)

  Each Sinkhorn iteration ends on the token marginal, which is then exact
  (sum_k P_ik = a_i); the code marginal approaches 1/K as the iterations go.
  """
  logits, alpha, beta = sinkhorn_potentials(cost, epsilon, num_iters, weights)
  return logits + alpha[:, None] + beta[None, :]


def sinkhorn_potentials(cost, epsilon: float, num_iters: int, weights=None):
  """(-C / epsilon (N, K), alpha (N,), beta (K,)): Sinkhorn-Knopp's scalings
  in the log domain, num_iters times from alpha = 0:

    beta_k  = log b_k - logsumexp_i(-C_ik / epsilon + alpha_i)   (codes)
    alpha_i = log a_i - logsumexp_k(-C_ik / epsilon + beta_k)    (tokens)

  with a, b the marginals of `sinkhorn_log_plan`. Log domain (Cuturi 2013,
  "Sinkhorn Distances"; Peyre & Cuturi 2019, Sec. 4.4), so a small epsilon
  does not underflow; num_iters is static (a fori_loop). Padded tokens get
  alpha = -1e30 (no mass). Source: Zhang et al. 2024 (OptVQ), Sec. 3 and the
  authors' iteration order (codes first, then samples; 5 iterations).
  """
  logits = -jnp.asarray(cost, jnp.float32) / epsilon               # (N, K)
  n, k = logits.shape
  if weights is None:
    log_a = jnp.full((n,), -jnp.log(float(n)), jnp.float32)
  else:
    w = jnp.asarray(weights, jnp.float32).reshape(-1)
    log_a = jnp.where(w > 0, jnp.log(jnp.where(w > 0, w, 1.0)) - jnp.log(
        jnp.maximum(jnp.sum(w), 1e-30)), _NO_MASS)
  log_b = -jnp.log(float(k))

  def body(_, carry):
    alpha = carry[0]
    beta = log_b - jax.nn.logsumexp(logits + alpha[:, None], axis=0)  # (K,)
    alpha = log_a - jax.nn.logsumexp(logits + beta[None, :], axis=1)  # (N,)
    return jnp.maximum(alpha, _NO_MASS), beta

  alpha0 = jnp.where(log_a > _NO_MASS, 0.0, _NO_MASS)
  alpha, beta = jax.lax.fori_loop(0, num_iters, body,
                                  (alpha0, jnp.zeros((k,), jnp.float32)))
  return logits, alpha, beta


def sinkhorn_codes(u, codebook, epsilon: float = 0.1, num_iters: int = 5,
                   weights=None) -> jax.Array:
  """Balanced codes (...,) int32 of tokens u (..., d) against codes E (K, d).

    C' = normalized_cost(u, E)           standardised Euclidean distances
    P  = Sinkhorn plan of C' with uniform code marginal 1/K (`sinkhorn_log_plan`)
    k_i = argmax_k P_ik                  (= argmin_k C'_ik - epsilon beta_k:
                                          the nearest code after a per-code
                                          offset that favours rarely chosen codes)

  A batch's tokens are thus spread over the codebook as evenly as the
  distances allow: as epsilon -> 0 with enough iterations and N a multiple
  of K, the codes are an optimal balanced assignment (min sum of costs with
  N/K tokens per code); a batch whose nearest codes are already balanced
  keeps them. It is not nearest-code assignment at any epsilon (as epsilon
  grows, beta_k -> mean_i C'_ik / epsilon + const, so each code's cost is
  measured against its mean cost over the batch). The assignment
  depends on the whole batch (it is a training-time assignment); weights
  (u's leading shape, >= 0) give padded tokens no mass. Stop-gradient'ed.
  Defaults are OptVQ's released configs (epsilon 10 there multiplies the
  cost, i.e. epsilon = 0.1 here; 5 iterations; hard argmax, use_prob=False).
  Source: Zhang et al. 2024 (OptVQ), Sec. 3.
  """
  e = jnp.asarray(codebook, jnp.float32)
  lead = jnp.shape(u)[:-1]
  uf = jnp.asarray(u, jnp.float32).reshape(-1, e.shape[-1])
  w = None if weights is None else jnp.asarray(weights, jnp.float32).reshape(-1)
  logits, _, beta = sinkhorn_potentials(normalized_cost(uf, e, w), epsilon,
                                        num_iters, w)
  # argmax_k P_ik = argmax_k (-C'_ik / epsilon + beta_k): alpha_i is constant
  # along the row (and -1e30 for padded tokens, which still get a code).
  return jnp.argmax(logits + beta[None, :], axis=-1).astype(jnp.int32).reshape(lead)


def ibq_estimator(u, codebook, codes, temperature: float = 1.0):
  """Index-backpropagation output (..., d): the chosen codes in value, the
  gradient through a softmax over every code.

    l_ik = -||u_i - E_k||^2 / T            every code's logit
    p_i  = softmax_k(l_i)
    h_i  = one_hot(k_i)                     k_i = codes (the nearest code,
                                            the argmax of l_i, or any given codes)
    q~_i = (h_i - sg(p_i) + p_i) E          computed as E_{k_i} + (p_i - sg(p_i)) E,
                                            so the value is exactly E_{k_i}

  Gradients: dq~/dE_k = h_ik I + (terms through p_ik), nonzero for every
  code with p_ik > 0, so unused codes are trained too; u receives the
  gradient only through the logits (no identity copy, unlike VQ-VAE's
  straight-through). IBQ computes its logits as dot products u . E_k; the
  negative squared distance equals 2 u . E_k - ||E_k||^2 up to a per-token
  constant, so T = 2 gives IBQ's logits up to a per-code bias -||E_k||^2 / 2,
  and its argmax is the nearest code (the codes, usage metrics and
  `quantizer.assign` are unchanged). Source: Shi et al. 2024 (IBQ), Sec. 3.2.
  """
  e = jnp.asarray(codebook, jnp.float32)
  u = jnp.asarray(u, jnp.float32)
  lead = u.shape[:-1]
  uf = u.reshape(-1, e.shape[-1])
  p = jax.nn.softmax(-pairwise_sq_dist(uf, e) / temperature, axis=-1)  # (N, K)
  soft = jnp.matmul(p - jax.lax.stop_gradient(p), e,
                    precision=jax.lax.Precision.HIGHEST)               # 0 in value
  chosen = jnp.take(e, jnp.asarray(codes).reshape(-1), axis=0)
  return (chosen + soft).reshape(*lead, e.shape[-1])


def code_marginal(log_plan) -> jax.Array:
  """(K,) sum_i P_ik of a plan given as log P (N, K): the mass each code gets
  (1/K each once Sinkhorn has converged)."""
  return jnp.sum(jnp.exp(log_plan), axis=0)
