"""No VQ with gentle's loss settings: the matched baseline of gentle and of
every anti-collapse config built on it (temperature 0.05-0.20, relational
weights 0.025 / 0.01, 30 epochs). `no_vq.py` is the reference's no-VQ run,
with the sixth run's loss settings (0.07-0.15, 0.05 / 0.025)."""
import os

from jepa_jax import config_lib

gentle = config_lib.load_module(os.path.join(os.path.dirname(__file__), 'gentle.py'))


def get_config(arg=None):
  c = gentle.get_config()
  c.variant = 'no_vq_gentle'
  c.vq.enabled = False
  return gentle.base.apply_variant_arg(c, arg)
