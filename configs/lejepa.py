"""LeJEPA's recipe (Balestriero & LeCun 2025) on this project's models: no VQ,
no EMA teacher, the views' embeddings predicted plus SIGReg.

LeJEPA's loss is (1 - λ) · prediction + λ · SIGReg with λ = 0.05: every
view's embedding regresses onto the mean embedding of the global views, and
SIGReg pushes the views' embeddings towards an isotropic Gaussian; there is
no teacher, no stop-gradient schedule and no predictor network. Here the view
is the masked context (the context encoder's mean token) and the global view
the whole image (the target encoder's mean token): `loss.global_weight` 0.95
and `loss.sigreg_weight` 0.05 on one pooled token per image
(`loss.sigreg_input='pooled'`). The target encoder is the context encoder
itself (EMA momentum 0: its copy is refreshed every step) behind a
stop-gradient, where LeJEPA passes the gradient through both views — the
deviation this trainer's two-encoder design imposes. The token predictor is
trained by nothing and unused. Learning rate as base.py, ending at 1e-6.
This mapping ends below its random init on `:shapes` (seed 0); LeJEPA as its authors
run it (augmented views, a projector, no target encoder) is `lejepa_views.py`.
"""
from configs import base


def build():
  c = base.build()
  c.variant = 'lejepa'
  c.vq.enabled = False
  c.loss.infonce_weight = 0.0
  c.loss.invariance_weight = 0.0
  c.loss.relational_loss.weight = 0.0
  c.loss.relational_loss.context_self_weight = 0.0
  c.loss.global_weight = 0.95
  c.loss.sigreg_weight = 0.05
  c.loss.sigreg_input = 'pooled'
  c.train.ema_momentum_start, c.train.ema_momentum_end = 0.0, 0.0
  c.train.min_learning_rate = 1e-6
  c.train.num_epochs = 30
  return c


def get_config(arg=None):
  return base.with_variant(build(), arg)
