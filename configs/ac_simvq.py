"""Gentle + SimVQ: frozen random codebook basis times a learned linear map, trained by gradient (Zhu et al. 2024).

SimVQ trains the codebook through its map, so EMA updates and refresh (which
would overwrite the frozen basis) are off."""
import os

from jepa_jax import config_lib

gentle = config_lib.load_module(os.path.join(os.path.dirname(__file__), 'gentle.py'))


def get_config(arg=None):
  c = gentle.get_config()
  c.variant = 'ac_simvq'
  c.vq.simvq = True
  c.vq.ema_decay = None
  c.vq.refresh_enabled = False
  return gentle.base.apply_variant_arg(c, arg)
