"""PROVISIONAL combination, replaced after the exploration."""
import os

from jepa_jax import config_lib

gentle = config_lib.load_module(os.path.join(os.path.dirname(__file__), 'gentle.py'))


def get_config(arg=None):
  c = gentle.get_config()
  c.variant = 'anticollapse'
  c.vq.l2_normalize = True
  c.vq.codebook_dim = 8
  c.vq.refresh_enabled = False
  c.vq.reanchor = True
  return gentle.base.apply_variant_arg(c, arg)
