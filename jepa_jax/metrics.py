"""Embedding-quality metrics (jittable, jnp): effective rank and isotropy.

Both take a (N, D) matrix of embeddings, one row per sample, and return a
float32 scalar. They are diagnostics, computed without gradients in mind.
"""
from __future__ import annotations

import jax.numpy as jnp


def _as_matrix(x, name):
  x = jnp.asarray(x)
  x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  if x.ndim != 2:
    raise ValueError(f'{name} expects (N, D) embeddings, got shape {x.shape}')
  return x


def effective_rank(x, eps=1e-7):
  """RankMe effective rank of x (N, D), in [1, min(N, D)] (approximately).

      sigma = singular values of x   (x is NOT centered)
      p_k = sigma_k / sum_j sigma_j + eps
      erank = exp(-sum_k p_k log p_k)

  The exponential of the entropy of the normalised singular-value spectrum:
  about min(N, D) when the spectrum is flat (well-spread embeddings), about 1
  for a rank-1 matrix. The eps keeps log finite for zero singular values (it
  adds a tiny positive bias of order min(N, D) * eps * log(1/eps)). An all-
  zero x has no spectrum; its sum of singular values is floored at the
  smallest normal float so the result stays finite (~1) instead of NaN.

  Source: Garrido, Balestriero, Najman & LeCun 2023, "RankMe: Assessing the
  Downstream Performance of Pretrained Self-Supervised Representations by
  Their Rank"; effective rank of Roy & Vetterli 2007.
  """
  x = _as_matrix(x, 'effective_rank')
  s = jnp.linalg.svd(x, compute_uv=False)
  total = jnp.maximum(jnp.sum(s), jnp.finfo(s.dtype).tiny)
  p = s / total + eps
  return jnp.exp(-jnp.sum(p * jnp.log(p)))


def isotropy(x, eps=1e-12):
  """Isotropy of x (N, D): lambda_min / lambda_max of its covariance, in [0, 1].

      xc = x - mean_n(x)
      C = xc^T xc / (N - 1)                  (D x D)
      lambda = eigvalsh(C)
      isotropy = clip(lambda_min / max(lambda_max, eps), 0, 1)

  1 means the embedding cloud has the same variance in every direction;
  it is ~0 as soon as any single direction has (nearly) collapsed.

  Why this ratio: it is scale-free (multiplying x by a constant does not
  change it), it is exactly 0 when the embeddings lose a dimension (any
  zero-variance direction, including N - 1 < D), and it is the
  inverse condition number of the covariance, the quantity the reference
  PyTorch JEPA reports: near-degenerate embedding spaces there come out
  around 1e-5, which this metric reproduces on the same scale, whereas
  entropy-style measures (e.g. `effective_rank`) barely move when one
  direction out of many collapses. Tiny negative eigenvalues from float
  round-off are clipped, so the result stays in [0, 1].
  """
  x = _as_matrix(x, 'isotropy')
  n = x.shape[0]
  xc = x - jnp.mean(x, axis=0, keepdims=True)
  cov = (xc.T @ xc) / max(n - 1, 1)
  lam = jnp.linalg.eigvalsh(cov)                 # ascending
  ratio = lam[0] / jnp.maximum(lam[-1], eps)
  return jnp.clip(ratio, 0.0, 1.0)
