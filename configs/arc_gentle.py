"""Gentle VQ (Option B) on ARC-AGI-1 grids; sized to train on a 2-core CPU in < 15 min."""
import os

from jepa_jax import config_lib

gentle = config_lib.load_module(os.path.join(os.path.dirname(__file__), 'gentle.py'))


def get_config(arg=None):
  c = gentle.get_config()
  gentle.base.apply_arc(c)
  c.variant = 'arc_gentle'
  c.train.num_epochs = 12
  return gentle.base.apply_variant_arg(c, arg)
