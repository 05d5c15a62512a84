"""Vector quantisation (VQ-VAE bottleneck) with an explicit, pure codebook state.

State
-----
All codebook state lives in one pytree, `VQState`, that the train step carries
and returns; nothing here keeps Python-side state and every function is
jittable (static shapes throughout, so `refresh` can sit inside `lax.cond`):

  codebook      (K, D)  e_k, the code vectors
  cluster_size  (K,)    N_k, EMA of the number of vectors assigned to code k
  embed_sum     (K, D)  m_k, EMA of the sum of the vectors assigned to code k
  usage         (K,)    assignments to code k counted since the last refresh
  step          ()      number of updates applied (`ema_update`/`count_usage`)
  usage_ema     (K,)    running average of code k's assignment share (CVQ
                        re-anchoring only; None, i.e. no leaf, otherwise)
  last_used     (K,)    int32: train steps taken when code k was last assigned
                        (0: never)   } codebook-health bookkeeping, kept by
  born          (K,)    int32: train steps taken when code k was last
                        (re)initialised (0: at the start)
  restarts      (K,)    int32: times code k was restarted by a refresh
                        } `quantizer.update_state`; None where a state is made
                        by the functions here (they carry them unchanged)

Quantisation (van den Oord et al. 2017, "Neural Discrete Representation
Learning", VQ-VAE): k(z) = argmin_k ||z - e_k||^2, z_q = e_{k(z)}, and the
straight-through estimator passes z_q forward and the identity backward.

EMA codebook updates (VQ-VAE appendix A.1; Razavi et al. 2019, VQ-VAE-2), with
n_k = #{i: k(z_i) = k} and s_k = sum_{i: k(z_i) = k} z_i over a batch:

  N_k <- decay * N_k + (1 - decay) * n_k
  m_k <- decay * m_k + (1 - decay) * s_k
  N'_k = (N_k + eps) / (sum_j N_j + K * eps) * sum_j N_j   (Laplace smoothing,
                                                            as in Sonnet's
                                                            VectorQuantizerEMA)
  e_k  = m_k / N'_k

Initialisation without zero-debiasing: Sonnet/Haiku start N = 0, m = 0 and
debias the EMAs (divide by 1 - decay^t). A code that no vector chooses in the
first batch then has m_k = 0 and becomes the zero vector. Here N_k = 1 and
m_k = e_k at initialisation, so m_k / N_k = e_k from the first step, no debias
is applied, and a code that is never chosen keeps its direction: its m_k and
N_k both shrink by `decay` each step (its norm only shrinks once decay^t N_k
comes near eps).

Dead-code refresh: `usage` counts assignments over a refresh window. Code k is
dead when usage_k < usage_threshold * mean_j usage_j (its share of the window's
assignments is below usage_threshold times the uniform share 1/K). `refresh`
re-initialises every dead code to a random encoder output of the current batch
(N_k = 1, m_k = that vector) and starts a new window (usage = 0).

Weights: `ema_update`, `count_usage`, `refresh` and `usage_stats` take an
optional `weights` array (same shape as codes, >= 0; typically 0/1 validity
flags for padded inputs). Vector i then counts w_i times (n_k = sum of w_i
over i with codes_i = k, s_k = sum of w_i z_i), and refresh draws only from
vectors with w_i > 0. Without weights every vector counts once; that path
is exactly the unweighted computation.

EMA vs gradient mode: the two modes differ only in which update the train step
calls after `quantize`. EMA mode calls `ema_update` and the codebook is not a
trainable. Gradient mode makes the codebook a trainable, adds the codebook
loss ||sg(z) - z_q||^2 (gradient reaches the codebook through
aux['quantized']) and calls `count_usage`, which only does the bookkeeping.
"""
from __future__ import annotations

from typing import Any, Dict, Hashable, Optional, Tuple

import flax
import jax
import jax.numpy as jnp

# The VQ lookup (re-exported: vq.nearest_codes), in assignment.py with the
# one squared-distance formula.
from jepa_jax.vq.assignment import nearest_codes


