"""`ijepa.py` with a codebook *beside* the encoder instead of in its path: the
predictor sees the context encoder's tokens themselves, no VQ loss reaches
the encoder, and the codebook is a read-out of the tokens, learned by its EMA
update from the target encoder's whole-image tokens (`vq.placement='beside'`,
`vq.update_source='target'`), as CAPI and BEiT v2 learn their codes from a
teacher's tokens of the whole image.

So the encoder's loss and gradient are `ijepa.py`'s (to float32 rounding:
the compiled step differs, and rounding differences may grow over a run),
and the question this config asks is only about the codes: do they stay used and stable, and do they tell what the tokens
tell? The codebook: 768 cosine codes of the encoder's width (no projection:
nothing would train it), balanced assignment of the target tokens it learns
from (`vq.assignment='sinkhorn'`, OptVQ's) and no restarts, the EMA step following the learning rate as in
`ijepa_vq.py`. Its matched baseline is `ijepa.py` at the same seeds.
"""
from configs import base, ijepa_vq


def build():
  c = ijepa_vq.build()
  c.variant = 'ijepa_vq_beside'
  c.vq.placement = 'beside'
  c.vq.update_source = 'target'
  c.vq.codebook_dim = None
  c.vq.assignment = 'sinkhorn'
  c.vq.refresh_enabled = False
  c.vq.refresh_warmup_steps = 0
  return c


def get_config(arg=None):
  return base.with_variant(build(), arg)
