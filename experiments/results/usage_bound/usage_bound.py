"""How much val usage can any codebook have at a given point of a run?

    python -m experiments.results.usage_bound.usage_bound --workdir RUN [--steps 23,49,69] [--out F]

A run's val usage (distinct codes among the whole-image val tokens / K) can
be low because its codebook lags behind the encoder, or because the encoder's
tokens at that point do not spread over K distinct places that val images
reach. This script tells them apart at each saved checkpoint of a run
(`checkpoint.every_steps` small, `checkpoint.keep` large), on the same tokens
the embedding metrics use, in the quantizer's space (projected and
l2-normalised when the config says so):

  run          the run's own codebook (the metric, recomputed)
  kmeans_ctx   k-means with K centres fitted on the train split's
               masked-context tokens (the tokens the train step quantizes)
  kmeans_whole k-means fitted on the train split's whole-image tokens (an
               upper reference: a codebook placed on the distribution the
               metric samples, which no method here may do)
  sampling     the val usage expected if the val tokens were drawn from the
               run codebook's shares over the train whole-image tokens:
               sum_k 1 - (1 - p_k)^N_val (`codebook_health.expected_usage`:
               how much the share unevenness alone costs)

Unpadded data only (digits): a run on padded ARC grids is refused, since
the tokens here ignore validity and the whole split goes through the encoder
in one call.

k-means: scikit-learn's KMeans, k-means++ start, one init, seeded; for
cosine codebooks the centres are l2-normalised before the assignment. Codes
are assigned by the nearest centre, as the layer does.
"""
from __future__ import annotations

import contextlib
import os
from typing import Dict, List

import jax
import jax.numpy as jnp
import numpy as np

from experiments import json_rows
from jepa_jax.eval import measure
from jepa_jax.model import masking
from jepa_jax.run import checkpoint as ckpt_lib
from jepa_jax.run import files as run_files
from jepa_jax.run import trained
from jepa_jax.vq import codebook as vq_lib
from jepa_jax.vq import health
from jepa_jax.vq import quantizer as quantizer_lib


def kmeans_usage(fit_u: np.ndarray, val_u: np.ndarray, k: int, l2: bool,
                 seed: int = 0) -> float:
  """Share of k centres (k-means on fit_u) that some val token is nearest to."""
  from sklearn.cluster import KMeans  # noqa: PLC0415  (experiments only)
  km = KMeans(n_clusters=k, n_init=1, random_state=seed, max_iter=100).fit(fit_u)
  centres = km.cluster_centers_
  if l2:
    centres = centres / np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-12)
  codes, _ = vq_lib.nearest_codes(jnp.asarray(centres, jnp.float32),
                                  jnp.asarray(val_u, jnp.float32))
  return len(np.unique(np.asarray(codes))) / k


def make_fns(setup, seed: int):
  """The jitted functions `bounds_at` needs, compiled once per run:
  (the embedding-metrics function, tokens(state, images, ids) -> whole-image
  u (N, T, d) and masked-context u (N, C, d) in the quantizer's space)."""
  enc, spec = setup.encoder, setup.quantizer

  def tokens(state, images, ids):
    params = state['params']['encoder']
    key = jax.random.PRNGKey(seed + 7)
    ctx_idx, _ = masking.sample_masks(key, ids, setup.grid, setup.masking)
    u = lambda z: quantizer_lib.encode(spec, state.get('vq_params'), z)  # noqa: E731
    return (u(enc.apply(params, images, None, None)),
            u(enc.apply(params, images, ctx_idx, None)))

  return jax.jit(measure.make_device_fn(setup, seed)), jax.jit(tokens)


def state_codes(dataset, setup, state, fns) -> Dict[str, np.ndarray]:
  """One train state's codes and tokens (`fns` from `make_fns`): 'val_codes'
  (the embedding metrics' val codes), 'train_codes' (the train split's
  whole-image tokens at their nearest code of the run's codebook), and the
  tokens as (rows, d) arrays in the quantizer's space: 'train_whole',
  'train_ctx' (masked context), 'val_whole'."""
  spec = setup.quantizer
  device_fn, tokens = fns
  ids = lambda x: jnp.arange(len(x), dtype=jnp.int32)  # noqa: E731
  flat = lambda x: np.asarray(x, np.float32).reshape(-1, x.shape[-1])  # noqa: E731
  tr_whole, tr_ctx = tokens(state, dataset.train_images, ids(dataset.train_images))
  val_whole, _ = tokens(state, dataset.val_images, ids(dataset.val_images))
  codebook = quantizer_lib.codebook(spec, state['vq'].codebook, state.get('vq_params'))
  tr_whole = flat(tr_whole)
  return {'val_codes': np.asarray(device_fn(state, dataset.val_images)['codes']),
          'train_codes': np.asarray(vq_lib.nearest_codes(codebook, jnp.asarray(tr_whole))[0]),
          'train_whole': tr_whole, 'train_ctx': flat(tr_ctx), 'val_whole': flat(val_whole)}


