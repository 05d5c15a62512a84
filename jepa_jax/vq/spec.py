"""The quantizer's static description: `Spec`, read from a config once.

`make_spec(cfg)` is the one place `config.vq` (and `loss.entropy_*`) is read
for the quantizer layer (`jepa_jax.vq.quantizer`): the layer's shape, its
options, its codebook updates (`Spec.update`: the EMA-versus-gradient choice,
made here once), refresh and re-anchoring, and its losses' weights
(`Spec.loss_weights`). A Spec is hashable, so jitted functions take it as a
static argument.

The layer owns its keys' checks too (`config.checks.validate` runs them in its
order): `check_codebook_keys` (config.vq's EMA, losses and refresh keys)
and `check_quantizer_keys` (the anti-collapse options, the assignment and
estimator, the codebook learning rate, FSQ's restrictions). Each raises
ConfigError naming the first bad key.
"""
from __future__ import annotations

import dataclasses
import math
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
  update_source: str      # the EMA update's tokens: one of UPDATE_SOURCES
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
  placement: str = 'bottleneck'   # or 'beside': the predictor sees the unquantized tokens

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
              entropy_temperature=cfg.loss.entropy_temperature, placement=v.placement)


# The config's checks of the layer's keys -----------------------------------

def check_codebook_keys(cfg, check) -> None:
  """The codebook's own keys: EMA, losses, refresh."""
  v = cfg.vq
  if v.ema_decay is not None:
    check('vq.ema_decay', 0.0 <= check.number('vq.ema_decay') < 1.0,
          'must be in [0, 1), or None for gradient updates')
  check('vq.commitment_cost', check.number('vq.commitment_cost') >= 0, 'must be >= 0')
  check('vq.epsilon', check.number('vq.epsilon') > 0, 'must be > 0')
  check('vq.init_scale', check.number('vq.init_scale') > 0, 'must be > 0')
  if v.refresh_enabled:
    check.positive_int('vq.refresh_interval')
    check('vq.refresh_usage_threshold',
          0.0 <= check.number('vq.refresh_usage_threshold') <= 1.0, 'must be in [0, 1]')
  warmup = check.integer('vq.refresh_warmup_steps', 0,
                         'must be an integer >= 0 (0: no warm-up)')
  if warmup:
    check('vq.refresh_warmup_steps', v.refresh_enabled,
          'a refresh warm-up needs vq.refresh_enabled=True')
    check.positive_int('vq.refresh_warmup_interval')
  check('vq.refresh_sampling', v.refresh_sampling in ('uniform', 'far'),
        "must be 'uniform' or 'far'")
  check('vq.refresh_source', v.refresh_source in ('context', 'full'),
        "must be 'context' or 'full'")
  check('vq.loss_reduction', v.loss_reduction in ('sum', 'mean'),
        "must be 'mean' (element mean, as PyTorch F.mse_loss / Sonnet) or 'sum' (over D)")


def check_quantizer_keys(cfg, check) -> None:
  """The anti-collapse keys of config.vq / config.loss (see jepa_jax/vq/quantizer.py)."""
  v = cfg.vq
  check('vq.quantizer', v.quantizer in ('vq', 'fsq'), "must be 'vq' or 'fsq'")
  check('vq.estimator', v.estimator in ('straight_through', 'rotation', 'ibq'),
        "must be 'straight_through', 'rotation' or 'ibq'")
  _assignment(cfg, check)
  for key in ('vq.l2_normalize', 'vq.simvq', 'vq.reanchor', 'vq.identity_gradient'):
    check.flag(key)
  check('vq.identity_gradient', not v.identity_gradient or v.quantizer == 'fsq'
        or v.codebook_dim is not None or v.l2_normalize or v.estimator == 'ibq',
        'the layer already passes the gradient to the encoder unchanged (no projection, '
        "no l2 normalisation, no 'ibq' estimator): leave it False")
  levels = v.fsq_levels
  check('vq.fsq_levels', isinstance(levels, (tuple, list)) and len(levels) >= 1 and all(
      isinstance(x, int) and not isinstance(x, bool) and x >= 2 for x in levels),
        'must be a tuple of integers >= 2 (levels per dimension)')
  if v.codebook_dim is not None:
    check.positive_int('vq.codebook_dim')
    check('vq.codebook_dim', v.codebook_dim <= cfg.model.embed_dim,
          f'must be <= model.embed_dim ({cfg.model.embed_dim}): the codebook space '
          'is a projection of the embedding')
  if v.reanchor:
    check('vq.reanchor_strength', check.number('vq.reanchor_strength') > 0, 'must be > 0')
    check('vq.reanchor_threshold', check.number('vq.reanchor_threshold') > 0,
          'must be > 0')
    check('vq.reanchor_decay', 0.0 <= check.number('vq.reanchor_decay') < 1.0,
          'must be in [0, 1)')
    check.integer('vq.reanchor_steps', 0, 'must be an integer >= 0 (0: every step)')
  _codebook_lr(cfg, check)
  check('loss.entropy_weight', check.number('loss.entropy_weight') >= 0, 'must be >= 0')
  check('loss.entropy_temperature', check.number('loss.entropy_temperature') > 0,
        'must be > 0')
  if not v.enabled:
    check('loss.entropy_weight', cfg.loss.entropy_weight == 0,
          'the assignment-entropy loss needs the quantizer (vq.enabled=True)')
  elif v.quantizer == 'fsq':
    _fsq(cfg, check)
  elif v.simvq:
    check('vq.ema_decay', v.ema_decay is None,
          'SimVQ trains its codebook (the learned map) by gradient: set it to None')
    check('vq.reanchor', not v.reanchor,
          're-anchoring would move the frozen SimVQ basis: set it to False')


