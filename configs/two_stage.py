"""Two-stage training (the reference's Option D): no VQ first, then VQ on the frozen encoder.

Stage 1 is the no-VQ JEPA (30 epochs, the no_vq length on the digits data).
Stage 2 (10 epochs) loads its encoder, predictor and target encoder, freezes
the encoder and target encoder, and adds the VQ layer with low commitment
(0.05) and gentle EMA settings, its codebook initialised by k-means++ on the
stage-1 token embeddings; the predictor, temperature and codebook train.

`stage`: 0 runs both (WORKDIR/stage1, WORKDIR/stage2); 1 or 2 runs that stage
alone in WORKDIR (stage 2 then needs `init_from=PATH[/STEP]`).
`stage2.*`: the keys stage 2 changes, e.g. `--config.stage2.train.num_epochs=20`.
"""
import ml_collections

from configs import base, no_vq


def build():
  c = no_vq.build()
  c.variant = 'two_stage'
  c.stage = 0
  s2 = c.stage2 = ml_collections.ConfigDict()
  s2.vq = ml_collections.ConfigDict()
  s2.vq.enabled = True
  s2.vq.commitment_cost = 0.05
  s2.vq.ema_decay = 0.95
  s2.vq.init = 'kmeans'
  s2.vq.refresh_enabled = True
  s2.vq.refresh_interval = 3000
  s2.vq.refresh_usage_threshold = 0.01
  s2.train = ml_collections.ConfigDict()
  s2.train.num_epochs = 10
  s2.train.warmup_epochs = 1.0
  s2.train.frozen = ('encoder', 'target_encoder')
  return c


def get_config(arg=None):
  return base.with_variant(build(), arg)
