"""Two-stage training (configs/two_stage.py) with the recommended anti-collapse quantizer in stage 2.

Stage 1 is the no-VQ JEPA; stage 2 freezes its encoder and target encoder and
adds the quantizer of configs/anticollapse.py: tokens projected to 8 dims and
l2-normalised, 768 unit codes initialised by k-means++ on the stage-1 tokens
(in that projected, normalised space), EMA updates, codes unused for 23 steps
restarted on batch vectors. The projections, predictor, temperature and
codebook train.
"""
from configs import base, two_stage


def build():
  c = two_stage.build()
  c.variant = 'anticollapse_two_stage'
  s2 = c.stage2.vq
  s2.codebook_dim = 8
  s2.l2_normalize = True
  s2.refresh_interval = 23
  return c


def get_config(arg=None):
  return base.with_variant(build(), arg)
