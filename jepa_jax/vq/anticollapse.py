"""Anti-collapse options for the VQ bottleneck, as pure functions.

Each option is a function over arrays or the explicit `vq.VQState`, so it can
be composed with the EMA or gradient updates and tested on its own;
`jepa_jax.vq.quantizer` wires them into the train step as `config.vq` selects:

* `l2_normalize_state`   cosine codes: unit-norm codebook (use with unit-norm
                         inputs); Yu et al. 2022 (ViT-VQGAN), §3.2.
* `rotation_trick`       gradient estimator that rotates, instead of copies,
                         the gradient from q to z; Fifty et al. 2024.
* `update_usage_ema`,
  `reanchor`             CVQ-VAE's online clustered re-anchoring of under-used
                         codes toward their nearest batch features;
                         Zheng & Vedaldi 2023.
* `refresh_due`          warm-up schedule of dead-code refresh: a short
                         interval for the first steps, then the normal one.
* `refresh_far`          dead-code restarts on distinct batch vectors drawn
                         in proportion to their squared distance from the
                         live codes (k-means++ D² sampling without
                         replacement).
* `assignment_entropy_loss`  per-sample confidence and batch diversity of soft
                         code assignments; the entropy penalty of
                         Yu et al. 2023 (MAGVIT-v2, LFQ).
* `simvq_codebook`       SimVQ's reparameterised codebook: a frozen random
                         basis times a learned linear map; Zhu et al. 2024.
* `fsq_quantize`         finite scalar quantization, a codebook-free
                         quantizer with the same (z_st, codes, aux) interface;
                         Mentzer et al. 2023.
"""
from __future__ import annotations

from typing import Any, Dict, Hashable, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from jepa_jax.vq import codebook as vq_lib
from jepa_jax.vq.assignment import pairwise_sq_dist

_EPS = 1e-6


def l2_normalize(x, eps: float = _EPS):
  """x / max(||x||, eps) over the last axis."""
  x = jnp.asarray(x, jnp.float32)
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, -1, keepdims=True), eps * eps))


def l2_normalize_state(state: vq_lib.VQState) -> vq_lib.VQState:
  """Cosine VQ: e_k <- e_k / ||e_k||, m_k <- e_k N_k (statistics kept consistent).

  With unit-norm inputs, ||z - e||^2 = 2 - 2 cos(z, e): the nearest code is the
  most similar direction and no code can drift away in norm (ViT-VQGAN §3.2).
  Applied after every codebook update.
  """
  e = l2_normalize(state.codebook)
  return state.replace(codebook=e, embed_sum=e * state.cluster_size[:, None])


def rotation_trick(z, q):
  """q̃ = sg(λR) z with R the rotation taking z/‖z‖ to q/‖q‖, λ = ‖q‖/‖z‖.

  Forward value is q (λRz = q). Backward, the gradient at q̃ reaches z through
  (λR)^T instead of being copied as by the straight-through estimator, so the
  angle between a gradient and its vector is preserved (Fifty et al. 2024,
  "Restructuring Vector Quantization with the Rotation Trick", Eq. 4):

      R v = v − 2 r (r·v) + 2 q̂ (ẑ·v),   r = (ẑ + q̂)/‖ẑ + q̂‖.

  z, q: (..., D). No gradient reaches q (use the codebook/commitment losses).
  """
  z = jnp.asarray(z, jnp.float32)
  q = jax.lax.stop_gradient(jnp.asarray(q, jnp.float32))
  zs = jax.lax.stop_gradient(z)
  z_norm = jnp.sqrt(jnp.maximum(jnp.sum(zs * zs, -1, keepdims=True), _EPS ** 2))
  q_norm = jnp.sqrt(jnp.maximum(jnp.sum(q * q, -1, keepdims=True), _EPS ** 2))
  z_hat, q_hat = zs / z_norm, q / q_norm
  r = l2_normalize(z_hat + q_hat)
  lam = q_norm / z_norm
  dot = lambda a, b: jnp.sum(a * b, -1, keepdims=True)  # noqa: E731
  return lam * (z - 2.0 * r * dot(r, z) + 2.0 * q_hat * dot(z_hat, z))


