"""Is a VQ run's code-label AMI set by its codebook, or by the space it codes?

    python -m experiments.results.goal_gaps.ami_sources --workdir RUN [--out F]

`jepa_jax.evaluate` compares a VQ run's code-label AMI with k-means (K =
codebook size) on the tokens of the no-VQ run that shares its loss settings,
in that encoder's own token space. A VQ run can fall below it for two
reasons: its codebook partitions its tokens worse than k-means would, or its
tokens (its encoder, and the quantizer's projection, e.g. 8-d and
l2-normalised) carry less label information in any K-way partition. On the
run's final weights this prints, on the same val whole-image tokens as
eval.json (padded data: valid tokens only; the means over the label sets):

  run           the run's own codes (equal to eval.json's code_label_ami)
  kmeans_space  k-means fitted on the run's train tokens in the quantizer's
                space (projected, l2-normalised centres when the codes are)
  kmeans_projected  (projected cosine codes only) k-means fitted on the
                projected train tokens before the l2 normalisation: what the
                normalisation alone costs
  kmeans_raw    k-means fitted on the run's train tokens in the encoder's
                space, as the no-VQ baseline is

k-means: `kmeans_codes` (at most 20,000 train tokens, k-means++,
seed 0), so kmeans_raw is the baseline's procedure on this run's encoder.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Dict

import jax
import numpy as np

from experiments import json_rows
from jepa_jax.eval.probes import code_metrics, kmeans_codes
from jepa_jax.run import files as run_files
from jepa_jax.run import trained
from jepa_jax.vq import quantizer as quantizer_lib


def _ami(codes, valid, label_sets) -> float:
  return float(np.mean([code_metrics(codes, va, valid)['ami']
                        for _, va in label_sets.values()]))


def ami_sources(workdir: str) -> Dict[str, float]:
  """The module docstring's three AMIs for a finished run."""
  run = trained.load_run(workdir)
  ds, setup, state = run.dataset, run.setup, run.state
  if not setup.vq_enabled or setup.quantizer.kind == 'fsq':
    raise ValueError(f'{workdir}: the run has no learned codebook')
  spec = setup.quantizer
  train_emb, val_emb = run.encode(ds.train_images), run.encode(ds.val_images)
  tr, va = train_emb.tokens, val_emb.tokens
  tr_valid, va_valid = train_emb.valid, val_emb.valid
  label_sets = trained.label_sets(ds)
  to_space = jax.jit(lambda z: quantizer_lib.encode(spec, state.get('vq_params'), z))
  tr_u, va_u = np.asarray(to_space(tr)), np.asarray(to_space(va))
  run_codes = run.codes(ds.val_images)
  fit_rows = (lambda t: t[tr_valid]) if setup.padded else (  # noqa: E731
      lambda t: t.reshape(-1, t.shape[-1]))
  k = spec.num_codes
  space_codes = kmeans_codes(fit_rows(tr_u), va_u, k, cosine=spec.l2)
  raw_codes = kmeans_codes(fit_rows(tr), va, k)
  out = {'run': _ami(run_codes, va_valid, label_sets),
         'kmeans_space': _ami(space_codes, va_valid, label_sets)}
  if spec.l2 and spec.project:
    unnormalised = dataclasses.replace(spec, l2=False)
    project = jax.jit(lambda z: quantizer_lib.encode(unnormalised, state.get('vq_params'), z))
    tr_p, va_p = np.asarray(project(tr)), np.asarray(project(va))
    out['kmeans_projected'] = _ami(kmeans_codes(fit_rows(tr_p), va_p, k),
                                   va_valid, label_sets)
  out['kmeans_raw'] = _ami(raw_codes, va_valid, label_sets)
  return out


def main(argv=None) -> int:
  ap = json_rows.parser('experiments.results.goal_gaps.ami_sources', __doc__)
  args = ap.parse_args(argv)
  if not os.path.exists(os.path.join(args.workdir, run_files.FINAL_STATE)):
    ap.error(f'--workdir {args.workdir}: no {run_files.FINAL_STATE} (not a finished run)')
  try:
    row = {'workdir': args.workdir, **ami_sources(args.workdir)}
  except ValueError as err:
    ap.error(str(err))
  json_rows.show(row)
  json_rows.save([row], args.out)
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
