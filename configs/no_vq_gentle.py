"""No VQ with gentle's loss settings: the matched baseline of gentle and of
every anti-collapse config built on it (temperature 0.05-0.20, relational
weights 0.025 / 0.01, 30 epochs). `no_vq.py` is the reference's no-VQ run,
with the sixth run's loss settings (0.07-0.15, 0.05 / 0.025)."""
from configs import base, gentle


def build():
  c = gentle.build()
  c.variant = 'no_vq_gentle'
  c.vq.enabled = False
  return c


def get_config(arg=None):
  return base.with_variant(build(), arg)