# vq.update_source: the tokens the EMA codebook update reads. 'context': the
# masked-context tokens the layer codes in the step; 'target': the target
# encoder's whole-image tokens; 'context_whole': the context encoder's
# whole-image tokens (one more forward pass, no gradient), the tokens the
# layer codes at inference and the usage on train tokens counts.
UPDATE_SOURCES = ('context', 'target', 'context_whole')


def _assignment(cfg, check) -> None:
  """vq.assignment / sinkhorn_*, the IBQ estimator (jepa_jax/assignment.py)
  and vq.update_source (quantizer.update_state)."""
  v = cfg.vq
  check('vq.assignment', v.assignment in ('nearest', 'sinkhorn'),
        "must be 'nearest' or 'sinkhorn'")
  if v.assignment == 'sinkhorn':
    check('vq.sinkhorn_epsilon', check.number('vq.sinkhorn_epsilon') > 0, 'must be > 0')
    check.positive_int('vq.sinkhorn_iters')
    check('vq.assignment', v.quantizer == 'vq',
          "does not apply to vq.quantizer='fsq' (no codebook): use 'nearest'")
  check('vq.update_source', v.update_source in UPDATE_SOURCES,
        "must be 'context', 'target' or 'context_whole'")
  if v.update_source != 'context':
    check('vq.update_source', v.quantizer == 'vq' and v.ema_decay is not None,
          f"{v.update_source!r} feeds the EMA codebook update; it needs vq.quantizer='vq' and "
          "an EMA codebook (vq.ema_decay not None): use 'context'")
  check('vq.placement', v.placement in ('bottleneck', 'beside'),
        "must be 'bottleneck' or 'beside'")
  if v.placement == 'beside':
    check('vq.placement', v.quantizer == 'vq' and v.ema_decay is not None
          and v.codebook_dim is None and not v.simvq,
          "'beside' takes no loss, so only an EMA codebook of the encoder's own "
          "width learns: it needs vq.quantizer='vq', vq.ema_decay not None, "
          'vq.codebook_dim=None and vq.simvq=False')
  if v.estimator == 'ibq':
    check('vq.ibq_temperature', check.number('vq.ibq_temperature') > 0, 'must be > 0')
    check('vq.estimator', v.ema_decay is None or v.quantizer == 'fsq',
          "'ibq' trains every code by gradient; an EMA codebook takes none: "
          'set vq.ema_decay=None')


def _codebook_lr(cfg, check) -> None:
  """vq.codebook_learning_rate: a positive number, and only where the
  quantizer has trainables for it (jepa_jax/train/step.py `_make_tx`)."""
  v = cfg.vq
  if v.codebook_learning_rate is None:
    return
  check('vq.codebook_learning_rate', check.number('vq.codebook_learning_rate') > 0,
        'must be > 0')
  trainable = v.enabled and (v.quantizer == 'fsq' or v.codebook_dim is not None
                             or v.simvq or v.ema_decay is None)
  check('vq.codebook_learning_rate', trainable,
        'sets the learning rate of a gradient-trained codebook (vq.ema_decay=None) '
        'or of the quantizer\'s projections / SimVQ map; this config has none')


def _fsq(cfg, check) -> None:
  """FSQ has no codebook: the keys that only a codebook uses stay off."""
  v, levels = cfg.vq, cfg.vq.fsq_levels
  product = int(math.prod(levels))
  check('vq.fsq_levels', product == v.codebook_size,
        f'their product ({product}) must equal vq.codebook_size ({v.codebook_size}), '
        'the number of implicit FSQ codes usage is counted over')
  check('vq.codebook_dim', v.codebook_dim in (None, len(levels)),
        f'FSQ quantizes len(vq.fsq_levels) = {len(levels)} dimensions: leave it '
        'None or set it to that')
  why = 'does not apply to vq.quantizer=\'fsq\' (no codebook): '
  for key, ok, fix in (
      ('vq.refresh_enabled', not v.refresh_enabled, 'set it to False'),
      ('vq.reanchor', not v.reanchor, 'set it to False'),
      ('vq.simvq', not v.simvq, 'set it to False'),
      ('vq.l2_normalize', not v.l2_normalize, 'FSQ bounds its inputs; set it to False'),
      ('vq.estimator', v.estimator == 'straight_through',
       "FSQ rounds straight-through; use 'straight_through'"),
      ('vq.commitment_cost', v.commitment_cost == 0, 'set it to 0'),
      ('loss.entropy_weight', cfg.loss.entropy_weight == 0, 'set it to 0'),
      ('vq.init', v.init == 'random', "use 'random'")):
    check(key, ok, why + fix)
