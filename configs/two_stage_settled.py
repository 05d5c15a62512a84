"""Option D as the reference describes it (`two_stage_reference.py`), with the
stage-2 codebook's EMA step following the learning rate.

Stage 2 trains only the codebook, on the frozen stage-1 encoder: the EMA
update is online k-means on fixed tokens, and with a constant step size
(1 - 0.95) its codes keep jittering around their cluster means, so a third
of the val tokens still change code at the end (digits, 3 seeds). With the
step size decaying as the learning rate does (`vq.ema_decay_schedule =
'learning_rate'`, as in `stable_codebook.py`; MacQueen 1967, Bottou & Bengio
1995) the codes settle.
"""
from configs import base, two_stage_reference


def build():
  c = two_stage_reference.build()
  c.variant = 'two_stage_settled'
  c.stage2.vq.ema_decay_schedule = 'learning_rate'
  return c


def get_config(arg=None):
  return base.with_variant(build(), arg)
