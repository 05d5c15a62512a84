"""Gradient VQ (the reference's Option C): gentle, but the codebook is trained by the optimizer."""
import os

from jepa_jax import config_lib

gentle = config_lib.load_module(os.path.join(os.path.dirname(__file__), 'gentle.py'))


def get_config(arg=None):
  c = gentle.get_config()
  c.variant = 'gradient'
  c.vq.ema_decay = None                  # codebook loss + optimizer instead of EMA
  return gentle.base.apply_variant_arg(c, arg)