def update_usage_ema(state: vq_lib.VQState, codes, decay: float,
                     axis_name: Optional[Hashable] = None, weights=None
                     ) -> vq_lib.VQState:
  """Running average of the codes' assignment shares, the usage measure of
  CVQ-VAE's re-anchoring (Zheng & Vedaldi 2023, Eq. 8):

      p_k = n_k / Σ_j n_j                 (this batch's share of code k)
      ū_k ← decay · ū_k + (1 − decay) · p_k

  n_k counts the batch's assignments to code k (Σ of w_i with weights, psum-ed
  over axis_name, so every replica holds the same ū). `state.usage_ema` must
  be an array (K,) (`quantizer.init_state` starts it at 0, as CVQ does).
  """
  n = vq_lib._batch_counts(jax.lax.stop_gradient(codes),  # noqa: SLF001
                           state.codebook.shape[0], axis_name, weights)
  p = n / jnp.maximum(jnp.sum(n), 1.0)
  return state.replace(usage_ema=decay * state.usage_ema + (1.0 - decay) * p)


def reanchor(state: vq_lib.VQState, z, strength: float = 10.0,
             eps: float = 1e-3, share=None, threshold: Optional[float] = None,
             weights=None) -> vq_lib.VQState:
  """CVQ-style online re-anchoring of under-used codes (Zheng & Vedaldi 2023).

  With s_k the code's usage share (`share`, e.g. the running average
  `state.usage_ema`; by default usage_k / Σ usage over the current window;
  uniform share 1/K), each code moves toward its anchor, the batch feature
  nearest to it:

      α_k = exp(−s_k · K · strength − eps)     (0 when K s_k >= threshold)
      e_k ← (1 − α_k) e_k + α_k · argmin_{z_i} ‖z_i − e_k‖
      m_k ← e_k N_k                           (EMA statistics stay consistent)

  A code with no assignments moves (almost) fully onto a live feature; a code
  at the uniform share moves by exp(−strength), and not at all when
  `threshold` (a multiple of the uniform share) is given and reached. CVQ-VAE
  uses the running share with decay γ = 0.99 and strength 10 / (1 − γ).
  Unlike interval refresh this is continuous, every step; the train step's
  bookkeeping counts a move with α_k >= `REANCHOR_RESTART_RATE` as a restart. With the default
  window share, nothing moves before any assignment is counted.
  z: (..., D) current-batch encoder outputs (stop-gradient'ed); weights
  (z's leading shape): features with w_i = 0 (padding) are never anchors.
  """
  zf = jax.lax.stop_gradient(jnp.asarray(z, jnp.float32)).reshape(-1, z.shape[-1])
  alpha = reanchor_rates(state, strength, eps, share, threshold)[:, None]
  # Nearest batch feature of every code: the same search with the roles swapped.
  if weights is None:
    nearest, _ = vq_lib.nearest_codes(zf, state.codebook)           # (K,)
  else:
    w = jax.lax.stop_gradient(jnp.asarray(weights, jnp.float32)).reshape(-1)
    d = pairwise_sq_dist(state.codebook, zf)                         # (K, N)
    nearest = jnp.argmin(jnp.where(w[None] > 0, d, jnp.inf), axis=-1)
  anchors = jnp.take(zf, nearest, axis=0)
  e = (1.0 - alpha) * state.codebook + alpha * anchors
  return state.replace(codebook=e, embed_sum=e * state.cluster_size[:, None])


def reanchor_rates(state: vq_lib.VQState, strength: float = 10.0,
                   eps: float = 1e-3, share=None,
                   threshold: Optional[float] = None):
  """The re-anchoring rates α_k (K,) of `reanchor` (same arguments):

      α_k = exp(−s_k · K · strength − eps),  0 when K s_k >= threshold,
      and 0 for every code while the default window share has no count.
  """
  k = state.codebook.shape[0]
  if share is None:
    total = jnp.sum(state.usage)
    share = state.usage / jnp.maximum(total, 1.0)
    active = total > 0
  else:
    share = jax.lax.stop_gradient(jnp.asarray(share, jnp.float32))
    active = True
  alpha = jnp.where(active, jnp.exp(-share * k * strength - eps), 0.0)
  if threshold is not None:
    alpha = jnp.where(share * k < threshold, alpha, 0.0)
  return alpha


# A re-anchoring step that moves a code at least this far (α_k) onto a batch
# feature replaces what the code stood for: the codebook-health bookkeeping
# counts it as a restart, as it counts a refresh.
REANCHOR_RESTART_RATE = 0.5


