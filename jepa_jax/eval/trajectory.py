"""The probe trajectory: the linear probe of the encoders at points of a run.

Every `train.probe_every_steps` steps, at the run's last step and before its
first step (step 0: the encoder at initialisation, or as `init_from` gave
it), a FIXED probe subset is encoded whole (unmasked) by the target and the
context encoders (one jitted function, compiled once, over fixed-size
batches), one feature per image = the mean of its (valid) token embeddings,
as in `evaluate`; the linear probe of `probes` (standardised features,
logistic regression) is fitted on the subset's train images and scored on its
val images (`probes.linear_probe_holdout`: a holdout instead of eval.json's
5-fold cross-validation, for cost; the values are close to, not equal to,
eval.json's). A record of `probe_metrics.jsonl`:

  step, epoch       the state measured (steps taken) and its epoch
  linear_target     val-subset accuracy of the target encoder's probe
  linear_context    the same for the context encoder

(no time: the log is a function of the config and seed, so a resumed run
logs the same lines; the points' host time is summary.json's
`time_breakdown` section 'probe').

The subset: at most `train.probe_train_images` train and
`train.probe_val_images` val images, drawn once from `seed`
(`probes.subset`). Labels: the classes; data without labels but with
colour-id grids (ARC): each grid property of `data.grid_properties` is
probed and the record holds the mean over the properties (as eval.json's
top-level values); other data without labels: no trajectory.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from jepa_jax.eval import probes
from jepa_jax.model import vit as model
from jepa_jax.run import files as run_files

KEYS = ('linear_target', 'linear_context')
BATCH = 1024              # images per call of the encoding function, at most


@dataclasses.dataclass(frozen=True)
class ProbeSet:
  """The fixed probe subset: `images` holds the train rows, then the val rows,
  then copies of the first image up to a multiple of `batch` (encoded, not
  probed); `labels` {name: (train labels, val labels)}."""
  images: np.ndarray
  num_train: int
  num_val: int
  labels: Dict[str, Tuple[np.ndarray, np.ndarray]]
  batch: int


def probe_set(dataset, max_train: int, max_val: int, seed: int) -> Optional[ProbeSet]:
  """The probe subset of `dataset` (module docstring), or None when it has
  neither labels nor colour-id grids."""
  labelled = dataset.train_labels is not None and dataset.val_labels is not None
  if not labelled and dataset.num_colours is None:
    return None
  tr, va = probes.subset(len(dataset.train_images), len(dataset.val_images),
                         max_train, max_val, seed)
  train_x = np.asarray(dataset.train_images[tr], np.float32)
  val_x = np.asarray(dataset.val_images[va], np.float32)
  if labelled:
    labels = {'label': (np.asarray(dataset.train_labels)[tr],
                        np.asarray(dataset.val_labels)[va])}
  else:
    from jepa_jax.data import grid_properties  # noqa: PLC0415
    ytr, yva = grid_properties.grid_properties(train_x), grid_properties.grid_properties(val_x)
    labels = {name: (ytr[name], yva[name]) for name in grid_properties.NAMES}
  n = len(tr) + len(va)
  batch = -(-n // -(-n // BATCH))          # the fewest calls, each padded least
  pad = -n % batch
  images = np.concatenate([train_x, val_x, np.repeat(train_x[:1], pad, 0)])
  return ProbeSet(images=images, num_train=len(tr), num_val=len(va), labels=labels,
                  batch=batch)


def make_device_fn(setup):
  """fn(state, images) -> (context features, target features), each (N, D):
  the mean over the (valid) tokens of each image encoded whole by the
  context encoder and by the target encoder (jittable). Reads only the
  `step.Setup`."""
  enc = setup.encoder

  def fn(state, images):
    valid = (model.token_validity(images, enc.patch_size) if setup.padded else None)
    ctx = enc.apply(state['params']['encoder'], images, None, valid)
    tgt = enc.apply(state['target_params'], images, None, valid)
    return model.pool_tokens(ctx, valid, 1), model.pool_tokens(tgt, valid, 1)

  return fn


def features(fn, state, pset: ProbeSet) -> Dict[str, np.ndarray]:
  """{'context', 'target'}: (num_train + num_val, D) host features of the
  subset, from `fn` (make_device_fn's, compiled for `pset.batch` images)."""
  outs = [fn(state, pset.images[i:i + pset.batch])
          for i in range(0, len(pset.images), pset.batch)]
  n = pset.num_train + pset.num_val
  ctx = np.concatenate([np.asarray(c) for c, _ in outs])[:n]
  tgt = np.concatenate([np.asarray(t) for _, t in outs])[:n]
  return {'context': ctx, 'target': tgt}


def fit(feats: Dict[str, np.ndarray], pset: ProbeSet) -> Dict[str, float]:
  """{'linear_target', 'linear_context'}: the holdout linear probe of each
  encoder's features, the mean over the label sets."""
  n = pset.num_train
  out = {}
  for enc in ('target', 'context'):
    x = feats[enc]
    out[f'linear_{enc}'] = float(np.mean([
        probes.linear_probe_holdout(x[:n], ytr, x[n:], yva)
        for ytr, yva in pset.labels.values()]))
  return out


def point(fn, state, pset: ProbeSet, step: int, epoch: int) -> Dict[str, Any]:
  """One record of probe_metrics.jsonl (module docstring): a host sync."""
  return {'step': step, 'epoch': epoch, **fit(features(fn, state, pset), pset)}


class Prober:
  """A run's probe trajectory: when its points are due, its subset and its
  compiled encoding function (none when probes are off or there is nothing
  to probe: then no point is due)."""

  def __init__(self, every: int, total_steps: int, pset: Optional[ProbeSet] = None,
               fn=None):
    self.every, self.total_steps, self.pset, self.fn = every, total_steps, pset, fn

  @classmethod
  def compiled(cls, cfg, setup, dataset, state) -> 'Prober':
    """The prober of a config (`train.probe_*`), its function compiled for
    `state` (single-device)."""
    import jax  # noqa: PLC0415
    from jepa_jax.train import step as step_lib  # noqa: PLC0415
    tc = cfg.train
    pset = (probe_set(dataset, tc.probe_train_images, tc.probe_val_images, cfg.seed)
            if tc.probe_every_steps else None)
    if pset is None:
      return cls(0, setup.total_steps)
    fn = jax.jit(step_lib.built(setup, ('probe',), lambda: make_device_fn(setup))).lower(
        state, pset.images[:pset.batch]).compile()
    return cls(tc.probe_every_steps, setup.total_steps, pset, fn)

  def due(self, step: int) -> bool:
    """Whether the state after `step` steps is probed: step 0, every
    `every`-th step and the last."""
    return self.pset is not None and (
        step == 0 or step % self.every == 0 or step == self.total_steps)

  def point(self, state, step: int, epoch: int) -> Dict[str, Any]:
    return point(self.fn, state, self.pset, step, epoch)


def points(workdir: str) -> List[Dict[str, Any]]:
  """[{step, linear_target, linear_context}] of a run folder's
  probe_metrics.jsonl ([] without one)."""
  recs = run_files.read_jsonl(os.path.join(workdir, run_files.PROBE_METRICS))
  return [{k: r[k] for k in ('step', *KEYS)} for r in recs]


def summary(recs: List[Dict[str, Any]]) -> Dict[str, Any]:
  """summary.json's `probe`: per key of KEYS its value at the first point
  (`_start`), the last (`_end`), the best and the step of the best (the
  first if tied); `points`. {} without records."""
  if not recs:
    return {}
  out: Dict[str, Any] = {'points': len(recs)}
  for key in KEYS:
    values = [r[key] for r in recs]
    i = int(np.argmax(values))
    out.update({f'{key}_start': values[0], f'{key}_end': values[-1],
                f'{key}_best': values[i], f'{key}_best_step': recs[i]['step']})
  return out
