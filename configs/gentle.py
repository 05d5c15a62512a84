"""Gentle VQ (the reference's Option B): softer commitment, faster EMA, rare refresh."""
from configs import base


def build():
  c = base.build()
  c.variant = 'gentle'
  c.vq.commitment_cost = 0.15            # was 0.3
  c.vq.ema_decay = 0.95                  # was 0.99
  c.vq.refresh_enabled = True
  c.vq.refresh_interval = 726            # was 500; the reference's 3000 of ~95 steps
                                         # per epoch = 31.6 epochs = 726 digits steps
  c.vq.loss_reduction = 'sum'            # as the sixth run (docs/method.md#conventions)
  c.vq.refresh_usage_threshold = 0.01    # was 0.05
  c.loss.temperature_min, c.loss.temperature_max = 0.05, 0.20
  c.loss.relational_loss.weight = 0.025
  c.loss.relational_loss.context_self_weight = 0.01
  c.train.num_epochs = 30
  return c


def get_config(arg=None):
  return base.with_variant(build(), arg)
