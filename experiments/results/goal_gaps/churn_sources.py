"""Where does code churn come from: the encoder moving, or the codebook?

    python -m experiments.results.goal_gaps.churn_sources --workdir RUN --steps A,B \
        [--kmeans K1,K2,...] [--encoder context|target] [--out F]

Churn (`codebook_health.churn`) is the share of whole-image val tokens whose
code at checkpoint B differs from their code at checkpoint A. With tokens
u (the encoder's, in the quantizer's space) and codebook C at each point,
and c(C, u) the nearest code as the layer assigns it:

  total          mean[c(C_B, u_B) != c(C_A, u_A)]     (the logged metric)
  encoder_only   mean[c(C_A, u_B) != c(C_A, u_A)]     codebook held at A
  codebook_only  mean[c(C_B, u_A) != c(C_A, u_A)]     tokens held at A
  can_switch     mean[|u_B - u_A| > (d2_A - d1_A) / 2]
                 the tokens that moved more than half their margin at A (d1,
                 d2: distances to the nearest and second-nearest code of
                 C_A); by the triangle inequality no other token can change
                 code with the codebook held, so encoder_only <= can_switch
  chance         1 - sum_k p_k^2 with p_k the code shares at B: the churn
                 of codes drawn at random with the same shares

The same four pairings give the share of the K codes that the tokens hit
(usage, counted by `vq.health.usage_summary`): usage_a = U(C_A, u_A) and usage_b =
U(C_B, u_B) (the logged usage at A and at B), usage_codebook_held = U(C_A,
u_B) (the encoder moved, the codebook held at A) and usage_tokens_held =
U(C_B, u_A) (the codebook moved, the tokens held at A). A usage fall from A
to B that usage_codebook_held shows too comes from the encoder's movement;
one that usage_tokens_held shows, from the codebook's. near_origin_a / _b:
the share of codes whose norm is below 1% of the tokens' median norm at A /
B (an EMA code unused for long shrinks towards 0 once its count N_k falls
below the Laplace epsilon: `codebook.ema_update`).

`encoder_only` is about what a codebook frozen from A on would show (the
encoder's training would differ only by the commitment gradients).
--kmeans K1,K2,...: the same for codebooks of other sizes, each a k-means
fit with K centres on (20,000 of) the valid tokens u_A and held fixed
(`probes.kmeans_codes`; assigned by cosine when the layer's codes are
l2-normalised): kmeans_K_encoder_only, the churn the encoder's movement
alone gives a frozen codebook of K codes.
--encoder target: the tokens u are the target (EMA) encoder's instead of
the context encoder's (the logged metric's): the tokens a codebook beside the
encoder learns from (`vq.update_source='target'`) and the encoder `evaluate`
probes first; `total` is then that encoder's churn, not the logged one.
Padded data (ARC): only valid tokens count, as in the metric.
"""
from __future__ import annotations

from typing import Dict

import jax
import jax.numpy as jnp
import numpy as np

from experiments import json_rows
from experiments.results.usage_bound import usage_bound
from jepa_jax.eval import measure
from jepa_jax.eval import probes
from jepa_jax.model import vit as model_lib
from jepa_jax.vq import codebook as vq_lib
from jepa_jax.vq import health
from jepa_jax.vq import quantizer as quantizer_lib


def make_tokens_fn(setup, encoder: str = 'context'):
  """jitted fn(state, images) -> (u (N, T, d) in the quantizer's space,
  codebook (K, d) in that space, valid (N, T) or None); u from the 'context'
  or the 'target' encoder's tokens."""
  enc, spec = setup.encoder, setup.quantizer

  def fn(state, images):
    valid = (model_lib.token_validity(images, enc.patch_size)
             if setup.padded else None)
    params = state['params']['encoder'] if encoder == 'context' else state['target_params']
    z = enc.apply(params, images, None, valid)
    u = quantizer_lib.encode(spec, state.get('vq_params'), z)
    book = quantizer_lib.codebook(spec, state['vq'].codebook, state.get('vq_params'))
    return u, book, valid

  return jax.jit(fn)


def _nearest(book: np.ndarray, u: np.ndarray, chunk: int = 32768) -> np.ndarray:
  """Nearest code of each row of u (n, d), `chunk` rows at a time: the
  distances of all val tokens at K = 8,192 at once would take ~27 GB."""
  near = lambda x: np.asarray(vq_lib.nearest_codes(jnp.asarray(book), jnp.asarray(x))[0])  # noqa: E731
  return np.concatenate([near(u[i:i + chunk]) for i in range(0, len(u), chunk)] or
                        [np.zeros(0, np.int32)])


def two_nearest_distances(book: np.ndarray, u: np.ndarray):
  """(d1, d2): Euclidean distances of each row of u to its nearest and
  second-nearest row of book (float64). Candidates by |u|^2 - 2 u.b + |b|^2
  (a matmul), the three nearest of them measured again as |u - b|."""
  u64, b64 = u.astype(np.float64), book.astype(np.float64)
  near = min(3, len(b64))
  d1, d2 = np.empty(len(u)), np.empty(len(u))
  for lo in range(0, len(u), 4096):
    x = u64[lo:lo + 4096]
    sq = (x ** 2).sum(1)[:, None] - 2.0 * x @ b64.T + (b64 ** 2).sum(1)[None]
    idx = np.argpartition(sq, near - 1, axis=1)[:, :near]
    exact = np.sort(np.linalg.norm(x[:, None, :] - b64[idx], axis=-1), axis=1)
    d1[lo:lo + 4096], d2[lo:lo + 4096] = exact[:, 0], exact[:, 1]
  return d1, d2


