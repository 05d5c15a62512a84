"""Views: the context encoder sees a jittered crop of each image (masked as
usual) and must pick out that image's whole-image embedding among the
batch's. No VQ; a candidate base recipe for data where the label is a shape
under colour, position and scale (the `shapes` set).

The loss is `loss.global_infonce_weight` alone: the InfoNCE of the context
encoder's mean token against the target encoder's mean tokens of the whole
images, with the learnable clamped temperature of base.py ([0.07, 0.15]) —
the instance discrimination of SimCLR (Chen et al. 2020) and MoCo v3 (Chen,
Xie & He 2021), whose EMA target this keeps (momentum 0.99 -> 1.0, MoCo
v3's). The view is `data.context_augment='colour+crop'` (random resized crop
30-100% of the area, mirror, channel order / gain / offset / grey), the
distortions those recipes found necessary; token-level terms are off (a
crop's tokens do not sit on the target's). Learning rate as base.py, ending
at 1e-6.
"""
from configs import base


def build():
  c = base.build()
  c.variant = 'views'
  c.vq.enabled = False
  c.data.context_augment = 'colour+crop'
  c.loss.infonce_weight = 0.0
  c.loss.invariance_weight = 0.0
  c.loss.sigreg_weight = 0.0
  c.loss.relational_loss.weight = 0.0
  c.loss.relational_loss.context_self_weight = 0.0
  c.loss.global_infonce_weight = 1.0
  c.train.ema_momentum_start, c.train.ema_momentum_end = 0.99, 1.0
  c.train.min_learning_rate = 1e-6
  c.train.num_epochs = 30
  return c


def get_config(arg=None):
  return base.with_variant(build(), arg)
