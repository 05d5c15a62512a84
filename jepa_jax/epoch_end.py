"""The numbers of an epoch end: train means, validation, the epoch line, and
the finite-loss check that stops a run whose loss is not a number."""
from __future__ import annotations

from typing import Any, Dict

import jax
import numpy as np

from jepa_jax.step import LOSS_COMPONENTS


class TrainingError(RuntimeError):
  """The run cannot go on (non-finite loss, bad data). One-line message."""


class NonFiniteLoss(TrainingError):
  """The loss (or a component of it) is not a finite number."""


def check_finite(values: Dict[str, float], where: str) -> None:
  """TrainingError naming every non-finite value of `values` and `where`."""
  bad = {k: v for k, v in values.items() if not np.isfinite(v)}
  if bad:
    names = ', '.join(f'{k}={v}' for k, v in sorted(bad.items()))
    raise NonFiniteLoss(f'non-finite loss {where}: {names}; run stopped, '
                        'logs up to the last complete epoch are intact')


def mean_metrics(stacked: Dict[str, np.ndarray], prefix: str) -> Dict[str, float]:
  """'{prefix}_{component}_mean' of each loss component over the epoch's steps."""
  return {f'{prefix}_{k}_mean': float(np.mean(stacked[k])) for k in LOSS_COMPONENTS}


def evaluate(eval_fn, state, images, batch_size) -> Dict[str, float]:
  """Mean loss components over the full validation batches (fixed order)."""
  n = (len(images) // batch_size) * batch_size
  outs = jax.device_get([eval_fn(state, images[i:i + batch_size],
                                 np.arange(i, i + batch_size, dtype=np.int32))
                         for i in range(0, n, batch_size)])
  return {k: float(np.mean(np.stack([o[k] for o in outs]))) for k in outs[0]}


def epoch_line(epoch: int, step: int, stacked: Dict[str, np.ndarray],
               val: Dict[str, float]) -> Dict[str, Any]:
  """The line of epoch_metrics.jsonl: train and val means of every loss
  component, the last step's temperature and learning rate, and with VQ the
  mean share of codes a train batch used; raises TrainingError when a mean
  is not finite."""
  train_means = mean_metrics(stacked, 'train')
  check_finite(train_means, f'in epoch {epoch}')
  val_means = {f'val_{k}_mean': v for k, v in val.items()}
  check_finite(val_means, f'in validation after epoch {epoch}')
  line = {'epoch': epoch, 'step': step, **train_means, **val_means,
          'temperature': float(stacked['temperature'][-1]),
          'learning_rate': float(stacked['learning_rate'][-1])}
  if 'vq_batch_usage_ratio' in stacked:
    line['train_vq_batch_usage_ratio_mean'] = float(np.mean(stacked['vq_batch_usage_ratio']))
  return line
