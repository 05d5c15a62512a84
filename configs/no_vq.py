"""No VQ: the same JEPA with the quantizer switched off, 30 epochs (reference baseline)."""
from configs import base, vq_no_refresh


def build():
  c = vq_no_refresh.build()
  c.variant = 'no_vq'
  c.vq.enabled = False
  return c


def get_config(arg=None):
  return base.with_variant(build(), arg)
