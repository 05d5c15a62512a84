"""simvq8's codebook with early_refresh_settled's refresh and schedule.

`simvq8` (SimVQ, Zhu et al. 2024: a frozen random basis C times a learned map
W, trained by gradient, 8-d codes) meets the loss, churn (with the settled
schedule) and AMI goals on digits but ends with 86% of its codes used and
39% after epoch 1; `early_refresh_settled` fills the codebook in the first
10% of training but its EMA codebook in an l2-normalised 8-d space keeps
less label information. This combines them: SimVQ's layer, dead-code refresh
every 5 steps during the first 10% of training only (far sampling on the
masked-context tokens, as `early_refresh`), done in the code space (a
restarted code's basis row becomes its new vector times W's pseudo-inverse,
`quantizer._refresh_simvq`), no refresh after; the learning rate ends at
I-JEPA's 1e-6. Elsewhere set `vq.refresh_warmup_steps` to 10% of the run's
steps (ARC, 12 epochs: 54).
"""
from configs import base, early_refresh, simvq8


def build():
  c = simvq8.build()                     # SimVQ, 8-d codes, gradient, element means
  c.variant = 'simvq8_early_refresh_settled'
  r = early_refresh.build().vq
  for key in ('refresh_enabled', 'refresh_warmup_steps', 'refresh_warmup_interval',
              'refresh_interval', 'refresh_usage_threshold', 'refresh_sampling',
              'refresh_source'):
    c.vq[key] = r[key]
  c.train.min_learning_rate = 1e-6       # I-JEPA's final_lr (base: 1e-5)
  return c


def get_config(arg=None):
  return base.with_variant(build(), arg)
