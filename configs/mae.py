"""MAE's target (He et al. 2022) on `ijepa.py`'s set-up: no VQ; the predictor's
outputs at the masked target positions regress the *pixels* of the target
patches, each patch normalised by its own mean and variance, instead of the
target encoder's tokens.

The loss is `loss.pixel_weight` (1.0) alone: a linear head maps the
predictor's output (encoder width) to a patch's pixels. What it keeps from
MAE: normalised-pixel targets (`norm_pix_loss`), the loss on masked patches
only. Deviations, for this project's set-up: `ijepa.py`'s masks (I-JEPA's
blocks, 32 of 64 context tokens, against MAE's 75% random patches), its
narrow predictor as the decoder (MAE: 8 blocks 512 wide), the schedule and
optimizer of `ijepa.py`. The target encoder is still the context encoder's
EMA (no loss reads it), so the probe's target encoder is that EMA; MAE itself
probes its one encoder, the probe's context encoder here.
"""
from configs import base
from configs import ijepa


def build():
  c = ijepa.build()
  c.variant = 'mae'
  c.loss.update(invariance_weight=0.0, pixel_weight=1.0)   # pixels, not tokens
  return c


def get_config(arg=None):
  return base.with_variant(build(), arg)
