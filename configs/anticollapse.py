"""The anti-collapse quantizer recommended before restarts were counted
(now: configs/early_refresh_settled.py): gentle + an 8-d cosine codebook +
dead-code refresh with a warm-up on whole-image tokens.

The encoder's tokens are projected to 8 dims and l2-normalised, quantized
against 768 unit codes (EMA updates, decay 0.95), and projected back
(ViT-VQGAN's factorized, l2-normalised codes, Yu et al. 2022). Dead-code
refresh (Jukebox / SoundStream restarts) with:
  * a warm-up: every 5 steps for the first 230 steps (10 digits epochs), then
    every 23 steps (one epoch) (`vq.refresh_warmup_*`);
  * codes below the uniform usage share of their window restarted
    (`vq.refresh_usage_threshold=1.0`);
  * replacements drawn from the whole-image tokens of the batch images
    (`vq.refresh_source='full'`, the tokens the embedding metrics and
    `evaluate` assign codes to), distinct and in proportion to their squared
    distance from the live codes (`vq.refresh_sampling='far'`).
The previous recommendation, refresh every epoch of unused codes only, is
configs/anticollapse_epoch_refresh.py. Chosen by a seed-0 exploration on the
digits data and measured at 3 seeds (docs/anticollapse.md).
"""
from configs import anticollapse_epoch_refresh, base


def build():
  c = anticollapse_epoch_refresh.build()   # 8-d cosine codes, refresh every 23 steps
  c.variant = 'anticollapse'
  c.vq.refresh_usage_threshold = 1.0     # below the uniform share of the window
  c.vq.refresh_warmup_steps = 230        # 10 digits epochs ...
  c.vq.refresh_warmup_interval = 5       # ... refreshing every 5 steps
  c.vq.refresh_sampling = 'far'          # distinct tokens far from live codes
  c.vq.refresh_source = 'full'           # whole-image tokens
  return c


def get_config(arg=None):
  return base.with_variant(build(), arg)