def decompose(u_a, book_a, u_b, book_b, codes_a=None) -> Dict[str, float]:
  """The module docstring's shares for valid tokens u_a, u_b (n, d) and the
  codebooks book_a, book_b (K, d), all NumPy; codes_a: u_a's nearest codes
  in book_a when already computed."""
  c_aa = _nearest(book_a, u_a) if codes_a is None else codes_a
  c_bb = _nearest(book_b, u_b)
  c_ab, c_ba = _nearest(book_a, u_b), _nearest(book_b, u_a)
  d1, d2 = two_nearest_distances(book_a, u_a)
  moved = np.linalg.norm(u_b.astype(np.float64) - u_a.astype(np.float64), axis=1)
  shares = np.bincount(c_bb, minlength=len(book_b)) / len(c_bb)
  usage = lambda codes, book: health.usage_summary(  # noqa: E731
      health.code_counts(codes, len(book)))['vq_usage_ratio']
  near_origin = lambda book, u: float(np.mean(  # noqa: E731
      np.linalg.norm(book, axis=1) < 0.01 * np.median(np.linalg.norm(u, axis=1))))
  return {
      'total': float(np.mean(c_bb != c_aa)),
      'encoder_only': float(np.mean(c_ab != c_aa)),
      'codebook_only': float(np.mean(c_ba != c_aa)),
      'can_switch': float(np.mean(moved > (d2 - d1) / 2)),
      'chance': float(1.0 - np.sum(shares ** 2)),
      'median_token_move': float(np.median(moved)),
      'median_half_margin': float(np.median((d2 - d1) / 2)),
      'median_code_move': float(np.median(np.linalg.norm(
          book_b.astype(np.float64) - book_a.astype(np.float64), axis=1))),
      'usage_a': usage(c_aa, book_a), 'usage_b': usage(c_bb, book_b),
      'usage_codebook_held': usage(c_ab, book_a), 'usage_tokens_held': usage(c_ba, book_b),
      'near_origin_a': near_origin(book_a, u_a), 'near_origin_b': near_origin(book_b, u_b),
  }


def kmeans_encoder_only(u_a, u_b, sizes, cosine: bool) -> Dict[str, float]:
  """{'kmeans_K_encoder_only'}: the share of tokens whose centre changes from
  u_a to u_b (n, d) under a k-means fit with K centres on u_a (docstring)."""
  out = {}
  for k in sizes:
    km_a, km_b = probes.kmeans_codes(u_a, (u_a, u_b), k, cosine=cosine)
    out[f'kmeans_{k}_encoder_only'] = float(np.mean(km_a != km_b))
  return out


def sources_between(dataset, setup, state_a, state_b, tokens_fn,
                    kmeans_sizes=(), check_logged: bool = True) -> Dict[str, float]:
  """`decompose` (and `kmeans_encoder_only`) on the val split's whole-image
  tokens of two train states; with check_logged (the context encoder's
  tokens), checks that the codes at A are the embedding metrics' codes."""
  u_a, book_a, valid = (np.asarray(x) if x is not None else None
                        for x in tokens_fn(state_a, dataset.val_images))
  u_b, book_b, _ = (np.asarray(x) if x is not None else None
                    for x in tokens_fn(state_b, dataset.val_images))
  keep = (np.ones(u_a.shape[:2], bool) if valid is None else valid.astype(bool)).reshape(-1)
  flat = lambda x: x.reshape(-1, x.shape[-1])[keep]  # noqa: E731
  codes_a = None
  if check_logged:
    logged = np.asarray(jax.jit(measure.make_device_fn(setup, 0))(
        state_a, dataset.val_images)['codes'])
    codes_a = _nearest(book_a, flat(u_a))
    if not np.array_equal(logged.reshape(-1)[keep], codes_a):
      raise AssertionError('codes recomputed here differ from the embedding metrics\' codes')
  return {**decompose(flat(u_a), book_a, flat(u_b), book_b, codes_a),
          **kmeans_encoder_only(flat(u_a), flat(u_b), kmeans_sizes, setup.quantizer.l2)}


def main(argv=None) -> int:
  ap = json_rows.parser('experiments.results.goal_gaps.churn_sources', __doc__)
  ap.add_argument('--steps', required=True, help='A,B: two saved checkpoint steps')
  ap.add_argument('--kmeans', default='', help='K1,K2,...: frozen k-means codebook sizes')
  ap.add_argument('--encoder', choices=('context', 'target'), default='context',
                  help='whose whole-image tokens are coded '
                       '(default %(default)s: the logged metric)')
  args = ap.parse_args(argv)
  try:
    step_a, step_b = (int(s) for s in args.steps.split(','))
  except ValueError:
    ap.error(f'--steps {args.steps!r}: give two checkpoint steps, e.g. 667,690')
  sizes = [k for k in args.kmeans.split(',') if k]
  if not all(k.isdigit() and int(k) > 0 for k in sizes):
    ap.error(f'--kmeans {args.kmeans!r}: give codebook sizes, e.g. 64,256')
  sizes = [int(k) for k in sizes]
  with usage_bound.checkpoints(ap, args, padded_ok=True) as (_, dataset, setup, saved):
    (_, restore_a), (_, restore_b) = saved
    state_a, state_b = restore_a(), restore_b()
  row = {'workdir': args.workdir, 'from_step': step_a, 'to_step': step_b,
         'encoder': args.encoder,
         **sources_between(dataset, setup, state_a, state_b,
                           make_tokens_fn(setup, args.encoder), sizes,
                           check_logged=args.encoder == 'context')}
  json_rows.show(row)
  json_rows.save([row], args.out)
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
