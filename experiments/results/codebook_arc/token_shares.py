"""How evenly do a run's tokens share its codebook, by the context encoder's
tokens and by the target encoder's? And, on ARC, how uneven are the inputs?

    python -m experiments.results.codebook_arc.token_shares --workdir RUN \
        [--split train|val] [--max_images N] [--out FILE.jsonl]

The first `--max_images` images of a split (default: the train split, every
image) are encoded whole and each valid token given its nearest code
(`jepa_jax.load_run(...).codes`): once with the context encoder's tokens
(the code the training step would choose; the logged usage counts these) and
once with the target (EMA) encoder's, those a codebook beside the encoder
learns from (`vq.update_source='target'`). Per encoder:

  tokens            valid tokens
  code_usage        codes holding a token / K
  code_perplexity   exp(H(code)) / K, H the entropy of the code shares
  top_code_share    share of the most common code

On ARC (colour-id grids) each token is also keyed by its input, the colour
ids of its patch of cells (padding cells included), and per encoder:

  input_kinds       distinct input patches
  input_perplexity  exp(H(input)) / K: the spread of the inputs themselves
  top_input_share   share of the most common input patch (all background)
  top_input_codes   codes that patch's tokens fall in, and
  top_input_code_perplexity  exp(H(code | that patch)): how far the tokens'
                    context (attention, position) splits one input

A token's code depends on its patch and on its context, so the input's
perplexity does not bound the code's; it says how uneven the population is
before any encoder.
"""
import argparse
import collections
import json
import math
import sys

import numpy as np

import jepa_jax
from jepa_jax.model import vit as model_lib


def entropy(counts) -> float:
  """Shannon entropy (nats) of the shares c_k / sum c (zeros skipped)."""
  c = np.asarray([v for v in counts if v > 0], np.float64)
  p = c / c.sum()
  return float(-(p * np.log(p)).sum())


def code_shares(codes, num_codes: int):
  """tokens, code_usage, code_perplexity (/ K), top_code_share of (N, T)
  codes, -1 at padding."""
  valid = codes >= 0
  counts = np.bincount(codes[valid], minlength=num_codes)
  n = int(valid.sum())
  return {'tokens': n, 'code_usage': float((counts > 0).mean()),
          'code_perplexity': math.exp(entropy(counts)) / num_codes,
          'top_code_share': float(counts.max() / n)}


def patch_keys(images, patch: int):
  """(N, T, patch * patch) int8: each token's patch of cell ids, tokens
  row-major as the encoder cuts them (`vit.patches`)."""
  return model_lib.patches(np.asarray(images)[..., :1], patch).astype(np.int8)


def input_shares(codes, keys, num_codes: int):
  """The ARC rows of the module docstring from (N, T) codes (-1: padding)
  and (N, T, P) input patches."""
  valid = codes >= 0
  flat_keys = [bytes(k) for k in keys[valid]]
  flat_codes = codes[valid]
  inputs = collections.Counter(flat_keys)
  top_input, top_count = inputs.most_common(1)[0]
  top_codes = collections.Counter(
      int(c) for k, c in zip(flat_keys, flat_codes) if k == top_input)
  return {'input_kinds': len(inputs),
          'input_perplexity': math.exp(entropy(inputs.values())) / num_codes,
          'top_input_share': top_count / len(flat_keys),
          'top_input_codes': len(top_codes),
          'top_input_code_perplexity': math.exp(entropy(top_codes.values()))}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--split', choices=('train', 'val'), default='train')
  parser.add_argument('--max_images', type=int, default=None)
  parser.add_argument('--out', default=None, help='append the JSON line here')
  args = parser.parse_args(argv)
  run = jepa_jax.load_run(args.workdir)
  if run.quantizer is None:
    print(f'error: {args.workdir}: the run has no VQ layer', file=sys.stderr)
    return 2
  images = getattr(run.dataset, f'{args.split}_images')[:args.max_images]
  k = run.quantizer.num_codes
  row = {'workdir': args.workdir, 'split': args.split, 'images': len(images)}
  for encoder in ('context', 'target'):
    codes = np.asarray(run.codes(images, encoder=encoder))
    row[encoder] = code_shares(codes, k)
    if run.config.data.name == 'arc':
      row[encoder].update(input_shares(codes, patch_keys(images, run.config.model.patch_size), k))
  print(json.dumps(row))
  if args.out:
    with open(args.out, 'a') as f:
      f.write(json.dumps(row) + '\n')
  return 0


if __name__ == '__main__':
  sys.exit(main())
