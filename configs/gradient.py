"""Gradient VQ (the reference's Option C): gentle, but the codebook is trained by the optimizer."""
from configs import base, gentle


def build():
  c = gentle.build()
  c.variant = 'gradient'
  c.vq.ema_decay = None                  # codebook loss + optimizer instead of EMA
  return c


def get_config(arg=None):
  return base.with_variant(build(), arg)