def refresh_due(step, interval: int, warmup_steps: int = 0,
                warmup_interval: int = 1):
  """Whether dead-code refresh fires after train step `step` (0-based, traced):

      due(t) = (t + 1) mod warmup_interval == 0     if t < warmup_steps
               (t + 1) mod interval == 0            otherwise

  With warmup_steps = 0 this is the plain interval schedule. Early in a run
  the encoder moves fast and codes restarted on its outputs go stale within an
  epoch; restarting the codes unused in a short window during the first steps
  (the usage window then spans `warmup_interval` steps) keeps the codebook on
  the moving data, and the normal interval takes over after. A pure function
  of the step (a scalar bool for `lax.cond`), so the run compiles once.
  Dead-code restarts: Dhariwal et al. 2020 (Jukebox), Zeghidour et al. 2021
  (SoundStream); the schedule is ours.
  """
  plain = (step + 1) % interval == 0
  if not warmup_steps:
    return plain
  warm = (step + 1) % warmup_interval == 0
  return jnp.where(step < warmup_steps, warm, plain)


def refresh_due_host(step: int, interval: int, warmup_steps: int = 0,
                     warmup_interval: int = 1) -> bool:
  """`refresh_due` for a Python int step, on the host (no device work, so the
  loop can plan its measurement points without a sync)."""
  every = warmup_interval if step < warmup_steps else interval
  return (step + 1) % every == 0


def refresh_far(state: vq_lib.VQState, z, rng, usage_threshold,
                weights=None) -> vq_lib.VQState:
  """Dead-code refresh onto distinct batch vectors far from the live codes.

  dead = `vq.dead_codes`(state, usage_threshold); for the batch vectors z_i
  (z flattened to (N, D)) the squared distance to the nearest live code,
      d_i = min_{k live} ||z_i − e_k||²     (d_i = 1 when no code is live),
  and a sample without replacement with P ∝ d_i by Gumbel-top-k
  (Kool et al. 2019, "Stochastic Beams and Where to Find Them"):
      s_i = log max(d_i, 1e-12) + g_i,  g_i ~ Gumbel(0, 1)  (−inf for w_i = 0)
      order = argsort(−s);   the r-th dead code (r = 0, 1, ... by index)
      restarts on z_{order[r mod M]},  M = #{i: w_i > 0}
  (distinct vectors as long as there are no more dead codes than vectors),
  then e_k = z, N_k = 1, m_k = z for dead k and usage = 0, exactly as
  `vq.refresh` (`vq.restart_codes`). Vectors the live codes already cover
  (d_i ≈ 0) are rarely chosen, and no two dead codes share a vector, unlike
  `vq.refresh`'s uniform draw with replacement. The D² weighting is
  k-means++ seeding (Arthur & Vassilvitskii 2007) with the live codes as the
  centres already chosen.
  """
  k, d = state.codebook.shape
  dead = vq_lib.dead_codes(state, usage_threshold)
  zf = jax.lax.stop_gradient(jnp.asarray(z, jnp.float32)).reshape(-1, d)
  cb = jax.lax.stop_gradient(state.codebook)
  dist = pairwise_sq_dist(zf, cb)                                   # (N, K)
  dist = jnp.maximum(jnp.where(dead[None, :], jnp.inf, dist), 0.0)
  nearest_live = jnp.where(jnp.all(dead), 1.0, jnp.min(dist, axis=-1))   # (N,)
  score = jnp.log(jnp.maximum(nearest_live, 1e-12)) + jax.random.gumbel(
      rng, nearest_live.shape, jnp.float32)
  if weights is None:
    valid = zf.shape[0]
  else:
    w = vq_lib._flat_weights(weights, zf.shape[0])  # noqa: SLF001
    score = jnp.where(w > 0, score, -jnp.inf)
    valid = jnp.maximum(jnp.sum(w > 0), 1)
  order = jnp.argsort(-score)                                       # (N,)
  rank = jnp.cumsum(dead.astype(jnp.int32)) - 1                     # (K,)
  rows = jnp.take(order, jnp.maximum(rank, 0) % valid)
  return vq_lib.restart_codes(state, dead, jnp.take(zf, rows, axis=0))


