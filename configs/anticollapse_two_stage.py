"""Two-stage training (configs/two_stage.py) with the recommended anti-collapse quantizer in stage 2.

Stage 1 is the no-VQ JEPA; stage 2 freezes its encoder and target encoder and
adds the quantizer of configs/anticollapse.py: tokens projected to 8 dims and
l2-normalised, 768 unit codes initialised by k-means++ on the stage-1 tokens
(in that projected, normalised space), EMA updates, codes unused for 23 steps
restarted on batch vectors. The projections, predictor, temperature and
codebook train.
"""
import os

from jepa_jax import config_lib

two_stage = config_lib.load_module(os.path.join(os.path.dirname(__file__), 'two_stage.py'))


def get_config(arg=None):
  c = two_stage.get_config(arg)
  c.variant = 'anticollapse_two_stage'
  s2 = c.stage2.vq
  s2.codebook_dim = 8
  s2.l2_normalize = True
  s2.refresh_interval = 2 if 'tiny' in (arg or '') else 23
  return c
