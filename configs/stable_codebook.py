"""A codebook that is used and settles, without restarts: gentle + 8-d cosine
codes + CVQ online re-anchoring + an EMA step size that follows the learning
rate, element-mean VQ losses.

Tokens are projected to 8 dims and l2-normalised, quantized against 768 unit
codes and projected back (ViT-VQGAN's factorized, l2-normalised codes, Yu et
al. 2022). Codes whose running usage share is far below uniform are pulled
towards batch tokens every step (Zheng & Vedaldi 2023), instead of being
restarted at intervals: no refresh. The EMA update is online k-means; with a
constant step size (1 - 0.95) its codes keep jittering around their cluster
means and tokens keep changing code, so its step size decays with the
learning rate after warm-up (`vq.ema_decay_schedule='learning_rate'`;
MacQueen 1967, Bottou & Bengio 1995).
"""
from configs import base, reanchor8


def build():
  c = reanchor8.build()                  # 8-d cosine codes, re-anchoring, element means
  c.variant = 'stable_codebook'
  c.vq.ema_decay_schedule = 'learning_rate'
  return c


def get_config(arg=None):
  return base.with_variant(build(), arg)
