"""The quantizer's static description: `Spec`, read from a config once.

`make_spec(cfg)` is the one place `config.vq` (and `loss.entropy_*`) is read
for the quantizer layer (`jepa_jax.vq.quantizer`): the layer's shape, its
options, its codebook updates (`Spec.update`: the EMA-versus-gradient choice,
made here once), refresh and re-anchoring, and its losses' weights
(`Spec.loss_weights`). A Spec is hashable, so jitted functions take it as a
static argument.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, Optional, Tuple

import numpy as np

from jepa_jax.vq import anticollapse as ac


@dataclasses.dataclass(frozen=True)
class Refresh:
  """Dead-code refresh (`config.vq.refresh_*`)."""
  interval: int
  usage_threshold: float
  warmup_steps: int       # > 0: every warmup_interval steps before this step
  warmup_interval: int
  far: bool               # 'far' sampling (`anticollapse.refresh_far`), else uniform
  full: bool              # draws from whole-image tokens, else the context tokens

  def due(self, step):
    """Whether train step `step` (traced) refreshes (`anticollapse.refresh_due`)."""
    return ac.refresh_due(step, self.interval, self.warmup_steps, self.warmup_interval)


@dataclasses.dataclass(frozen=True)
class Reanchor:
  """CVQ online re-anchoring (`config.vq.reanchor_*`, `anticollapse.reanchor`)."""
  strength: float
  threshold: float
  decay: float
  steps: int = 0          # re-anchor during train steps < steps only; 0: always


@dataclasses.dataclass(frozen=True)
class Spec:
  """Static description of the quantizer layer (hashable; from `make_spec`)."""
  kind: str               # 'vq' or 'fsq'
  update: str             # codebook updates: 'ema', 'gradient' ('none' for FSQ)
  embed_dim: int          # D, the encoder's width
  dim: int                # width of the quantizer space (u, codes)
  num_codes: int          # K (FSQ: prod(levels))
  project: bool           # learned project-in / project-out maps
  l2: bool                # cosine codes and inputs
  simvq: bool             # codebook = frozen basis @ learned map
  rotation: bool          # rotation-trick estimator instead of straight-through
  ibq: bool               # index-backpropagation estimator (`assignment.ibq_estimator`)
  ibq_temperature: float
  assignment: str         # 'nearest', or 'sinkhorn' (`assignment.sinkhorn_codes`)
  sinkhorn_epsilon: float
  sinkhorn_iters: int
  update_source: str      # EMA update from 'context' tokens or 'target' whole-image tokens
  identity_gradient: bool  # out = decode(q) + z - sg(z): z gets the gradient unchanged too
  levels: Tuple[int, ...]  # FSQ levels
  init_scale: float       # e_k ~ N(0, init_scale^2 I) at initialisation
  init: str               # 'random' or 'kmeans' (k-means++ on encoder tokens)
  kmeans_iters: int
  kmeans_num_samples: int
  ema_decay: Optional[float]   # None in gradient mode
  ema_decay_schedule: str  # 'constant', or 'learning_rate' (`vq.scheduled_decay`)
  epsilon: float          # Laplace smoothing of the EMA cluster sizes
  refresh: Optional[Refresh]
  reanchor: Optional[Reanchor]
  commitment_cost: float  # beta of the commitment loss
  loss_reduction: str     # 'mean' over elements or 'sum' over D
  entropy_weight: float   # assignment-entropy loss (0: off)
  entropy_temperature: float

  @property
  def has_state(self) -> bool:
    """A codebook state to carry (everything but FSQ)."""
    return self.kind == 'vq'

  @property
  def ema(self) -> bool:
    return self.update == 'ema'

  @property
  def unit_codes(self) -> bool:
    """A cosine EMA codebook: its codes are kept at unit norm."""
    return self.l2 and self.ema

  @property
  def codebook_trainable(self) -> bool:
    """Gradient mode: the codebook rows themselves are trainables."""
    return self.update == 'gradient' and not self.simvq

  @property
  def codebook_loss(self) -> bool:
    """The VQ-VAE codebook loss is added (gradient mode and SimVQ)."""
    return self.update == 'gradient'

  @property
  def loss_weights(self) -> Dict[str, float]:
    """The weight of each term of `losses` in the total loss."""
    return {'commitment': self.commitment_cost, 'codebook': 1.0,
            'entropy': self.entropy_weight}


def make_spec(cfg) -> Optional[Spec]:
  """The quantizer of a (validated) config; None when VQ is off."""
  v = cfg.vq
  if not v.enabled:
    return None
  levels = tuple(int(x) for x in v.fsq_levels)
  d = cfg.model.embed_dim
  if v.quantizer == 'fsq':
    dim, project, update = len(levels), True, 'none'
  else:
    dim, project = (d, False) if v.codebook_dim is None else (int(v.codebook_dim), True)
    update = 'ema' if v.ema_decay is not None else 'gradient'
  refresh = None
  if v.refresh_enabled and v.quantizer == 'vq':
    refresh = Refresh(interval=v.refresh_interval,
                      usage_threshold=v.refresh_usage_threshold,
                      warmup_steps=v.refresh_warmup_steps,
                      warmup_interval=v.refresh_warmup_interval,
                      far=v.refresh_sampling == 'far', full=v.refresh_source == 'full')
  reanchor = (Reanchor(strength=v.reanchor_strength, threshold=v.reanchor_threshold,
                       decay=v.reanchor_decay, steps=int(v.reanchor_steps))
              if v.reanchor else None)
  return Spec(kind=v.quantizer, update=update, embed_dim=d, dim=dim,
              num_codes=int(np.prod(levels)) if v.quantizer == 'fsq' else int(v.codebook_size),
              project=project, l2=bool(v.l2_normalize), simvq=bool(v.simvq),
              rotation=v.estimator == 'rotation', identity_gradient=bool(v.identity_gradient),
              ibq=v.estimator == 'ibq', ibq_temperature=float(v.ibq_temperature),
              assignment=v.assignment, sinkhorn_epsilon=float(v.sinkhorn_epsilon),
              sinkhorn_iters=int(v.sinkhorn_iters), update_source=v.update_source,
              levels=levels,
              init_scale=float(v.init_scale), init=v.init, kmeans_iters=v.kmeans_iters,
              kmeans_num_samples=v.kmeans_num_samples, ema_decay=v.ema_decay,
              ema_decay_schedule=v.ema_decay_schedule,
              epsilon=v.epsilon, refresh=refresh, reanchor=reanchor,
              commitment_cost=v.commitment_cost, loss_reduction=v.loss_reduction,
              entropy_weight=cfg.loss.entropy_weight,
              entropy_temperature=cfg.loss.entropy_temperature)
