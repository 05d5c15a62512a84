"""Two-stage training as the reference describes its Option D.

"Stage 1: Train without VQ ... Complete 50-60 epochs ... Save encoder
weights. Stage 2: Add VQ on top of frozen encoder ... very low commitment cost
(0.05) ... Fine-tune only VQ codebook for 10-20 epochs."

Stage 1: the no-VQ JEPA for 50 epochs. Stage 2: 15 epochs in which only the
codebook learns: the encoder, target encoder, predictor and temperature are
frozen (`train.frozen`), the codebook follows the frozen encoder's tokens by
its EMA update (decay 0.95), commitment 0.05; the VQ settings (k-means++ init
on the stage-1 tokens, gentle refresh) are those of `configs/two_stage.py`,
the named alternative in which stage 1 runs 30 epochs and stage 2 (10 epochs)
also trains the predictor and the temperature.
"""
from configs import base, two_stage


def build():
  c = two_stage.build()
  c.variant = 'two_stage_reference'
  c.train.num_epochs = 50
  c.stage2.train.num_epochs = 15
  c.stage2.train.frozen = ('encoder', 'target_encoder', 'predictor', 'temperature')
  return c


def get_config(arg=None):
  return base.with_variant(build(), arg)