def bounds_at(dataset, setup, state, fns, seed: int = 0) -> Dict[str, float]:
  """The four usages of the module docstring for one train state
  (`fns` from `make_fns`)."""
  spec = setup.quantizer
  k = spec.num_codes
  c = state_codes(dataset, setup, state, fns)
  counts = np.bincount(c['train_codes'].reshape(-1), minlength=k)
  return {
      'run': len(np.unique(c['val_codes'])) / k,
      'kmeans_ctx': kmeans_usage(c['train_ctx'], c['val_whole'], k, spec.l2, seed),
      'kmeans_whole': kmeans_usage(c['train_whole'], c['val_whole'], k, spec.l2, seed),
      'sampling': health.expected_usage(counts, c['val_codes'].size),
  }


@contextlib.contextmanager
def checkpoints(ap, args, padded_ok: bool = False):
  """`with checkpoints(ap, args) as (cfg, dataset, setup, saved)`: the run in
  `args.workdir` and `saved`, [(step, restore)] for its saved checkpoints
  (or `args.steps`), each `restore()` giving the state; the checkpoints are
  closed when the block ends, however it ends. `ap.error` (one line, status
  2) for a folder that is not a run, has no learned codebook, holds padded
  data (unless padded_ok: the caller counts valid tokens only), or lacks a
  step asked for. Shared with the other scripts that walk a run's checkpoints."""
  if not os.path.exists(os.path.join(args.workdir, run_files.CONFIG)):
    ap.error(f'--workdir {args.workdir}: not a run folder (no config.json)')
  asked = [s.strip() for s in (args.steps or '').split(',') if s.strip()]
  if not all(s.isdigit() for s in asked):
    ap.error(f'--steps {args.steps!r}: give checkpoint steps, e.g. 200,400')
  cfg, dataset, setup, abstract = trained.run_setup(args.workdir)
  if not setup.vq_enabled or setup.quantizer.kind == 'fsq':
    ap.error(f'--workdir {args.workdir}: the run has no learned codebook')
  if setup.padded and not padded_ok:     # the tokens below ignore validity; whole-split forward passes
    ap.error(f'--workdir {args.workdir}: padded data (ARC grids) is not supported: '
             'this script counts every token slot, padding included')
  ckpts = ckpt_lib.RunCheckpoints(os.path.join(args.workdir, run_files.CHECKPOINTS),
                                  read_only=True)
  try:
    saved = ckpts.steps()
    steps: List[int] = [int(s) for s in asked] if asked else saved
    missing = sorted(set(steps) - set(saved))
    if missing:
      ap.error(f'no checkpoint at step(s) {missing} in {args.workdir} (saved: {saved})')
    yield cfg, dataset, setup, [(s, lambda s=s: ckpts.restore(s, abstract).state)
                                for s in steps]
  finally:
    ckpts.close()


def walk(saved, measure, out) -> None:
  """Each checkpoint of `checkpoints`' list as a row {'step', **measure(state)},
  printed as it comes and saved to `out` at the end (`json_rows`)."""
  rows = []
  for step, restore in saved:
    rows.append({'step': step, **measure(restore())})
    json_rows.show(rows[-1])
  json_rows.save(rows, out)


def main(argv=None) -> int:
  ap = json_rows.parser('experiments.results.usage_bound.usage_bound', __doc__)
  ap.add_argument('--steps', default='', help='checkpoint steps (default: all saved)')
  args = ap.parse_args(argv)
  with checkpoints(ap, args) as (cfg, dataset, setup, saved):
    fns = make_fns(setup, cfg.seed)
    walk(saved, lambda state: bounds_at(dataset, setup, state, fns), args.out)
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
