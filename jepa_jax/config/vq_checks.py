"""The VQ layer's config checks (`checks.validate` runs them in its order):
`codebook` (config.vq's EMA, losses and refresh keys) and `quantizer` (the
anti-collapse options, the assignment and estimator, the codebook learning
rate, FSQ's restrictions). Each raises ConfigError naming the first bad key.
"""
from __future__ import annotations

import math


def codebook(cfg, check) -> None:
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


def quantizer(cfg, check) -> None:
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
  check('vq.update_source', v.update_source in ('context', 'target'),
        "must be 'context' or 'target'")
  if v.update_source == 'target':
    check('vq.update_source', v.quantizer == 'vq' and v.ema_decay is not None,
          "'target' feeds the EMA codebook update; it needs vq.quantizer='vq' and "
          "an EMA codebook (vq.ema_decay not None): use 'context'")
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
