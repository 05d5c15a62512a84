"""The anti-collapse ablations: one option switched on, one config per name.

    --config=configs/ablation.py:NAME[,VARIANT...]    e.g. ablation.py:simvq,tiny

The first token names the ablation, the rest is an ordinary variant string
(`base.parse_variant`). The run's `variant` is `ac_<NAME>`, the name the
per-option files this one replaces (configs/ac_<NAME>.py) gave it, so run
folders and reports read the same. On top of configs/gentle.py:

  kmeans    k-means++ codebook initialisation from the encoder's token
            embeddings at step 0 (SoundStream; VQGAN-LC)
  cosine    cosine codes: l2-normalised codebook and inputs (ViT-VQGAN,
            Yu et al. 2022)
  lowdim    a low-dimensional codebook space: project in to 8 dims, quantize,
            project out (ViT-VQGAN's factorized codes)
  simvq     SimVQ: a frozen random codebook basis times a learned linear map,
            trained by gradient (Zhu et al. 2024); it trains the codebook
            through its map, so EMA updates and refresh are off (refresh
            restarts SimVQ codes through the map's pseudo-inverse when on)
  rotation  the rotation-trick gradient estimator instead of straight-through
            (Fifty et al. 2024)
  reanchor  CVQ-VAE online re-anchoring of under-used codes every step,
            instead of interval refresh (Zheng & Vedaldi 2023)
  entropy   the assignment-entropy regulariser (MAGVIT-v2's entropy penalty,
            Yu et al. 2023); temperature 10, about the gap between the
            nearest and the 10th-nearest code distance at initialisation
  fsq       FSQ instead of the codebook: levels (8, 8, 4, 3) = 768 implicit
            codes (Mentzer et al. 2023); no codebook, so no EMA statistics,
            refresh or commitment loss
On top of configs/anticollapse.py:
  warmup3   its refresh warm-up every 3 steps instead of 5: every 5 steps puts
            each 50-step embedding-metrics point of the warm-up right after a
            refresh; every 3 steps samples them at varying distances from one
            (docs/anticollapse.md)
"""
from configs import anticollapse, base, gentle
from jepa_jax.config import keys as config_keys

# name -> (the config file it starts from, the keys it sets).
ABLATIONS = {
    'kmeans': (gentle, {'vq.init': 'kmeans'}),
    'cosine': (gentle, {'vq.l2_normalize': True}),
    'lowdim': (gentle, {'vq.codebook_dim': 8}),
    'simvq': (gentle, {'vq.simvq': True, 'vq.ema_decay': None,
                       'vq.refresh_enabled': False}),
    'rotation': (gentle, {'vq.estimator': 'rotation'}),
    'reanchor': (gentle, {'vq.refresh_enabled': False, 'vq.reanchor': True}),
    'entropy': (gentle, {'loss.entropy_weight': 0.1, 'loss.entropy_temperature': 10.0}),
    'fsq': (gentle, {'vq.quantizer': 'fsq', 'vq.fsq_levels': (8, 8, 4, 3),
                     'vq.refresh_enabled': False, 'vq.commitment_cost': 0.0}),
    'warmup3': (anticollapse, {'vq.refresh_warmup_interval': 3}),
}


def build(name: str):
  """The ablation `name` (module docstring), no variant applied."""
  if name not in ABLATIONS:
    raise ValueError(f'unknown ablation {name!r}: configs/ablation.py:NAME[,variant] '
                     f'(known: {", ".join(ABLATIONS)})')
  start, keys = ABLATIONS[name]
  c = start.build()
  c.variant = f'ac_{name}'
  for key, value in keys.items():
    config_keys.put(c, key, value)
  return c


def get_config(arg=None):
  name, _, variant = (arg or '').partition(',')
  return base.with_variant(build(name.strip()), variant)
