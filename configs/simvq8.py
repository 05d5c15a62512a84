"""Gentle + SimVQ with 8-d codes: a frozen random 8-d basis times a learned 8x8 map,
trained by gradient (Zhu et al. 2024), element-mean VQ losses, no refresh.

The encoder's tokens are projected to 8 dims, quantized against the 768 codes
C W (C frozen ~ N(0, 1), W learned, starting at the identity) and projected
back. In the VQ autoencoder on digits (experiments/results/vqae/) SimVQ keeps
its codes used only once the code space is this small.
"""
from configs import base, gentle


def build():
  c = gentle.build()
  c.variant = 'simvq8'
  c.vq.codebook_dim = 8
  c.vq.simvq = True
  c.vq.ema_decay = None                  # the map is trained by gradient
  c.vq.refresh_enabled = False           # refresh would overwrite the frozen basis
  c.vq.loss_reduction = 'mean'           # element means, as VQ-VAE / Sonnet / Haiku
  return c


def get_config(arg=None):
  return base.with_variant(build(), arg)
