"""LeJEPA's recipe as its authors' minimal example runs it (Balestriero &
LeCun 2025; rbalestr-lab/lejepa MINIMAL.md): no VQ, no teacher, no
predictor, no stop-gradient; V = 4 augmented views of each image through the
one encoder and a projector, each view's embedding regressed onto the mean
of its image's views, and SIGReg on each view's embeddings:

    loss = (1 - lambda) * prediction + lambda * SIGReg,   lambda = 0.02

(`loss.views`, `jepa_jax/objective/multiview.py`). The minimal example's
projector, Linear-BatchNorm-ReLU twice to 4x the backbone's output width and
a linear output of 16, here 256, 256, 16 on the 64-wide encoder's mean token;
its weight decay 0.05 (base.py's). Deviations, each kept for a reason (the
module docstring has them all): the mean token is the embedding (no class
token; the probes read the same mean); the views are
`data.context_augment='colour+crop'` (crops of 30-100% of the area,
`data.crop_area` (0.3, 1): at 32x32 an 8% crop is 9x9 pixels, smaller
than most objects; this project's colour
jitter, no blur or solarisation); the learning rate is base.py's (peak 1e-3)
ending at 1e-6 as `ijepa.py`'s, not the example's 2e-3 at a batch of 256
ending at 1e-3. The target encoder is a copy of the encoder (EMA momentum 0)
so the probes read the same weights in both. The paper's local views
(`loss.views_local`: smaller crops regressed onto the global views' mean)
are off, as in the minimal example.

`lejepa.py` is the earlier mapping of LeJEPA onto the masked-context
trainer (the masked context as the view, the whole image as the target);
this file is the method as published.
"""
from configs import base
from configs import lejepa


def build():
  c = lejepa.build()      # no VQ, token terms off, no EMA, final LR 1e-6, 30 epochs
  c.variant = 'lejepa_views'
  # lejepa.py's masked-context pair off: the views' own terms replace it.
  c.loss.global_weight, c.loss.sigreg_weight, c.loss.sigreg_input = 0.0, 0.0, 'tokens'
  c.loss.views = 4
  c.loss.views_lambda = 0.02
  c.loss.views_projector = (256, 256, 16)
  c.data.context_augment = 'colour+crop'
  return c


def get_config(arg=None):
  return base.with_variant(build(), arg)
