"""Gentle + k-means++ codebook initialisation from the encoder's token embeddings at step 0 (SoundStream; VQGAN-LC)."""
import os

from jepa_jax import config_lib

gentle = config_lib.load_module(os.path.join(os.path.dirname(__file__), 'gentle.py'))


def get_config(arg=None):
  c = gentle.get_config()
  c.variant = 'ac_kmeans'
  c.vq.init = 'kmeans'
  return gentle.base.apply_variant_arg(c, arg)
