"""configs/anticollapse.py with its refresh warm-up every 3 steps instead of 5.

Every 5 steps puts each 50-step embedding-metrics point of the warm-up right
after a refresh; every 3 steps samples them at varying distances from one
(README, "Anti-collapse options").
"""
import os

from jepa_jax import config_lib

anticollapse = config_lib.load_module(
    os.path.join(os.path.dirname(__file__), 'anticollapse.py'))


def get_config(arg=None):
  c = anticollapse.get_config()
  c.variant = 'ac_warmup3'
  c.vq.refresh_warmup_interval = 3
  return anticollapse.gentle.base.apply_variant_arg(c, arg)
