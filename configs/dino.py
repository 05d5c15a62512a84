"""DINO: `views.py`'s views (a jittered, masked crop for the context encoder,
the whole image for the target) under self-distillation instead of InfoNCE.
No VQ; a candidate base recipe for the `shapes` set.

The loss is `loss.global_dino_weight` alone: a projection head on each
encoder's mean token (3-layer MLP of width 4 x embed_dim to an embed_dim
bottleneck, cosine with 256 prototypes; the target encoder's head is the EMA
of the context encoder's, as DINO's teacher), the context view's softmax at
temperature 0.1 trained against the whole image's at 0.04 (Caron et al.
2021's defaults), the teacher centred by Sinkhorn-Knopp over the batch
(DINOv2, Oquab et al. 2024) rather than by a running mean. EMA momentum
0.996 -> 1.0 (DINO's). Deviations from DINO, for this project's set-up: one
view pair per image (no multi-crop), the student's view is masked as every
JEPA context is, the prototypes and head are scaled to the 64-wide encoder
(DINO: 65,536 prototypes, width 2,048, bottleneck 256), and the optimiser,
learning rate and weight decay are base.py's.
"""
from configs import base
from configs import views


def build():
  c = views.build()
  c.variant = 'dino'
  c.loss.global_infonce_weight = 0.0
  c.loss.global_dino_weight = 1.0
  c.train.ema_momentum_start, c.train.ema_momentum_end = 0.996, 1.0
  return c


def get_config(arg=None):
  return base.with_variant(build(), arg)
