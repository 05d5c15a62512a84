"""early_refresh with the learning rate decaying to I-JEPA's final value.

Churn between the last epochs of `early_refresh` is the encoder moving its
tokens across fixed code boundaries, not the codebook moving
(experiments/results/goal_gaps/: with the codebook held, the same share of
tokens changes code; with the tokens held, 0.3%). The base schedule's cosine
ends at 1e-5 (1% of the peak); I-JEPA's ends at 1e-6 (Assran et al. 2023,
`final_lr` in its configs, peak 1e-3 as here). With it the encoder, and the
codebook's EMA step that follows the learning rate, settle at the end of
training. Compare it with a no-VQ run of the same final learning rate
(`--config.train.min_learning_rate=1e-6`): the report matches baselines on it.
"""
from configs import base, early_refresh


def build():
  c = early_refresh.build()
  c.variant = 'early_refresh_settled'
  c.train.min_learning_rate = 1e-6       # I-JEPA's final_lr (base: 1e-5)
  return c


def get_config(arg=None):
  return base.with_variant(build(), arg)
