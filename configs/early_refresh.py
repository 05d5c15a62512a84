"""stable_codebook's codebook with dead-code restarts in the first 10% of
training only, instead of CVQ re-anchoring at every step.

Counted honestly (re-anchoring moves that replace a code count as restarts),
`stable_codebook`'s re-anchoring is a restart process that never stops: dead
codes are pulled onto their nearest batch token every step, and with ~600
masked-context tokens a step for 768 codes many land on the same token and
stay dead, so they are moved again and again (seed 0, dense: 81 codes a step
at step 80). Here the codebook is filled during the first 69 steps (10% of a
30-epoch digits run) by refresh every 5 steps: codes below the uniform share
of their window restart on distinct masked-context tokens of the batch (the
tokens the step quantizes, not the whole-image tokens the metrics count),
drawn in proportion to their squared distance from the live codes (k-means++
D² sampling). After that no code is restarted (`refresh_interval` beyond any
run here): the codes follow their tokens by the EMA update alone, whose step
size decays with the learning rate. Elsewhere set `vq.refresh_warmup_steps`
to 10% of the run's steps (ARC, 12 epochs: 54).
"""
from configs import base, stable_codebook


def build():
  c = stable_codebook.build()            # 8-d cosine codes, scheduled EMA step, element means
  c.variant = 'early_refresh'
  c.vq.reanchor = False
  c.vq.refresh_enabled = True
  c.vq.refresh_warmup_steps = 69         # 10% of 690 digits steps ...
  c.vq.refresh_warmup_interval = 5       # ... refreshing every 5 steps
  c.vq.refresh_interval = 100_000        # then never (beyond every run here)
  c.vq.refresh_usage_threshold = 1.0     # below the uniform share of the window
  c.vq.refresh_sampling = 'far'          # distinct tokens far from live codes
  c.vq.refresh_source = 'context'        # the tokens the step quantizes
  return c


def get_config(arg=None):
  return base.with_variant(build(), arg)
