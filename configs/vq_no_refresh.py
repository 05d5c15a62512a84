"""VQ without refresh: sixth-run settings, refresh off, 30 epochs (reference diagnostic)."""
from configs import base, sixth_run


def build():
  c = sixth_run.build()
  c.variant = 'vq_no_refresh'
  c.vq.refresh_enabled = False
  c.train.num_epochs = 30
  return c


def get_config(arg=None):
  return base.with_variant(build(), arg)
