"""Losses on prototype scores, with Sinkhorn-Knopp-balanced targets: pure,
jittable functions of arrays (formula and source in each docstring).

* `dino_loss`      - DINO's self-distillation of one image-level score vector
                     per view, DINOv2's Sinkhorn-Knopp centring of the teacher.
* `init_capi`,
  `capi_targets`,
  `capi_losses`    - CAPI's masked prediction of the target encoder's online
                     token clusters, and the clustering's own loss.

Inputs of lower precision are upcast to float32 (`losses._f32`); weights are
per-row validity flags as in `losses` (0: the row carries no teacher mass
and no loss).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jepa_jax.objective.losses import _f32, _weighted_mean, l2_normalize
from jepa_jax.vq import assignment

# --------------------------------------------------------------------------
# Self-distillation (DINO)
# --------------------------------------------------------------------------

DINO_SINKHORN_ITERS = 3     # DINOv2's Sinkhorn-Knopp iterations on the teacher


def _balanced_targets(scores, temperature, num_iters, weights=None):
  """q (N, K), no gradient: the Sinkhorn-Knopp plan of exp(scores / T) with
  uniform marginals (`assignment.sinkhorn_log_plan`), rows renormalised."""
  log_plan = assignment.sinkhorn_log_plan(-jax.lax.stop_gradient(_f32(scores)), temperature,
                                          num_iters, weights)
  return jax.lax.stop_gradient(jax.nn.softmax(log_plan, axis=-1))


def _soft_cross_entropy(q, logits, temperature, weights):
  """Mean over rows of -sum_k q_k log softmax_k(logits / temperature)
  (weighted by `weights` when given)."""
  ce = -jnp.sum(q * jax.nn.log_softmax(_f32(logits) / temperature, axis=-1), axis=-1)
  return jnp.mean(ce) if weights is None else _weighted_mean(ce, weights)


def dino_loss(student_logits, teacher_logits, student_temperature,
              teacher_temperature, weights=None, num_iters=DINO_SINKHORN_ITERS):
  """DINO's cross-entropy of the student's prototype scores against the
  teacher's, the teacher centred by Sinkhorn-Knopp over the batch.

  student_logits, teacher_logits: (N, K), one row per image (scores of K
  prototypes, e.g. `model.vit.ProjectionHead`'s cosines).

      Q = Sinkhorn-Knopp plan of exp(teacher_logits / tau_t) with uniform
          marginals (every image mass 1/N, every prototype 1/K; num_iters
          iterations, `assignment.sinkhorn_log_plan`), rows renormalised:
      q_i = Q_i / sum_k Q_ik                (no gradient)
      loss = mean_i  -sum_k q_ik log softmax_k(student_logits_i / tau_s)

  The teacher is sharpened (tau_t < tau_s) and centred: where DINO subtracts
  a running mean of the teacher's scores, DINOv2 balances the prototypes
  within the batch by Sinkhorn-Knopp (from SwAV), which needs no state.
  With weights w (N,): rows with w_i = 0 carry no teacher mass and no loss;
  the loss is sum_i w_i CE_i / sum_i w_i.

  Sources: Caron et al. 2021, "Emerging Properties in Self-Supervised Vision
  Transformers" (DINO), eq. 1 (tau_s = 0.1, tau_t = 0.04); Oquab et al. 2024,
  "DINOv2", Sec. 4 (Sinkhorn-Knopp centring, 3 iterations); Caron et al.
  2020, "Unsupervised Learning of Visual Features by Contrasting Cluster
  Assignments" (SwAV), Sec. 3.1.
  """
  q = _balanced_targets(teacher_logits, teacher_temperature, num_iters, weights)
  return _soft_cross_entropy(q, student_logits, student_temperature, weights)


# --------------------------------------------------------------------------
# Cluster and predict (CAPI)
# --------------------------------------------------------------------------

CAPI_SINKHORN_ITERS = 3     # CAPI's default `n_sk_iter`
CAPI_HEAD_INIT_STD = 0.02   # the student head's init (its columns are normalised)


def init_capi(key, dim: int, clusters: int):
  """CAPI's trainables for a `dim`-wide encoder and `clusters` clusters:
  'clusters' (dim, K) ~ N(0, 1) and 'clusters_bias' (K,) = 0, the online
  clustering of the target encoder's tokens; 'head' (dim, K) ~ N(0, 0.02^2),
  the student's head on the predictor's outputs (Darcet et al. 2025's
  initialisations)."""
  k_c, k_h = jax.random.split(key)
  return {'clusters': jax.random.normal(k_c, (dim, clusters), jnp.float32),
          'clusters_bias': jnp.zeros((clusters,), jnp.float32),
          'head': CAPI_HEAD_INIT_STD * jax.random.truncated_normal(
              k_h, -2.0, 2.0, (dim, clusters), jnp.float32)}


def capi_targets(params, t_full, target_temperature, valid=None,
                 num_iters=CAPI_SINKHORN_ITERS):
  """(l, q): the online clustering's scores l (B, N, K) of the tokens t_full
  (B, N, D; no gradient reaches them) and their Sinkhorn-balanced targets q
  (B, N, K, no gradient; rows sum to 1), as `capi_losses` defines them;
  argmax_k q_bnk is token (b, n)'s cluster. valid (B, N): tokens with 0
  carry no mass."""
  logits = l2_normalize(_f32(jax.lax.stop_gradient(t_full))) @ params['clusters']
  logits = logits + params['clusters_bias']
  q = jax.vmap(lambda s, w: _balanced_targets(s, target_temperature, num_iters, w),
               in_axes=(1, None if valid is None else 1), out_axes=1)(logits, valid)
  return logits, q                   # one Sinkhorn-Knopp plan per position


def capi_losses(params, pred, t_full, tgt_idx, valid=None, tgt_valid=None,
                temperatures=(0.12, 0.06, 0.12), num_iters=CAPI_SINKHORN_ITERS):
  """CAPI's two losses: {'capi': the student's, 'capi_clustering': the
  clustering's}.

  pred (B, M, T, D): the predictor's outputs at the target positions
  tgt_idx (B, M, T); t_full (B, N, D): the target encoder's tokens of the
  whole image (no gradient); `params`: `init_capi`'s; valid (B, N) and
  tgt_valid (B, M, T): validity flags of padded data (None: all valid);
  temperatures (tau_s, tau_t, tau_c): student, target, clustering.

      l_bn = normalise(t_bn) C + c                  (the clustering's scores)
      q_.n = Sinkhorn-Knopp plan of exp(l_.n / tau_t) over the B tokens at
             position n (`assignment.sinkhorn_log_plan`, num_iters
             iterations, codes balanced), rows renormalised; no gradient
      capi_clustering = mean_bn  -sum_k q_bnk log softmax_k(l_bn / tau_c)
      s_bmt = normalise(pred_bmt) normalise_columns(H)       (cosines)
      capi  = mean_bmt -sum_k q_b,idx(bmt),k log softmax_k(s_bmt / tau_s)

  The clustering's loss trains only (C, c) (t is the target encoder's, no
  gradient); the student's trains the context encoder, predictor and H
  (the targets q carry no gradient). Sinkhorn per position, as CAPI's
  default (`positionwise_sk`), so no position's tokens can own a cluster.

  Source: Darcet et al. 2025, "Cluster and Predict Latent Patches for
  Improved Masked Image Modeling" (CAPI), Sec. 3 and the authors' defaults
  (tau_s = tau_c = 0.12, tau_t = 0.06, 3 Sinkhorn-Knopp iterations).
  """
  tau_s, tau_t, tau_c = temperatures
  b, m, t, _ = pred.shape
  logits, q = capi_targets(params, t_full, tau_t, valid, num_iters)
  k = logits.shape[-1]
  w_tok = None if valid is None else valid.reshape(-1)
  clustering = _soft_cross_entropy(q.reshape(-1, k), logits.reshape(-1, k), tau_c, w_tok)
  q_tgt = jnp.take_along_axis(q, tgt_idx.reshape(b, m * t)[..., None], axis=1)
  scores = l2_normalize(_f32(pred)) @ l2_normalize(params['head'], axis=0)
  w_tgt = None if tgt_valid is None else tgt_valid.reshape(-1)
  student = _soft_cross_entropy(q_tgt.reshape(-1, k), scores.reshape(-1, k), tau_s, w_tgt)
  return {'capi': student, 'capi_clustering': clustering}
