"""Gentle + 8-d cosine codes + CVQ online re-anchoring (Zheng & Vedaldi 2023),
element-mean VQ losses, no refresh.

Tokens are projected to 8 dims and l2-normalised, quantized against 768 unit
codes (EMA, decay 0.95) and projected back; every step, codes whose running
usage share is far below uniform are pulled towards batch tokens
(`vq.reanchor_*`), instead of being restarted at intervals.
"""
from configs import base, gentle


def build():
  c = gentle.build()
  c.variant = 'reanchor8'
  c.vq.codebook_dim = 8
  c.vq.l2_normalize = True
  c.vq.refresh_enabled = False
  c.vq.reanchor = True
  c.vq.loss_reduction = 'mean'
  return c


def get_config(arg=None):
  return base.with_variant(build(), arg)
