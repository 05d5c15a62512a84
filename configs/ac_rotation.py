"""Gentle + the rotation-trick gradient estimator instead of straight-through (Fifty et al. 2024)."""
import os

from jepa_jax import config_lib

gentle = config_lib.load_module(os.path.join(os.path.dirname(__file__), 'gentle.py'))


def get_config(arg=None):
  c = gentle.get_config()
  c.variant = 'ac_rotation'
  c.vq.estimator = 'rotation'
  return gentle.base.apply_variant_arg(c, arg)
