"""The I-JEPA recipe with `early_refresh_settled`'s quantizer: the first VQ
config built on a base recipe whose encoder learns on the procedural
`shapes` set (experiments/results/representation/).

Everything outside `vq` is `ijepa.py` (token regression only, EMA 0.996 ->
1.0, learning rate ending at 1e-6); the quantizer is `early_refresh_settled`'s
(8-d l2-normalised codes, EMA updates whose step follows the learning rate,
element-mean VQ losses, commitment 0.15, restarts of codes below the uniform
share on distinct masked-context tokens far from the live codes, every 5
steps during a warm-up, then never). One setting is new: the warm-up lasts
200 steps, a fixed count (8.5% of a 3-epoch `:shapes` run of 2,343 steps,
29% of a 30-epoch digits run) that sits on no goal's boundary. Its matched
baseline is `ijepa.py` at the same seeds.
"""
from configs import base, early_refresh_settled, ijepa


def build():
  c = ijepa.build()
  c.vq = early_refresh_settled.build().vq
  c.variant = 'ijepa_vq'
  c.vq.refresh_warmup_steps = 200        # then no restart (refresh_interval beyond any run)
  return c


def get_config(arg=None):
  return base.with_variant(build(), arg)
