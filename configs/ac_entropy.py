"""Gentle + the assignment-entropy regulariser (MAGVIT-v2's entropy penalty, Yu et al. 2023)."""
import os

from jepa_jax import config_lib

gentle = config_lib.load_module(os.path.join(os.path.dirname(__file__), 'gentle.py'))


def get_config(arg=None):
  c = gentle.get_config()
  c.variant = 'ac_entropy'
  c.loss.entropy_weight = 0.1
  c.loss.entropy_temperature = 10.0     # ~ the gap between near and 10th-nearest code distances
  return gentle.base.apply_variant_arg(c, arg)
