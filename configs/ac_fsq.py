"""Gentle with FSQ instead of the codebook: levels (8, 8, 4, 3) = 768 implicit codes (Mentzer et al. 2023).

FSQ has no codebook: no EMA statistics, refresh or commitment loss."""
import os

from jepa_jax import config_lib

gentle = config_lib.load_module(os.path.join(os.path.dirname(__file__), 'gentle.py'))


def get_config(arg=None):
  c = gentle.get_config()
  c.variant = 'ac_fsq'
  c.vq.quantizer = 'fsq'
  c.vq.fsq_levels = (8, 8, 4, 3)
  c.vq.refresh_enabled = False
  c.vq.commitment_cost = 0.0
  return gentle.base.apply_variant_arg(c, arg)
