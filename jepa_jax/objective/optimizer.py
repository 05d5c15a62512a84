"""The optimizer of the trainables: global-norm clipping, then AdamW on a
warm-up cosine schedule; frozen parameter groups get no update.

The trainables are {'params': {'encoder', 'predictor', 'temperature'}} plus
the quantizer's ('codebook' in gradient mode, 'vq_params'; see
`quantizer.trainables`). Weight decay applies to weight matrices / kernels
only (never biases, norms, the temperature, the mask token, the codebook or
the SimVQ map).
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import jax
import optax


def warmup_cosine(peak: float, end: float, warmup: int, decay_steps: int) -> Callable:
  """Linear warm-up from 0 to `peak` over `warmup` steps, then cosine decay to
  `end` at `decay_steps` (optax.warmup_cosine_decay_schedule)."""
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=peak, warmup_steps=warmup, decay_steps=decay_steps,
      end_value=end)


def _weight_decay_mask(trainables):
  """Decay only weight matrices/kernels; never biases, norms, the temperature,
  the mask token, the codebook or the SimVQ map (the codebook's factor)."""
  def keep(path, leaf):
    names = [getattr(p, 'key', '') for p in path]
    return leaf.ndim >= 2 and 'codebook' not in names and 'simvq_map' not in names
  return jax.tree_util.tree_map_with_path(keep, trainables)


def _labels(frozen: Sequence[str], codebook_group: bool):
  """optax labels: 'frozen' for trainables['params'][g], g in frozen;
  'codebook' for trainables['codebook'] and ['vq_params'] when
  `codebook_group`; else 'train'."""
  def labels(trainables):
    def label(path, _):
      names = [getattr(p, 'key', None) for p in path[:2]]
      if codebook_group and names[0] in ('codebook', 'vq_params'):
        return 'codebook'
      return 'frozen' if names[0] == 'params' and names[1] in frozen else 'train'
    return jax.tree_util.tree_map_with_path(label, trainables)
  return labels


def make_tx(schedule: Callable, *, weight_decay: float, grad_clip_norm: float,
            frozen: Sequence[str] = (), codebook_schedule: Optional[Callable] = None
            ) -> optax.GradientTransformation:
  """clip_by_global_norm(grad_clip_norm), then AdamW(schedule, weight_decay);
  the groups of params named in `frozen` get `set_to_zero`.

  `codebook_schedule` (the reference's Option C, "may need lower learning
  rate for codebook", `vq.codebook_learning_rate`): the gradient-trained
  codebook and the quantizer's own trainables get their own AdamW on it; the
  clipping stays global. None: the single optimizer.
  """
  def adamw(sched):
    return optax.adamw(sched, weight_decay=weight_decay, mask=_weight_decay_mask)

  clip = optax.clip_by_global_norm(grad_clip_norm)
  if codebook_schedule is None:
    tx = optax.chain(clip, adamw(schedule))
    if frozen:
      tx = optax.multi_transform({'train': tx, 'frozen': optax.set_to_zero()},
                                 _labels(frozen, codebook_group=False))
    return tx
  transforms = {'train': adamw(schedule), 'codebook': adamw(codebook_schedule),
                'frozen': optax.set_to_zero()}
  return optax.chain(clip, optax.multi_transform(
      transforms, _labels(frozen, codebook_group=True)))
