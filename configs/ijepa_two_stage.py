"""Two stages on `ijepa.py` (the reference's Option D on a recipe that learns):
stage 1 is `ijepa.py` itself; stage 2 holds its encoder, target encoder and
predictor still (`train.frozen`) and learns only a codebook beside them, as
`ijepa_vq_whole.py` does (768 cosine codes learned by EMA from the context
encoder's whole-image tokens), with three changes:

* nearest codes (`vq.assignment='nearest'`) from a k-means++ start on the
  stage-1 tokens (`vq.init='kmeans'`), Option D's quantizer on digits: from
  the random start nearest codes collapse (52 of 768 at seed 2), from this
  start the codes' AMI comes to k-means' of the same tokens;
* EMA decay 0.99 (VQ-VAE's, the field's default; `ijepa_vq.py`'s 0.95 is the
  reference's gentle setting), its step still following the learning rate
  (`vq.ema_decay_schedule='learning_rate'`): on tokens that do not move the
  EMA update is online k-means, whose codes settle as its steps shrink.

Measured (experiments/results/codebook_shapes, `:shapes`, stage 2 alone from
`ijepa.py`'s final checkpoint, seeds 0-4; EMA decay 0.99 was the one value
tried): every code used (>= 99.3% of the train tokens after epoch 1), 3.7-4.7%
of the val tokens changing code over the last epoch (decay 0.95: 14.1-21.5%),
the codes' AMI, NMI over an image shuffle and bag-of-codes probe at the level
of k-means of the same tokens; the encoder is `ijepa.py`'s, its baseline.

`stage`: 0 runs both (WORKDIR/stage1, WORKDIR/stage2); 2 runs stage 2 alone
from `init_from=PATH[/STEP]` (an `ijepa.py` run's checkpoint). Measured in
experiments/results/codebook_shapes ("On the encoder held fixed").
"""
import ml_collections

from configs import base, ijepa, ijepa_vq_whole


def build():
  c = ijepa.build()
  c.variant = 'ijepa_two_stage'
  c.stage = 0
  s2 = c.stage2 = ml_collections.ConfigDict()
  s2.vq = ijepa_vq_whole.build().vq
  s2.vq.assignment = 'nearest'
  s2.vq.init = 'kmeans'
  s2.vq.ema_decay = 0.99
  s2.train = ml_collections.ConfigDict()
  s2.train.frozen = ('encoder', 'target_encoder', 'predictor')
  return c


def get_config(arg=None):
  return base.with_variant(build(), arg)
