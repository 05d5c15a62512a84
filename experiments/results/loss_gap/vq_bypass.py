"""What does snapping to the nearest code cost a VQ run's JEPA loss?

    python -m experiments.results.loss_gap.vq_bypass --workdir RUN [--baseline RUN] [--out F]

A VQ run's validation loss can be above its matched no-VQ run's for two
reasons: the codes drop information the predictor needs (the snap of each
context token to its nearest code), or the encoder (and the quantizer's
projection) learned worse tokens. On the run's final weights this evaluates
the validation loss twice, with the run's own masks and batches:

  snapped   the loss as training measures it (equal to the last epoch's
            val line: checked)
  bypassed  the same weights, the predictor fed decode(u) instead of
            decode(q): the tokens' image in the quantizer space without the
            snap (`objective.make_loss_fn(snap=False)`); for projected codes
            the projection in and out is kept, so only the snap is removed

and prints, per loss term, snapped, bypassed and (with --baseline) the
baseline's last val line. `jepa` is the weighted sum of the JEPA terms
(InfoNCE, SIGReg, invariance, relational), the loss without the VQ terms.
`recovered` = (snapped - bypassed) / (snapped - baseline): the share of the
gap to the baseline that removing the snap closes (1: the snap is the whole
gap; 0: none of it).

The predictor was trained on snapped inputs, so `bypassed` is an off-
distribution evaluation; the snap moves a token by its distance to its
nearest code (`snap_distance`, the median over valid context tokens, next
to the median token norm in the quantizer space) and a small move keeps it
close to the inputs the predictor saw.
"""
from __future__ import annotations

import os
from typing import Dict, Optional

import jax
import numpy as np

from experiments import json_rows
from jepa_jax.model import vit as model_lib
from jepa_jax.run import files as run_files
from jepa_jax.run import reader as run_reader
from jepa_jax.run import trained
from jepa_jax.train import loop_state as epoch_end
from jepa_jax.train import step as step_lib
from jepa_jax.vq import quantizer as quantizer_lib

# The rows' order; the terms themselves are `objective.terms.LossSpec.weights`' keys.
JEPA_TERMS = ('infonce', 'sigreg', 'invariance', 'relational', 'relational_context')


def jepa_loss(parts: Dict[str, float], weights: Dict[str, float]) -> float:
  """The loss without the VQ terms: sum of w_k * part_k over the JEPA terms'
  weights (`objective.terms.LossSpec.weights`, as the objective weighs them)."""
  return float(sum(w * parts[k] for k, w in weights.items()))


def val_parts(setup, state, images, batch, seed, snap) -> Dict[str, float]:
  """Mean loss components over the val batches, as `train` measures them."""
  fn = jax.jit(step_lib.make_eval_step(setup, seed, snap=snap))
  return epoch_end.evaluate(fn, state, images, batch)


def snap_distances(setup, state, images) -> Dict[str, float]:
  """Medians over the valid whole-image val tokens of |u - q| and |u| in the
  quantizer space (the distance the snap moves a token, and its scale)."""
  enc, spec = setup.encoder, setup.quantizer

  def fn(state, images):
    valid = (model_lib.token_validity(images, enc.patch_size)
             if setup.padded else None)
    z = enc.apply(state['params']['encoder'], images, None, valid)
    raw = quantizer_lib.raw_codebook(spec, state.get('vq'), step_lib.trainables_of(setup, state))
    _, _, aux = quantizer_lib.quantize(spec, raw, state.get('vq_params'), z)
    return aux['u'], aux['quantized'], valid

  u, q, valid = (None if x is None else np.asarray(x) for x in jax.jit(fn)(state, images))
  keep = (np.ones(u.shape[:2], bool) if valid is None else valid.astype(bool)).reshape(-1)
  u, q = u.reshape(-1, u.shape[-1])[keep], q.reshape(-1, q.shape[-1])[keep]
  return {'snap_distance': float(np.median(np.linalg.norm(u - q, axis=1))),
          'token_norm': float(np.median(np.linalg.norm(u, axis=1)))}


def bypass_rows(workdir: str, baseline: Optional[str] = None):
  """One row per loss term (and `jepa`), plus a summary row."""
  cfg, dataset, setup, state = trained.load_trained_state(workdir)
  if not setup.vq_enabled:
    raise ValueError(f'--workdir {workdir}: the run has no VQ layer')
  images = dataset.val_images
  batch = min(cfg.train.batch_size, len(images))
  snapped = val_parts(setup, state, images, batch, cfg.seed, snap=True)
  last = run_reader.load_run(workdir).epochs[-1]
  if not np.isclose(snapped['loss'], last['val_loss_mean'], rtol=1e-5, atol=1e-6):
    raise AssertionError(f'{workdir}: val loss recomputed {snapped["loss"]:.6f}, '
                         f'logged {last["val_loss_mean"]:.6f}: not the run\'s final state')
  bypassed = val_parts(setup, state, images, batch, cfg.seed, snap=False)
  weights = setup.loss.weights
  base = None
  if baseline:
    b_run = run_reader.load_run(baseline)
    if b_run.vq_enabled:
      raise ValueError(f'--baseline {baseline}: a VQ run; give the matched no-VQ run')
    b = b_run.epochs[-1]
    base = {k: b[f'val_{k}_mean'] for k in JEPA_TERMS}
  terms = list(JEPA_TERMS) + ['jepa']
  snapped['jepa'], bypassed['jepa'] = jepa_loss(snapped, weights), jepa_loss(bypassed, weights)
  if base is not None:
    base['jepa'] = jepa_loss(base, weights)
  rows = []
  for k in terms:
    row = {'workdir': workdir, 'term': k, 'snapped': snapped[k], 'bypassed': bypassed[k]}
    if base is not None:
      row['baseline'] = base[k]
      gap = snapped[k] - base[k]
      row['recovered'] = (snapped[k] - bypassed[k]) / gap if abs(gap) > 1e-9 else None
    rows.append(row)
  rows.append({'workdir': workdir, 'term': 'snap', **snap_distances(setup, state, images)})
  return rows


def main(argv=None) -> int:
  ap = json_rows.parser('experiments.results.loss_gap.vq_bypass', __doc__)
  ap.add_argument('--baseline', help='the matched no-VQ run folder')
  args = ap.parse_args(argv)
  for flag, path in (('--workdir', args.workdir), ('--baseline', args.baseline)):
    if path and not os.path.exists(os.path.join(path, run_files.CONFIG)):
      ap.error(f'{flag} {path}: not a run folder (no config.json)')
  try:
    rows = bypass_rows(args.workdir, args.baseline)
  except ValueError as e:
    ap.error(str(e))
  for r in rows:
    json_rows.show(r)
  json_rows.save(rows, args.out)
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
