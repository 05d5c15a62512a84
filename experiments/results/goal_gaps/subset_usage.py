"""Usage of image subsets of each split: is a low train-subset usage the split or the count?

    python -m experiments.results.goal_gaps.subset_usage --workdir RUN [--steps S1,S2,...] \
        [--images 1024,4096,12800] [--draws 5] [--train-images 12800] [--out F]

The embedding metrics count the codes of a fixed train subset
(`train.usage_train_images` images, `measure.train_subset`) beside the whole
val split. At K = 8,192 a 1,024-image subset holds 8 tokens a code, the val
split 100, and the two usages differ. This script codes, with the state of
each checkpoint S (default: every saved one) and as the metrics do (context encoder, unmasked,
`measure.make_device_fn`), the whole val split, the logged train subset and
`--train-images` other train images drawn at random, then reports for each
split and each subset size n (images):

  usage_mean / _min / _max  usage of n images drawn without replacement,
                            over --draws draws (all images when n is the
                            split's count: one draw)
  iid_expected              the usage expected of the same number of tokens
                            drawn independently from the split's code shares
                            (`health.expected_usage`): what n images would
                            give if their tokens were independent draws

and once a split: its perplexity / K and the mean share of an image's valid
tokens that hold distinct codes (`distinct_share`: 1 when no two tokens of an
image share a code). A train usage below val usage at the same n points to
the train split; a usage at n images below `iid_expected` points to tokens
of one image sharing codes (the subset holds fewer independent tokens than it
counts). The row 'train_logged' is the metrics' own subset: at a measurement
point its usage is the logged vq_train_usage_ratio (`logged`).
"""
from __future__ import annotations

import os
from typing import Dict, List, Sequence

import jax
import numpy as np

from experiments import json_rows
from experiments.results.usage_bound import usage_bound
from jepa_jax.eval import measure
from jepa_jax.run import files as run_files
from jepa_jax.vq import health


def _usage(codes: np.ndarray, num_codes: int) -> float:
  return health.usage_summary(health.code_counts(codes[codes >= 0], num_codes))['vq_usage_ratio']


def distinct_share(codes: np.ndarray) -> float:
  """Mean over images (rows of codes (N, T), -1 = padding) of the number of
  distinct codes among an image's valid tokens / its valid tokens."""
  shares = [len(np.unique(r[r >= 0])) / (r >= 0).sum() for r in codes if (r >= 0).any()]
  return float(np.mean(shares))


def split_rows(split: str, codes: np.ndarray, num_codes: int, sizes: Sequence[int],
               draws: int, seed: int) -> List[Dict]:
  """The module docstring's rows for one split's codes (N, T); subsets drawn
  by numpy.random.default_rng([seed, 7, n])."""
  counts = health.code_counts(codes[codes >= 0], num_codes)
  per_image = (codes >= 0).sum() / len(codes)
  rows = []
  for n in sorted(s for s in set(sizes) if s <= len(codes)):
    rng = np.random.default_rng([int(seed), 7, int(n)])
    picks = [np.arange(len(codes))] if n == len(codes) else [
        rng.choice(len(codes), n, replace=False) for _ in range(draws)]
    got = [_usage(codes[i], num_codes) for i in picks]
    rows.append({'split': split, 'images': int(n), 'draws': len(picks),
                 'usage_mean': float(np.mean(got)), 'usage_min': float(np.min(got)),
                 'usage_max': float(np.max(got)),
                 'iid_expected': health.expected_usage(counts, int(round(n * per_image)))})
  summary = health.usage_summary(counts)
  rows.append({'split': split, 'images': len(codes),
               'perplexity_ratio': summary['vq_perplexity'] / num_codes,
               'distinct_share': distinct_share(codes)})
  return rows


def main(argv=None) -> int:
  ap = json_rows.parser('experiments.results.goal_gaps.subset_usage', __doc__)
  ap.add_argument('--steps', help='checkpoint steps S1,S2,... (default: every saved one)')
  ap.add_argument('--images', default='1024,4096,12800', help='subset sizes n (images)')
  ap.add_argument('--draws', type=int, default=5, help='random subsets of each size')
  ap.add_argument('--train-images', type=int, default=12800,
                  help='train images coded beside the logged subset (drawn at random)')
  args = ap.parse_args(argv)
  sizes = [s for s in args.images.split(',') if s]
  if not sizes or not all(s.isdigit() and int(s) > 0 for s in sizes):
    ap.error(f'--images {args.images!r}: give subset sizes in images, e.g. 1024,4096')
  sizes = [int(s) for s in sizes]
  if args.draws < 1 or args.train_images < 1:
    ap.error('--draws and --train-images: give positive counts')
  with usage_bound.checkpoints(ap, args, padded_ok=True) as (cfg, dataset, setup, saved):
    rows = _walk(args, cfg, dataset, setup, saved, sizes)
  json_rows.save(rows, args.out)
  return 0


def _walk(args, cfg, dataset, setup, saved, sizes) -> List[Dict]:
  """Each checkpoint's rows (the module docstring's), printed as they come."""
  _, logged_subset = measure.point_images(dataset, cfg.train.usage_train_images, cfg.seed, True)
  n_train = len(dataset.train_images)
  others = np.random.default_rng([cfg.seed, 8]).permutation(n_train)[:args.train_images]
  train_images = np.concatenate([logged_subset, dataset.train_images[others]])
  fn = jax.jit(measure.make_device_fn(setup, cfg.seed))
  k, m, rows = setup.quantizer.num_codes, len(logged_subset), []
  logged = {r['step']: r.get('vq_train_usage_ratio') for r in run_files.read_jsonl(
      os.path.join(args.workdir, run_files.EMBEDDING_METRICS))}
  for step, restore in saved:
    out = fn(restore(), dataset.val_images, train_images)
    codes, train = np.asarray(out['codes']), np.asarray(out['train_codes'])
    now = [{'split': 'train_logged', 'images': m, 'usage_mean': _usage(train[:m], k),
            'logged': logged.get(step)}]
    now += split_rows('val', codes, k, sizes, args.draws, cfg.seed)
    now += split_rows('train', train[m:], k, sizes, args.draws, cfg.seed)
    for r in now:
      json_rows.show({'step': step, **r})
    rows += [{'workdir': args.workdir, 'step': step, **r} for r in now]
  return rows


if __name__ == '__main__':
  raise SystemExit(main())
