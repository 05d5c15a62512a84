"""The previous recommendation (until the refresh warm-up): gentle + an 8-d cosine codebook + refresh every epoch.

configs/anticollapse.py adds a refresh warm-up on whole-image tokens to this.
Chosen by a seed-0 exploration on the digits data (docs/anticollapse.md): the
encoder's tokens are projected to 8 dims and l2-normalised,
quantized against 768 unit codes (EMA updates, decay 0.95), and projected
back (ViT-VQGAN's factorized, l2-normalised codes, Yu et al. 2022); codes
unused for a whole epoch (23 steps on digits) are restarted on random batch
vectors (Jukebox / SoundStream dead-code restarts; gentle's refresh, which at
3000 steps never fires in a 690-step run, at a 23-step interval).
"""
from configs import base, gentle


def build():
  c = gentle.build()
  c.variant = 'anticollapse_epoch_refresh'
  c.vq.codebook_dim = 8
  c.vq.l2_normalize = True
  c.vq.refresh_enabled = True
  c.vq.refresh_interval = 23             # one epoch of the digits data
  c.vq.refresh_usage_threshold = 0.01    # unused in the window (< 1% of uniform)
  return c


def get_config(arg=None):
  return base.with_variant(build(), arg)
