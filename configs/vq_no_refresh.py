"""VQ without refresh: sixth-run settings, refresh off, 30 epochs (reference diagnostic)."""
import os

from jepa_jax import config_lib

sixth_run = config_lib.load_module(os.path.join(os.path.dirname(__file__), 'sixth_run.py'))


def get_config(arg=None):
  c = sixth_run.get_config()
  c.variant = 'vq_no_refresh'
  c.vq.refresh_enabled = False
  c.train.num_epochs = 30
  return sixth_run.base.apply_variant_arg(c, arg)
