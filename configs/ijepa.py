"""I-JEPA's recipe (Assran et al. 2023) on this project's models: no VQ, the
predictor regresses the target encoder's tokens in latent space, nothing else.

What it keeps from the paper: the loss is the regression of the target
blocks' tokens (here `loss.invariance_weight`, the element-mean squared error
of predictions and targets), with no contrastive term, no SIGReg and no
relational terms; the target encoder is the EMA of the context encoder with a
momentum rising from 0.996 to 1.0; the learning rate ends at its `final_lr`
1e-6 (peak 1e-3, as base.py). Deviations, each kept for a reason: the squared
error instead of its smooth-L1 (on layer-normed tokens the errors are O(1),
where the two differ by a constant factor at most 2); targets normalised by
the encoder's own final LayerNorm (with its learned scale) rather than a
parameter-free one; constant weight decay 0.05 (I-JEPA: 0.04 -> 0.4); the
masks of base.py (fixed token counts, `masking`), sized for each data set by
its variant. The reference's own recipe is `no_vq_gentle.py`.
"""
from configs import base


def build():
  c = base.build()
  c.variant = 'ijepa'
  c.vq.enabled = False
  c.loss.infonce_weight = 0.0
  c.loss.invariance_weight = 1.0
  c.loss.sigreg_weight = 0.0
  c.loss.relational_loss.weight = 0.0
  c.loss.relational_loss.context_self_weight = 0.0
  c.train.ema_momentum_start, c.train.ema_momentum_end = 0.996, 1.0
  c.train.min_learning_rate = 1e-6
  c.train.num_epochs = 30
  return c


def get_config(arg=None):
  return base.with_variant(build(), arg)