@flax.struct.dataclass
class VQState:
  """Codebook state of the VQ layer (see the module docstring)."""
  codebook: jax.Array      # (K, D) float32, the code vectors e_k
  cluster_size: jax.Array  # (K,) EMA cluster sizes N_k
  embed_sum: jax.Array     # (K, D) EMA embedding sums m_k
  usage: jax.Array         # (K,) float32 assignment counts in the refresh window
  step: jax.Array          # () int32, number of updates applied
  # (K,) running average of the assignment shares, only when CVQ re-anchoring
  # is on (`anticollapse.update_usage_ema`); None (no leaves) otherwise.
  usage_ema: Optional[jax.Array] = None
  # (K,) int32 codebook-health bookkeeping (see the module docstring); None
  # (no leaves) unless the quantizer layer made the state.
  last_used: Optional[jax.Array] = None
  born: Optional[jax.Array] = None
  restarts: Optional[jax.Array] = None


def init_state(rng, codebook_size: int, dim: int, scale: float = 1.0) -> VQState:
  """Fresh state: e_k ~ N(0, scale^2 I), N_k = 1, m_k = e_k, usage = 0, step = 0.

  Encoder outputs are LayerNorm-ed (about unit variance per dimension), so
  scale = 1 puts the codes where the data is. N = 1 and m = e make m / N = e
  from the start, which is what lets `ema_update` skip zero-debiasing.
  """
  codebook = scale * jax.random.normal(rng, (codebook_size, dim), jnp.float32)
  return VQState(
      codebook=codebook,
      cluster_size=jnp.ones((codebook_size,), jnp.float32),
      embed_sum=codebook,
      usage=jnp.zeros((codebook_size,), jnp.float32),
      step=jnp.zeros((), jnp.int32))


def quantize(state: VQState, z, max_elements: Optional[int] = None, codes=None
             ) -> Tuple[jax.Array, jax.Array, Dict[str, Any]]:
  """Quantise z (..., D) to its nearest codes with a straight-through gradient.

    k = argmin_k ||z - e_k||^2,   z_q = e_k,
    z_st = sg(z_q) + (z - sg(z))  (= z + sg(z_q - z), the VQ-VAE
                                   straight-through estimator)

  Forward value of z_st is exactly z_q (z - sg(z) is exactly 0, whereas
  z + (z_q - z) is only z_q up to rounding); d z_st / d z is the identity and
  z_st carries no gradient to the codebook. aux['quantized'] = z_q = e_k does
  carry the gradient to the chosen codebook rows, so the gradient-mode
  codebook loss ||sg(z) - z_q||^2 trains the codebook and the commitment loss
  ||z - sg(z_q)||^2 trains the encoder. aux['sq_distance'] (...,) is
  ||z - z_q||^2, a diagnostic (stop-gradient'ed). The state is not changed.
  `max_elements` bounds the distance block (see `nearest_codes`). `codes`
  (z's leading shape, int): use these codes instead of the nearest ones
  (e.g. `assignment.sinkhorn_codes`); aux['sq_distance'] is then
  ||z - e_codes||^2.

  Returns (z_st (..., D) float32, codes (...,) int32, aux).
  Source: van den Oord et al. 2017 (VQ-VAE), Eqs. 1-3.
  """
  z = jnp.asarray(z, jnp.float32)
  given = codes is not None
  if not given:
    codes, sq_dist = nearest_codes(jax.lax.stop_gradient(state.codebook),
                                   jax.lax.stop_gradient(z), max_elements)
  z_q = jnp.take(state.codebook, codes, axis=0)                    # (..., D)
  if given:
    sq_dist = jnp.sum(jnp.square(jax.lax.stop_gradient(z - z_q)), axis=-1)
  z_st = jax.lax.stop_gradient(z_q) + (z - jax.lax.stop_gradient(z))
  aux = {'quantized': z_q, 'sq_distance': sq_dist}
  return z_st, codes, aux


def _flat_weights(weights, num: int):
  """weights (any shape with `num` entries) -> (num,) float32, or None."""
  if weights is None:
    return None
  w = jax.lax.stop_gradient(jnp.asarray(weights, jnp.float32)).reshape(-1)
  if w.shape[0] != num:
    raise ValueError(f'weights have {w.shape[0]} entries, codes {num}')
  return w


