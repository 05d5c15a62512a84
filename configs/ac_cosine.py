"""Gentle + cosine codes: l2-normalised codebook and inputs (ViT-VQGAN, Yu et al. 2022)."""
import os

from jepa_jax import config_lib

gentle = config_lib.load_module(os.path.join(os.path.dirname(__file__), 'gentle.py'))


def get_config(arg=None):
  c = gentle.get_config()
  c.variant = 'ac_cosine'
  c.vq.l2_normalize = True
  return gentle.base.apply_variant_arg(c, arg)
