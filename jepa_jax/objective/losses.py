"""JEPA training losses as pure, jittable functions.

Every loss takes arrays (and, for SIGReg, a PRNG key) and returns a float32
scalar. Inputs of lower precision (bf16) are upcast to float32 first, so the
reductions and the softmax run in float32. Nothing here holds state: the
learnable InfoNCE temperature and the VQ codebook live in the train state and
are passed in.

Contents (formula and source in each docstring):

* `infonce_loss`      - InfoNCE / CPC contrastive loss, pred -> target.
* `epps_pulley`,
  `sigreg_directions`,
  `sigreg_loss`       - LeJEPA's sliced Epps-Pulley regulariser (SIGReg).
* `invariance_loss`   - VICReg's invariance (MSE) term.
* `views_prediction_loss`,
  `views_sigreg_loss` - LeJEPA's own terms on V views of each image.
* `relational_loss`   - relational (pairwise cosine-similarity) matching.
* `pixel_loss`        - MAE's regression of normalised target-patch pixels.
* `commitment_loss`,
  `codebook_loss`     - the two VQ-VAE bottleneck terms.

Weights: every loss takes an optional `weights` argument, one non-negative
weight per row (per sample for `relational_loss`), typically 0/1 validity
flags for padded inputs (ARC grids on a fixed canvas). Rows with weight 0
then contribute nothing, neither as a term nor as an InfoNCE negative nor to
the SIGReg statistics: for 0/1 weights each loss equals the unweighted loss
of the valid rows alone. Without weights the original computation runs
unchanged.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


_NORM_EPS = 1e-6


def _f32(x):
  """Upcast to at least float32 (bf16/f16 -> f32; f32/f64 unchanged)."""
  x = jnp.asarray(x)
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _weighted_mean(values, weights):
  """sum_i w_i v_i / sum_i w_i (0 when all weights are 0); values, weights (N,)."""
  w = _f32(weights)
  return jnp.sum(w * values) / jnp.maximum(jnp.sum(w), jnp.finfo(jnp.float32).tiny)


def l2_normalize(x, axis=-1, eps=_NORM_EPS):
  """x / max(||x||, eps) along `axis`; finite value and gradient at x = 0."""
  sq = jnp.sum(jnp.square(x), axis=axis, keepdims=True)
  return x * jax.lax.rsqrt(jnp.maximum(sq, eps * eps))


# --------------------------------------------------------------------------
# InfoNCE
# --------------------------------------------------------------------------


def infonce_loss(pred, target, temperature, weights=None):
  """InfoNCE (CPC) loss with cosine-similarity logits, pred -> target.

  pred, target: (N, D); row i of `pred` and row i of `target` are a positive
  pair, every other row of `target` is a negative for pred row i.

      p_i = pred_i / ||pred_i||,   t_j = target_j / ||target_j||   (eps-safe)
      logits_ij = <p_i, t_j> / temperature
      loss = -(1/N) sum_i log softmax_j(logits_i)_i
           = mean_i CE(logits_i, label = i)

  The loss is one-directional (pred -> target only: the softmax runs over
  targets for each prediction; there is no symmetric target -> pred term).

  With weights w (N,): rows with w_j = 0 are dropped as negatives
  (logits_ij = -1e30 for every i) and the loss is sum_i w_i CE_i / sum_i w_i.

  `temperature` is a scalar jax value and the gradient flows to it: it is a
  learnable parameter. It is NOT clipped here; clipping to
  [temperature_min, temperature_max] is applied to the parameter after the
  optimizer update, so inside the loss it is used as given.

  Source: van den Oord, Li & Vinyals 2018, "Representation Learning with
  Contrastive Predictive Coding" (InfoNCE), in the form used by the reference
  PyTorch JEPA (normalised embeddings, learnable temperature).
  """
  p = l2_normalize(_f32(pred))
  t = l2_normalize(_f32(target))
  logits = (p @ t.T) / _f32(temperature)
  if weights is None:
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.mean(jnp.diagonal(log_probs))
  w = _f32(weights)
  logits = jnp.where((w > 0)[None, :], logits, -1e30)
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  return -_weighted_mean(jnp.diagonal(log_probs), w)


# --------------------------------------------------------------------------
# SIGReg (LeJEPA)
# --------------------------------------------------------------------------


def _ep_nodes(num_points, t_max):
  """Nodes t_k on [0, t_max] and weights for integrating an even function
  times exp(-t^2/2) over [-t_max, t_max] with the trapezoid rule.

  Trapezoid weights on [0, t_max] are (dt/2, dt, ..., dt, dt/2); doubling for
  the mirrored half [-t_max, 0] gives (dt, 2dt, ..., 2dt, dt). The Gaussian
  weight w(t) = exp(-t^2/2) is folded into the weights.
  """
  if num_points < 2:
    raise ValueError(f'num_points must be >= 2, got {num_points}')
  t = jnp.linspace(0.0, t_max, num_points, dtype=jnp.float32)
  dt = t_max / (num_points - 1)
  quad = jnp.full((num_points,), 2.0 * dt, jnp.float32).at[0].set(dt).at[-1].set(dt)
  phi = jnp.exp(-0.5 * jnp.square(t))
  return t, phi, quad * phi


def _epps_pulley_columns(y, num_points, t_max, row_weights=None):
  """Epps-Pulley statistic of every column of y (N, M) -> (M,).

  With row_weights w (N,) the empirical characteristic function is the
  w-weighted mean over rows and N is replaced by sum_n w_n.
  """
  n = y.shape[0]
  t, phi, weights = _ep_nodes(num_points, t_max)
  yt = y[..., None] * t                               # (N, M, P)
  if row_weights is None:
    re = jnp.mean(jnp.cos(yt), axis=0)                # Re phi_N(t), (M, P)
    im = jnp.mean(jnp.sin(yt), axis=0)                # Im phi_N(t), (M, P)
  else:
    w = _f32(row_weights)
    n = jnp.sum(w)
    w_norm = (w / jnp.maximum(n, jnp.finfo(jnp.float32).tiny))[:, None, None]
    re = jnp.sum(w_norm * jnp.cos(yt), axis=0)
    im = jnp.sum(w_norm * jnp.sin(yt), axis=0)
  err = jnp.square(re - phi) + jnp.square(im)         # |phi_N(t) - phi(t)|^2
  return n * (err @ weights)


def epps_pulley(y, num_points=17, t_max=3.0):
  """Epps-Pulley normality statistic of a 1-D sample y (N,) against N(0, 1).

      EP(y) = N * integral_{-t_max}^{t_max} |phi_N(t) - phi(t)|^2 w(t) dt
      phi_N(t) = (1/N) sum_n exp(i t y_n)    (empirical characteristic fn.)
      phi(t)   = exp(-t^2/2)                 (standard normal char. fn.)
      w(t)     = exp(-t^2/2)

  Because y is real, phi_N(-t) = conj(phi_N(t)) and phi is real and even, so
  the integrand (Re phi_N - phi)^2 + (Im phi_N)^2 is even: it is integrated
  with the trapezoid rule on `num_points` equally spaced nodes over
  [0, t_max] and doubled. The integrand is bounded by 4 w(t), so the value
  and gradient are bounded for any input.

  Source: Epps & Pulley 1983; used per slice by SIGReg in Balestriero &
  LeCun 2025, "LeJEPA".
  """
  y = _f32(y)
  if y.ndim != 1:
    raise ValueError(f'epps_pulley expects a 1-D sample, got shape {y.shape}')
  return _epps_pulley_columns(y[:, None], num_points, t_max)[0]


def sigreg_directions(rng, dim, num_slices):
  """(dim, num_slices) matrix whose columns are random unit directions.

  Columns are standard normal draws divided by their norm, i.e. uniform on
  the unit sphere. A pure function of `rng`: the same key gives the same
  slices on every replica.
  """
  a = jax.random.normal(rng, (dim, num_slices), jnp.float32)
  return a / jnp.linalg.norm(a, axis=0, keepdims=True)


def sigreg_loss(x, rng, num_slices=256, num_points=17, t_max=3.0, weights=None):
  """SIGReg: Sketched Isotropic Gaussian Regularisation (LeJEPA).

  x: (N, D) embeddings, rng: PRNG key for the slice directions.

      a_1..a_M ~ Uniform(S^{D-1})  (M = num_slices, drawn from rng)
      SIGReg(x) = (1/M) sum_m EP(x a_m)

  with EP the Epps-Pulley statistic of `epps_pulley` (trapezoid rule on
  `num_points` nodes over [0, t_max], doubled by symmetry, w(t) = e^{-t^2/2},
  scaled by N). By Cramer-Wold, matching every 1-D projection to N(0, 1)
  matches x to N(0, I): SIGReg is O(1) (about sqrt(2 pi) - sqrt(2 pi / 3)
  ~ 1.06 per slice in expectation) for N(0, I) samples and O(N) for collapsed
  ones. Gradients flow to x only; the directions are constants of rng.
  With weights w (N,), EP uses the w-weighted empirical characteristic
  function and sum_n w_n in place of N (0/1 weights: SIGReg of the valid rows).

  Source: Balestriero & LeCun 2025, "LeJEPA: Provable and Scalable
  Self-Supervised Learning Without the Heuristics" (arXiv:2511.08544).
  Checked against the paper's statistic and the authors' released code
  (rbalestr-lab/lejepa: `EppsPulley`, `SlicingUnivariateTest`, MINIMAL.md):
  same statistic, same half-line trapezoid with doubled weights and
  w(t) = exp(-t^2/2) folded in, same x N scaling, same Gaussian-normalised
  directions, same mean over slices, same defaults (t_max=3, 17 nodes).
  Differences: (1) the reference draws directions from a torch generator
  seeded by a synchronised global-step counter; here they come from the
  caller's `rng` (the train step folds in the step), which gives the same
  property (identical slices on every replica, new slices every step).
  (2) Under DDP the reference all-reduces the empirical characteristic
  function over ranks and scales by the global N; here x is whatever batch
  the caller passes (the global batch under jit/SPMD). (3) The paper's
  formula integrates over [-t_max, t_max] directly; the code (and this
  function) uses the equivalent even-symmetry form on [0, t_max].
  """
  x = _f32(x)
  if x.ndim != 2:
    raise ValueError(f'sigreg_loss expects (N, D) embeddings, got shape {x.shape}')
  a = sigreg_directions(rng, x.shape[-1], num_slices)
  return jnp.mean(_epps_pulley_columns(x @ a, num_points, t_max, weights))


# --------------------------------------------------------------------------
# Invariance and relational terms
# --------------------------------------------------------------------------


def invariance_loss(pred, target, weights=None):
  """VICReg's invariance term on the JEPA pair: mean squared error.

      loss = (1/(N D)) sum_{n,d} (pred_nd - target_nd)^2

  i.e. the mean over rows and dimensions (with weights w (N,):
  sum_n w_n mean_d (pred_nd - target_nd)^2 / sum_n w_n). The caller applies stop_gradient to
  the target (EMA target encoder); nothing is stopped here.

  Source: Bardes, Ponce & LeCun 2022, "VICReg" (invariance term s(Z, Z')).
  """
  sq = jnp.square(_f32(pred) - _f32(target))
  if weights is None:
    return jnp.mean(sq)
  return _weighted_mean(jnp.mean(sq, axis=-1), weights)


def views_prediction_loss(proj, num_global=None):
  """LeJEPA's prediction term: every view's embedding regressed onto the mean
  embedding of its image's global views, the gradient passing through both.

      c_bd = (1/G) sum_{v < G} z_vbd
      loss = (1/(V B d)) sum_{v,b,d} (c_bd - z_vbd)^2

  proj: (V, B, d), the V views' projected embeddings of B images, the G =
  `num_global` global views first (None: G = V, every view global, as in the
  authors' minimal example); the others are the paper's local views, regressed
  onto the centre without entering it. Source: Balestriero & LeCun 2025,
  "LeJEPA" (arXiv:2511.08544), Sec. 5 (the prediction loss), and
  rbalestr-lab/lejepa MINIMAL.md and README (2 global and 6 local views).
  """
  z = _f32(proj)
  g = z.shape[0] if num_global is None else num_global
  return jnp.mean(jnp.square(jnp.mean(z[:g], axis=0, keepdims=True) - z))


def views_sigreg_loss(proj, rng, num_slices=256, num_points=17, t_max=3.0):
  """SIGReg of each view's embeddings over the batch, averaged over views:

      (1/V) sum_v SIGReg(proj_v)        (proj (V, B, d); `sigreg_loss`)

  with the same slice directions for every view (one key), as LeJEPA
  regularises each view's batch of embeddings (same sources as
  `views_prediction_loss`).
  """
  return jnp.mean(jax.vmap(lambda x: sigreg_loss(x, rng, num_slices, num_points, t_max))(
      _f32(proj)))


def pixel_loss(pred, patches, weights=None, eps=1e-6):
  """MAE's pixel target: the mean squared error of predicted pixels against
  each target patch's pixels normalised by that patch's own mean and variance.

      t_n = (x_n - mean(x_n)) / sqrt(var(x_n) + eps)     (x_n: patch n's P values)
      loss = (1/(N P)) sum_{n,p} (pred_np - t_np)^2

  pred, patches: (N, P); weights (N,) as `invariance_loss`. Source: He et al.
  2022, "Masked Autoencoders Are Scalable Vision Learners", Sec. 3
  ("normalized pixels as target", their `norm_pix_loss`, eps 1e-6).
  """
  x = _f32(jax.lax.stop_gradient(patches))
  mu = jnp.mean(x, axis=-1, keepdims=True)
  t = (x - mu) * jax.lax.rsqrt(jnp.var(x, axis=-1, keepdims=True) + eps)
  return invariance_loss(pred, t, weights)


def _cosine_similarity_matrix(x):
  xn = l2_normalize(x)
  return xn @ xn.T


def relational_loss(a, b, weights=None):
  """Relational matching of the pairwise cosine-similarity structure.

  a, b: (B, D), one embedding per sample (the same B samples, e.g. pooled
  predictions and pooled targets). It compares how the samples relate to
  each other within each set, not the embeddings themselves:

      S_a[i, j] = cos(a_i, a_j),  S_b[i, j] = cos(b_i, b_j)   (B x B)
      loss = (1/(B(B-1))) sum_{i != j} (S_a[i, j] - S_b[i, j])^2

  The diagonal (always 1 in both) is excluded. The loss is invariant to a
  rotation or positive rescaling of either set. With B = 1 there are no
  pairs and the loss is 0. With per-sample weights w (B,), pair (i, j)
  weighs w_i w_j: loss = sum_{i != j} w_i w_j (S_a - S_b)_ij^2 /
  sum_{i != j} w_i w_j (0 with fewer than two weighted samples).

  Source: Park, Kim, Lu & Cho 2019, "Relational Knowledge Distillation"
  (angle/distance-wise relational losses); this is the cosine-similarity
  matrix variant with a squared error, as in the reference JEPA.
  """
  a, b = _f32(a), _f32(b)
  if a.shape != b.shape or a.ndim != 2:
    raise ValueError(f'relational_loss expects two (B, D) arrays of equal shape, '
                     f'got {a.shape} and {b.shape}')
  n = a.shape[0]
  diff = _cosine_similarity_matrix(a) - _cosine_similarity_matrix(b)
  off_diag = 1.0 - jnp.eye(n, dtype=diff.dtype)
  if weights is None:
    return jnp.sum(jnp.square(diff) * off_diag) / max(n * (n - 1), 1)
  w = _f32(weights)
  pair = w[:, None] * w[None, :] * off_diag
  return jnp.sum(jnp.square(diff) * pair) / jnp.maximum(
      jnp.sum(pair), jnp.finfo(jnp.float32).tiny)


# --------------------------------------------------------------------------
# VQ bottleneck
# --------------------------------------------------------------------------


REDUCTIONS = ('sum', 'mean')


def _row_sq_dist(u, v, weights=None, reduction='sum'):
  """Squared error of u and v (..., D), reduced over D by `reduction`
  ('sum': sum over D; 'mean': mean over D) and then averaged over all leading
  dims (a w-weighted mean with weights of the leading shape)."""
  if reduction not in REDUCTIONS:
    raise ValueError(f'reduction must be one of {REDUCTIONS}, got {reduction!r}')
  sq = jnp.square(_f32(u) - _f32(v))
  rows = jnp.sum(sq, axis=-1) if reduction == 'sum' else jnp.mean(sq, axis=-1)
  if weights is None:
    return jnp.mean(rows)
  return _weighted_mean(rows.reshape(-1), jnp.reshape(weights, (-1,)))


def commitment_loss(z, z_q, weights=None, reduction='sum'):
  """VQ-VAE commitment term (without its beta): ||z - sg(z_q)||^2 per row.

  z: encoder outputs (..., D); z_q: their quantized codes (same shape).

      'mean':  mean over all elements of (z - sg(z_q))^2
               = (1/D) mean_rows ||z - sg(z_q)||^2
      'sum':   mean_rows ||z - sg(z_q)||^2  (summed over D: D times 'mean')

  'mean' is the field's convention: PyTorch `F.mse_loss(z, z_q.detach())`
  in the VQ-VAE reference code, Sonnet's and Haiku's `VectorQuantizer(EMA)`
  (`mean((sg(q) - z)**2)`). 'sum' is this project's earlier convention, kept
  so runs that used it stay reproducible (`vq.loss_reduction`). Gradient
  reaches z only (z_q is stop-gradiented); the caller multiplies by the
  commitment cost beta. Optional weights (z's leading shape) make the average
  over rows a weighted one.

  Source: van den Oord, Vinyals & Kavukcuoglu 2017, "Neural Discrete
  Representation Learning" (VQ-VAE), third term of Eq. 3.
  """
  return _row_sq_dist(z, jax.lax.stop_gradient(z_q), weights, reduction)


def codebook_loss(z, z_q, weights=None, reduction='sum'):
  """VQ-VAE codebook term: ||sg(z) - z_q||^2 per row.

  Same reductions ('mean' = element mean, the field's convention; 'sum' over
  D) and weights as `commitment_loss`; gradient reaches z_q (and through it
  the codebook) only. Used when the codebook is trained by gradient rather
  than by EMA updates.

  Source: van den Oord et al. 2017 (VQ-VAE), second term of Eq. 3.
  """
  return _row_sq_dist(jax.lax.stop_gradient(z), z_q, weights, reduction)