def _batch_counts(codes, codebook_size: int, axis_name: Optional[Hashable],
                  weights=None):
  """n_k = #{i: codes_i = k} (or sum of w_i over those i) over all entries of
  codes, psum-ed over axis_name."""
  flat = jnp.asarray(codes).reshape(-1)
  w = _flat_weights(weights, flat.shape[0])
  n = jnp.zeros((codebook_size,), jnp.float32).at[flat].add(1.0 if w is None else w)
  if axis_name is not None:
    n = jax.lax.psum(n, axis_name)
  return n


def _laplace_smoothed_sizes(cluster_size, eps):
  """N'_k = (N_k + eps) / (sum_j N_j + K eps) * sum_j N_j.

  Additive (Laplace) smoothing of the cluster sizes: every N'_k >= eps *
  sum_j N_j / (sum_j N_j + K eps) > 0, so m_k / N'_k is finite, and the
  smoothed sizes still sum to sum_j N_j. Source: Sonnet's
  VectorQuantizerEMA (Razavi et al. 2019, VQ-VAE-2 reference code).
  """
  total = jnp.sum(cluster_size)
  k = cluster_size.shape[0]
  return (cluster_size + eps) / (total + k * eps) * total


def scheduled_decay(decay, rate):
  """EMA decay with its step size following the learning-rate schedule.

    decay_t = 1 - (1 - decay) * r_t,   r_t = lr_t / lr_peak after warm-up, 1 during it

  The EMA codebook update is online k-means with constant step size 1 - decay
  (e_k moves that fraction towards the batch mean of its tokens, and with
  n_k ~ 1 token per code per step the batch mean is a noisy target); with a
  constant step the codes never settle, they keep jittering around their
  cluster means. Online k-means converges with decreasing step sizes
  (MacQueen 1967; Bottou & Bengio 1995, "Convergence properties of the
  K-means algorithms"), so the codebook's step size decays as the encoder's
  does: fast tracking while the encoder moves, settled codes at the end.
  """
  return 1.0 - (1.0 - decay) * rate


def ema_update(state: VQState, z, codes, decay, eps=1e-5,
               axis_name: Optional[Hashable] = None, weights=None) -> VQState:
  """One EMA codebook update from a batch z (..., D) and its codes (...,).

    n_k = #{i: codes_i = k},   s_k = sum_{i: codes_i = k} z_i
    (with weights w (...,): n_k = sum_{i: codes_i = k} w_i,
     s_k = sum_{i: codes_i = k} w_i z_i, so a vector with w_i = 0, e.g.
     padding, changes nothing)
    (summed over all replicas with lax.psum when axis_name is given, so every
    replica applies the identical update)
    N_k  <- decay * N_k + (1 - decay) * n_k
    m_k  <- decay * m_k + (1 - decay) * s_k
    N'_k  = (N_k + eps) / (sum_j N_j + K eps) * sum_j N_j
    e_k   = m_k / N'_k
    usage_k += n_k,  step += 1

  No zero-debiasing (`init_state`): an unused code (n_k = 0) has m_k and N_k
  scaled by decay; it keeps its place while N_k >> eps, then (N'_k ~ eps)
  shrinks towards 0 by decay a step. All inputs are stop-gradient'ed.

  Source: van den Oord et al. 2017 (VQ-VAE), appendix A.1, Eqs. 6-8;
  Razavi et al. 2019 (VQ-VAE-2); Laplace smoothing as in Sonnet/Haiku's
  VectorQuantizerEMA.
  """
  sg = jax.lax.stop_gradient
  k, d = state.codebook.shape
  z = sg(jnp.asarray(z, jnp.float32)).reshape(-1, d)               # (N, D)
  flat = sg(jnp.asarray(codes)).reshape(-1)                        # (N,)
  decay = sg(jnp.asarray(decay, jnp.float32))
  w = _flat_weights(weights, flat.shape[0])
  if w is None:
    n = jnp.zeros((k,), jnp.float32).at[flat].add(1.0)             # n_k
    s = jnp.zeros((k, d), jnp.float32).at[flat].add(z)             # s_k
  else:
    n = jnp.zeros((k,), jnp.float32).at[flat].add(w)
    s = jnp.zeros((k, d), jnp.float32).at[flat].add(
        jnp.where(w[:, None] > 0, w[:, None] * z, 0.0))
  if axis_name is not None:
    n, s = jax.lax.psum((n, s), axis_name)
  cluster_size = decay * sg(state.cluster_size) + (1.0 - decay) * n
  embed_sum = decay * sg(state.embed_sum) + (1.0 - decay) * s
  smoothed = _laplace_smoothed_sizes(cluster_size, eps)
  codebook = embed_sum / smoothed[:, None]
  return state.replace(codebook=codebook, cluster_size=cluster_size,
                       embed_sum=embed_sum, usage=sg(state.usage) + n,
                       step=state.step + 1)


