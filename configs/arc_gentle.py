"""Gentle VQ (Option B) on ARC-AGI-1 grids; sized to train on a 2-core CPU in < 15 min."""
from configs import base, gentle


def build():
  c = gentle.build()
  base.apply_arc(c)
  c.variant = 'arc_gentle'
  c.train.num_epochs = 12
  return c


def get_config(arg=None):
  return base.with_variant(build(), arg)