def assignment_entropy_loss(z, codebook, temperature: float = 1.0, weights=None):
  """mean_i H(p_i) − H(mean_i p_i), p_i = softmax_k(−‖z_i − e_k‖² / T).

  The first term asks each vector for a confident assignment, the second
  (subtracted) rewards spreading the batch over many codes: its minimum is
  −log K when assignments are one-hot and uniform over the codebook (entropy
  penalty of MAGVIT-v2's lookup-free quantizer, Yu et al. 2023, Eq. 5).
  Natural logs. z: (..., D); codebook: (K, D). Gradient reaches z and the
  codebook. With weights w (z's leading shape, >= 0) both means are
  w-weighted, so rows with w_i = 0 (padding) count for nothing.
  """
  zf = jnp.asarray(z, jnp.float32).reshape(-1, z.shape[-1])
  cb = jnp.asarray(codebook, jnp.float32)
  d = pairwise_sq_dist(zf, cb)
  logp = jax.nn.log_softmax(-d / temperature, axis=-1)
  p = jnp.exp(logp)
  h = -jnp.sum(p * logp, -1)                                        # (N,)
  if weights is None:
    per_sample, mean_p = jnp.mean(h), jnp.mean(p, 0)
  else:
    w = jax.lax.stop_gradient(jnp.asarray(weights, jnp.float32)).reshape(-1)
    w = w / jnp.maximum(jnp.sum(w), jnp.finfo(jnp.float32).tiny)
    per_sample, mean_p = jnp.sum(w * h), jnp.sum(w[:, None] * p, 0)
  batch = -jnp.sum(mean_p * jnp.log(jnp.maximum(mean_p, 1e-12)))
  return per_sample - batch


def simvq_codebook(basis, linear):
  """SimVQ (Zhu et al. 2024, "Addressing Representation Collapse in Vector
  Quantized Models with One Linear Layer"): codes = C W, with C (K, d) a frozen
  random basis and W (d, d) learned. Every gradient step on W moves the whole
  codebook, so no code is left behind. `basis` is stop-gradient'ed.
  """
  return jax.lax.stop_gradient(jnp.asarray(basis, jnp.float32)) @ linear


# --------------------------------------------------------------------------
# Finite scalar quantization
# --------------------------------------------------------------------------


def fsq_codebook_size(levels: Sequence[int]) -> int:
  """Number of implicit codes, Π_l L_l (e.g. (8, 8, 4, 3) -> 768)."""
  return int(np.prod(levels))


def fsq_quantize(z, levels: Sequence[int]) -> Tuple[jax.Array, jax.Array, Dict[str, Any]]:
  """Finite scalar quantization (Mentzer et al. 2023, "Finite Scalar
  Quantization: VQ-VAE Made Simple", §3):

      half_l = (L_l − 1)/2,  offset_l = 0.5 if L_l even else 0,
      shift_l = atanh(offset_l / half_l)
      b = tanh(z + shift) · half − offset          (bounded to L_l values)
      q = round_ste(b) / ⌊L_l / 2⌋                   (in [−1, 1])
      code = Σ_l idx_l · Π_{m<l} L_m,   idx_l = round(b_l) + ⌊L_l/2⌋ ∈ [0, L_l)

  z: (..., len(levels)). Returns (q (..., d) with a straight-through gradient,
  codes (...,) int32 in [0, Π L), aux {'quantized': q}). There is no state:
  the implicit codebook is the grid, so there is nothing to collapse.
  """
  levels_a = jnp.asarray(levels, jnp.float32)
  z = jnp.asarray(z, jnp.float32)
  half = (levels_a - 1.0) / 2.0
  offset = jnp.where(jnp.asarray(levels) % 2 == 0, 0.5, 0.0)
  shift = jnp.arctanh(offset / half)
  bounded = jnp.tanh(z + shift) * half - offset
  rounded = bounded + jax.lax.stop_gradient(jnp.round(bounded) - bounded)
  half_width = jnp.floor(levels_a / 2.0)
  q = rounded / half_width
  # Integer level index in [0, L_l): round(b) lies in [−⌊L/2⌋, ⌈L/2⌉ − 1].
  idx = jnp.round(jax.lax.stop_gradient(bounded)) + half_width
  basis = jnp.asarray(np.concatenate([[1], np.cumprod(levels[:-1])]), jnp.float32)
  codes = jnp.sum(idx * basis, -1).astype(jnp.int32)
  return q, codes, {'quantized': q}