def count_usage(state: VQState, codes, axis_name: Optional[Hashable] = None,
                weights=None) -> VQState:
  """Gradient-mode bookkeeping: usage_k += n_k, step += 1.

  n_k = #{i: codes_i = k} (sum of w_i with weights; psum-ed over axis_name
  if given). The codebook, cluster_size and embed_sum are left as they are:
  in gradient mode the codebook changes only through the optimizer (VQ-VAE
  codebook loss).
  """
  n = _batch_counts(jax.lax.stop_gradient(codes), state.codebook.shape[0], axis_name,
                    weights)
  return state.replace(usage=state.usage + n, step=state.step + 1)


def dead_codes(state: VQState, usage_threshold) -> jax.Array:
  """Boolean mask (K,) of dead codes in the current refresh window.

    dead_k  <=>  usage_k < usage_threshold * mean_j usage_j
            <=>  usage_k / sum_j usage_j < usage_threshold * (1 / K)

  i.e. a code is dead when its share of the window's assignments is below
  usage_threshold times the uniform share. With no assignments counted yet
  (sum_j usage_j = 0) no code is dead.
  """
  usage = state.usage
  return (usage < usage_threshold * jnp.mean(usage)) & (jnp.sum(usage) > 0)


def refresh(state: VQState, z, rng, usage_threshold, weights=None) -> VQState:
  """Re-initialise dead codes to random batch vectors; start a new usage window.

  With dead = dead_codes(state, usage_threshold), z flattened to (N, D) and
  r_k ~ Uniform{0..N-1} i.i.d. (drawn from rng, with replacement; the same
  rng and gathered z give the same choice on every replica):
    e_k = z_{r_k},  N_k = 1,  m_k = z_{r_k}      for dead k
    e_k, N_k, m_k unchanged                      for live k
    usage = 0 for all k;  step unchanged
  With weights w (same leading shape as z), r_k is drawn with probability
  proportional to w instead, so vectors with w = 0 (padding) are never
  chosen. N_k = 1 and m_k = e_k is the same no-debias start as `init_state`. Static
  shapes (jnp.where over the whole codebook), so it is jittable and usable
  as a lax.cond branch.

  Dead-code restarts as in e.g. Dhariwal et al. 2020 (Jukebox) and
  Zeghidour et al. 2021 (SoundStream): replace rarely used codes with
  current encoder outputs.
  """
  k, d = state.codebook.shape
  dead = dead_codes(state, usage_threshold)
  zf = jax.lax.stop_gradient(jnp.asarray(z, jnp.float32)).reshape(-1, d)
  w = _flat_weights(weights, zf.shape[0])
  if w is None:
    rows = jax.random.randint(rng, (k,), 0, zf.shape[0])
  else:
    logits = jnp.where(w > 0, jnp.log(jnp.where(w > 0, w, 1.0)), -jnp.inf)
    rows = jax.random.categorical(rng, logits, shape=(k,))
  return restart_codes(state, dead, jnp.take(zf, rows, axis=0))


def restart_codes(state: VQState, dead, candidates) -> VQState:
  """e_k = c_k, N_k = 1, m_k = c_k for dead k (mask (K,)); others unchanged;
  usage = 0 (a new window); step unchanged. candidates c: (K, D).

  The replacement shared by `refresh` and other restart rules
  (`anticollapse.refresh_far`); jnp.where over the whole codebook, so static
  shapes.
  """
  dead_col = dead[:, None]
  return state.replace(
      codebook=jnp.where(dead_col, candidates, state.codebook),
      cluster_size=jnp.where(dead, jnp.ones_like(state.cluster_size),
                             state.cluster_size),
      embed_sum=jnp.where(dead_col, candidates, state.embed_sum),
      usage=jnp.zeros_like(state.usage))


