"""No VQ: the same JEPA with the quantizer switched off, 30 epochs (reference baseline)."""
import os

from jepa_jax import config_lib

vq_no_refresh = config_lib.load_module(
    os.path.join(os.path.dirname(__file__), 'vq_no_refresh.py'))


def get_config(arg=None):
  c = vq_no_refresh.get_config()
  c.variant = 'no_vq'
  c.vq.enabled = False
  return vq_no_refresh.sixth_run.base.apply_variant_arg(c, arg)
