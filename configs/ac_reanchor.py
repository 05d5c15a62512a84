"""Gentle + CVQ-VAE online re-anchoring of under-used codes every step, instead of interval refresh (Zheng & Vedaldi 2023)."""
import os

from jepa_jax import config_lib

gentle = config_lib.load_module(os.path.join(os.path.dirname(__file__), 'gentle.py'))


def get_config(arg=None):
  c = gentle.get_config()
  c.variant = 'ac_reanchor'
  c.vq.refresh_enabled = False
  c.vq.reanchor = True
  return gentle.base.apply_variant_arg(c, arg)