def usage_stats(codes, codebook_size: int, axis_name: Optional[Hashable] = None,
                weights=None) -> Dict[str, jax.Array]:
  """Codebook usage of an array of code indices (any shape).

    c_k = #{i: codes_i = k} (psum-ed over axis_name if given, so the stats
          are those of the global batch; the sum of w_i over those i with
          weights: entries with w_i = 0, e.g. padding, are not a usage),
    p_k = c_k / sum_j c_j
    vq_codes_used  = #{k: c_k > 0}                       (float32)
    vq_usage_ratio = vq_codes_used / K
    vq_perplexity  = exp(-sum_k p_k ln p_k)   (0 ln 0 = 0; 1 = one code used,
                                               K = uniform use of all codes)
  """
  counts = _batch_counts(codes, codebook_size, axis_name, weights)
  used = jnp.sum((counts > 0).astype(jnp.float32))
  p = counts / jnp.maximum(jnp.sum(counts), 1.0)
  plogp = jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0)
  return {'vq_codes_used': used,
          'vq_usage_ratio': used / codebook_size,
          'vq_perplexity': jnp.exp(-jnp.sum(plogp))}


def state_from_codebook(codebook) -> VQState:
  """A fresh state around a given codebook: N_k = 1, m_k = e_k, usage = 0, step = 0.

  The same no-debias start as `init_state` (m / N = e from the first step), for
  a codebook that comes from elsewhere (e.g. `kmeans_init`).
  """
  codebook = jnp.asarray(codebook, jnp.float32)
  k = codebook.shape[0]
  return VQState(codebook=codebook,
                 cluster_size=jnp.ones((k,), jnp.float32),
                 embed_sum=codebook + 0.0,      # its own buffer (donation-safe)
                 usage=jnp.zeros((k,), jnp.float32),
                 step=jnp.zeros((), jnp.int32))


def kmeans_init(rng, z, num_codes: int, num_iters: int = 10) -> jax.Array:
  """Codebook (num_codes, D) from vectors z (N, D): k-means++ seeding, then Lloyd.

  Seeding (Arthur & Vassilvitskii 2007, "k-means++"): c_1 = z_r with r uniform;
  then for j = 2..K, with d_i = min_{l<j} ||z_i - c_l||^2,
    c_j = z_r,  P(r = i) = d_i / sum_n d_n
  (uniform when every d_i = 0, i.e. fewer distinct vectors than codes).
  Lloyd (k-means) iterations: assign k(z_i) = argmin_k ||z_i - c_k||^2, then
    c_k <- mean_{i: k(z_i) = k} z_i      (c_k unchanged when no z_i chose it).
  Pure and jittable with static shapes (num_codes and num_iters static); the
  result is a function of (rng, z) alone.
  """
  z = jax.lax.stop_gradient(jnp.asarray(z, jnp.float32))
  n, d = z.shape
  k_first, k_rest = jax.random.split(rng)
  first = z[jax.random.randint(k_first, (), 0, n)]
  centers = jnp.zeros((num_codes, d), jnp.float32).at[0].set(first)
  dist = jnp.sum((z - first) ** 2, axis=-1)                          # d_i

  def seed_one(j, carry):
    centers, dist = carry
    total = jnp.sum(dist)
    logits = jnp.where(total > 0,
                       jnp.where(dist > 0, jnp.log(jnp.where(dist > 0, dist, 1.0)),
                                 -jnp.inf),
                       jnp.zeros_like(dist))
    pick = z[jax.random.categorical(jax.random.fold_in(k_rest, j), logits)]
    centers = centers.at[j].set(pick)
    return centers, jnp.minimum(dist, jnp.sum((z - pick) ** 2, axis=-1))

  centers, _ = jax.lax.fori_loop(1, num_codes, seed_one, (centers, dist))

  def lloyd(_, centers):
    codes, _ = nearest_codes(centers, z)
    counts = jnp.zeros((num_codes,), jnp.float32).at[codes].add(1.0)
    sums = jnp.zeros((num_codes, d), jnp.float32).at[codes].add(z)
    means = sums / jnp.maximum(counts, 1.0)[:, None]
    return jnp.where(counts[:, None] > 0, means, centers)

  return jax.lax.fori_loop(0, num_iters, lloyd, centers)
