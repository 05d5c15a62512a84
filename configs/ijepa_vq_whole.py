"""`ijepa_vq_beside.py` with the codebook learned from the context encoder's
whole-image tokens (`vq.update_source='context_whole'`), the tokens its codes
are judged on, for one more encoder pass without gradient a step (decision 2
of issue #28: a codebook may learn from the train split's whole images).

Measured (experiments/results/codebook_shapes, `:shapes`, seeds 0-4, run as
`ijepa_vq_beside.py` with `--config.vq.update_source=context_whole`): every
code used from the first measurement on, perplexity >= 82% of K, and an
image's bag of codes probing 0.6 points [0.1, 1.0] above k-means of the same
tokens (3.0 [1.8, 4.2] above `ijepa_vq_beside.py`'s); the code-label AMI
0.013 below k-means', and 70-80% of the codes changing over the last epoch,
about half of it the encoder's movement (on the encoder held at its final
state, `--config.train.frozen`, seeds 2-3: 28-40%, the codebook's own
movement). The encoder is `ijepa.py`'s, its matched baseline.
"""
from configs import base, ijepa_vq_beside


def build():
  c = ijepa_vq_beside.build()
  c.variant = 'ijepa_vq_whole'
  c.vq.update_source = 'context_whole'
  return c


def get_config(arg=None):
  return base.with_variant(build(), arg)
