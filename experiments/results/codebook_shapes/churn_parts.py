"""Why do the codes churn? The churn between two checkpoints of a run, split
into the encoder's part and the codebook's.

    python -m experiments.results.codebook_shapes.churn_parts --workdir RUN \
        --steps 2000,2343 [--out FILE]

On the run's whole-image val tokens of the context encoder (the tokens
`eval.measure` counts `vq_churn` on), codes assigned as the training step's
metrics assign them (`quantizer.assign`: the nearest code), with the state of
two kept checkpoints A and B (`checkpoint.keep`: a finished run keeps its
last three and its best):

    a = codes of A's tokens under A's codebook
    m = codes of B's tokens under A's codebook     (the encoder moved alone)
    b = codes of B's tokens under B's codebook

    churn         = share(a != b)   (`vq_churn` between the two points)
    encoder part  = share(a != m)   (the codebook held at A)
    codebook part = share(m != b)   (the tokens held at B)

The two parts need not sum to the churn (a token can move away and back).
Beside them, for l2-normalised codes, in the quantizer's space: how far the
tokens moved, the median of |u_B - u_A|, and how close their codes lie, the
median margin cos(u_B, e_1) - cos(u_B, e_2) of B's tokens between their
nearest and second-nearest code of B. A token's cosine to any code moves by
at most |u_B - u_A| between the points, so margins of that size are decided
by the movement.

--kmeans K1,K2,...: the encoder's part for codebooks of other sizes, each a
k-means fit with K centres on A's tokens in the same space (20,000 of them) (`probes.
kmeans_codes`, assigned by cosine), held fixed: the share of tokens whose
centre changed from A to B (`kmeans_K_encoder_part`), the churn the
encoder's movement alone causes at that codebook size.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Optional

import jax
import numpy as np

from experiments import json_rows
from jepa_jax.eval import probes
from jepa_jax.run import checkpoint as ckpt_lib
from jepa_jax.run import trained
from jepa_jax.vq import quantizer as quantizer_lib


def parts(a, m, b, valid: Optional[np.ndarray] = None) -> Dict[str, float]:
  """{'churn', 'encoder_part', 'codebook_part'} of the codes a, m, b
  (module docstring), over the valid tokens (all of them when None)."""
  a, m, b = (np.asarray(x).reshape(-1) for x in (a, m, b))
  w = np.ones(a.shape, bool) if valid is None else np.asarray(valid, bool).reshape(-1)
  share = lambda x, y: float(np.mean((x != y)[w]))   # noqa: E731
  return {'churn': share(a, b), 'encoder_part': share(a, m), 'codebook_part': share(m, b)}


def margins(u, codes) -> np.ndarray:
  """cos to the nearest code minus cos to the second nearest, per row of the
  unit vectors u (N, d) against the unit codes (K, d)."""
  sims = np.asarray(u, np.float64) @ np.asarray(codes, np.float64).T
  top2 = -np.partition(-sims, 1, axis=1)[:, :2]
  return top2[:, 0] - top2[:, 1]


def _state_at(run_dir: str, step: int, target) -> Dict[str, Any]:
  restored = ckpt_lib.RunCheckpoints(os.path.join(run_dir, 'checkpoints'),
                                     read_only=True).restore(step, target)
  return {k: restored.state[k] for k in trained.KEYS if k in restored.state}


def churn_parts(workdir: str, step_a: int, step_b: int, kmeans_sizes=()) -> Dict[str, Any]:
  """The row of one run: `parts`, the movement, the margin and the k-means
  encoder parts (module docstring)."""
  cfg, dataset, setup, target = trained.run_setup(workdir)
  if not setup.vq_enabled or not setup.quantizer.has_state:
    raise ValueError(f'{workdir}: the run has no codebook (no VQ, or FSQ)')
  if kmeans_sizes and not setup.quantizer.l2:
    raise ValueError(f'{workdir}: --kmeans needs l2-normalised codes (vq.l2_normalize)')
  runs = {s: trained.TrainedRun(workdir, cfg, dataset, setup, _state_at(workdir, s, target))
          for s in (step_a, step_b)}
  spec, images = setup.quantizer, dataset.val_images
  mixed = trained.TrainedRun(workdir, cfg, dataset, setup,
                             {**runs[step_a].state, 'params': runs[step_b].state['params'],
                              'vq_params': runs[step_b].state.get('vq_params')})
  a, m, b = runs[step_a].codes(images), mixed.codes(images), runs[step_b].codes(images)
  # `mixed` holds A's codebook with B's encoder (and B's projection into the
  # quantizer space, part of the encoder's side when the layer has one).
  valid = a >= 0
  row = {'workdir': workdir, 'step_a': step_a, 'step_b': step_b, 'images': len(images),
         **parts(a, m, b, valid)}
  if spec.l2:
    space = {}
    for s, run in runs.items():
      to_space = jax.jit(lambda z, p=run.state.get('vq_params'): quantizer_lib.encode(spec, p, z))
      toks = run.encode(images).tokens
      space[s] = np.concatenate([np.asarray(to_space(toks[i:i + 512]))
                                 for i in range(0, len(toks), 512)]).reshape(-1, spec.dim)
    keep = valid.reshape(-1)
    moved = np.linalg.norm(space[step_b] - space[step_a], axis=1)[keep]
    margin = margins(space[step_b][keep], runs[step_b].codebook)
    row.update({'movement_median': float(np.median(moved)),
                'margin_median': float(np.median(margin))})
    for k in kmeans_sizes:
      km_a, km_b = probes.kmeans_codes(space[step_a][keep], (space[step_a][keep],
                                                              space[step_b][keep]), k, cosine=True)
      row[f'kmeans_{k}_encoder_part'] = float(np.mean(km_a != km_b))
  return row


def main(argv=None) -> int:
  ap = json_rows.parser('experiments.results.codebook_shapes.churn_parts', __doc__)
  ap.add_argument('--steps', required=True, help='A,B: two kept checkpoint steps')
  ap.add_argument('--kmeans', default='', help='K1,K2,...: k-means codebook sizes')
  args = ap.parse_args(argv)
  try:
    step_a, step_b = (int(s) for s in args.steps.split(','))
  except ValueError:
    ap.error(f'--steps {args.steps}: give two checkpoint steps, A,B')
  try:
    sizes = [int(k) for k in args.kmeans.split(',') if k]
    if any(k < 1 for k in sizes):
      raise ValueError
  except ValueError:
    ap.error(f'--kmeans {args.kmeans}: give codebook sizes, K1,K2,...')
  kept = os.path.join(args.workdir, 'checkpoints')
  for s in (step_a, step_b):
    if not os.path.isdir(os.path.join(kept, str(s))):
      ap.error(f'--steps {args.steps}: no checkpoint {s} in {kept}')
  try:
    row = churn_parts(args.workdir, step_a, step_b, sizes)
  except ValueError as err:
    ap.error(str(err))
  json_rows.show(row)
  json_rows.save([row], args.out)
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
