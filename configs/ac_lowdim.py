"""Gentle + a low-dimensional codebook space: project in to 8 dims, quantize, project out (ViT-VQGAN's factorized codes)."""
import os

from jepa_jax import config_lib

gentle = config_lib.load_module(os.path.join(os.path.dirname(__file__), 'gentle.py'))


def get_config(arg=None):
  c = gentle.get_config()
  c.variant = 'ac_lowdim'
  c.vq.codebook_dim = 8
  return gentle.base.apply_variant_arg(c, arg)
