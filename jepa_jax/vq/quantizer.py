"""The quantizer layer a config asks for: `vq.py`'s VQ and `anticollapse.py`'s options.

`make_spec(cfg)` (`quantizer_spec`) reads `config.vq` (and `loss.entropy_*`)
once into a static `Spec` of every setting of the layer; the functions below
take it (never the config) and are pure and jittable. The EMA-versus-gradient choice is
made there, once (`Spec.update`), and read only here: `trainables` hands the optimizer the
codebook rows in gradient mode, `raw_codebook` / `with_trained` read and
write them, `update_state` runs the EMA update or the usage bookkeeping.
For encoder tokens z (..., D) the layer computes

  u   = n(z W_in + b_in)             project in to `codebook_dim` (or the FSQ
                                     width len(fsq_levels)) when asked; n = l2
                                     normalisation when `vq.l2_normalize`
  vq:  E = n(C)  or  n(C W_s)        the codebook; SimVQ: C a frozen random
                                     basis (state), W_s a learned map
       k = argmin_k ||u - E_k||^2,  q = E_k
                                     (or k = Sinkhorn's balanced codes,
                                     `vq.assignment`, `assignment.sinkhorn_codes`)
       q~ = u + sg(q - u)            straight-through (VQ-VAE), or
       q~ = sg(lambda R) u           the rotation trick (`vq.estimator`), or
       q~ = (h - sg(p) + p) E        index backpropagation (IBQ,
                                     `assignment.ibq_estimator`)
  fsq: q~, k = fsq_quantize(u)       codes index the prod(fsq_levels) grid points
  out = q~ W_out + b_out             project out (back to D) when projected in

and the predictor sees `out` (z with `vq.placement='beside'`). The commitment /
codebook / entropy losses (`losses`, weighted by `Spec.loss_weights`) compare
u with q. With every option off u = z, E = C, out = q~: exactly `vq.quantize`.

Trainables of the layer (`init_params`, the train state's 'vq_params', absent
when empty): proj_in / proj_out {'kernel', 'bias'} and the SimVQ map
'simvq_map'. Codebook state (`init_state`, the train state's 'vq', absent for
FSQ, which has no codebook): a `vq.VQState` in the quantizer space; with SimVQ
its codebook is the frozen basis C.

After each step `update_state` applies, in this order: the EMA update
(`vq.ema_update`; on whole-image tokens with `vq.update_source` 'target' /
'context_whole') or the gradient-mode bookkeeping (`vq.count_usage`); interval
refresh (`vq.refresh`, or `anticollapse.refresh_far`; on the
`anticollapse.refresh_due` schedule with a warm-up); CVQ re-anchoring
(`anticollapse.update_usage_ema`, `anticollapse.reanchor`); l2 normalisation
of an EMA codebook (`anticollapse.l2_normalize_state`).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Hashable, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from jepa_jax.objective import losses as losses_lib
from jepa_jax.vq import anticollapse as ac
from jepa_jax.vq import assignment as assignment_lib
from jepa_jax.vq import codebook as vq_lib
# The layer's description, made by make_spec (re-exported: quantizer.Spec, ...).
from jepa_jax.vq.spec import Reanchor, Refresh, Spec, make_spec  # noqa: F401


def init_params(spec: Spec, rng) -> Dict[str, Any]:
  """The layer's trainables ({} when it has none).

  proj_in (D, d) and proj_out (d, D): LeCun-normal kernels (variance 1/fan_in,
  so LayerNorm-ed tokens map to about unit variance, where the codes are) and
  zero biases. simvq_map (d, d) starts at the identity, so the initial
  codebook is the basis itself, as in the plain random init.
  """
  params: Dict[str, Any] = {}
  k_in, k_out = jax.random.split(rng)
  if spec.project:
    d, c = spec.embed_dim, spec.dim
    params['proj_in'] = {
        'kernel': jax.random.normal(k_in, (d, c), jnp.float32) / np.sqrt(d),
        'bias': jnp.zeros((c,), jnp.float32)}
    params['proj_out'] = {
        'kernel': jax.random.normal(k_out, (c, d), jnp.float32) / np.sqrt(c),
        'bias': jnp.zeros((d,), jnp.float32)}
  if spec.simvq:
    params['simvq_map'] = jnp.eye(spec.dim, dtype=jnp.float32)
  return params


def with_health(state: vq_lib.VQState) -> vq_lib.VQState:
  """`state` with zeroed codebook-health bookkeeping (last_used, born,
  restarts: (K,) int32, see `vq.VQState`), kept up to date by `update_state`."""
  zeros = lambda: jnp.zeros(state.codebook.shape[:1], jnp.int32)  # noqa: E731
  return state.replace(last_used=zeros(), born=zeros(), restarts=zeros())


def track_health(before: vq_lib.VQState, after: vq_lib.VQState, step,
                 restarted=None) -> vq_lib.VQState:
  """Codebook-health bookkeeping after train step `step` (0-based):

      used_k      = usage_k(after) > usage_k(before)   (assigned this step)
      last_used_k = step + 1 where used_k, else unchanged
      born_k      = step + 1 where restarted_k, else unchanged
      restarts_k += restarted_k

  `before` / `after` bracket the EMA update or usage count (no refresh in
  between, which zeroes usage); `restarted` (K,) bool marks the codes a
  refresh re-initialised this step, or that re-anchoring moved at least
  `anticollapse.REANCHOR_RESTART_RATE` of the way onto a feature (None:
  none). States without the bookkeeping (None leaves) come back unchanged.
  """
  if after.last_used is None:
    return after
  t = jnp.asarray(step, jnp.int32) + 1
  used = after.usage > before.usage
  after = after.replace(last_used=jnp.where(used, t, after.last_used))
  if restarted is None:
    return after
  return after.replace(born=jnp.where(restarted, t, after.born),
                       restarts=after.restarts + restarted.astype(jnp.int32))


def state_from_codebook(spec: Spec, codebook) -> vq_lib.VQState:
  """A fresh codebook state around `codebook` (K, d): `vq.state_from_codebook`
  (N = 1, m = e, usage 0) with unit codes for cosine EMA codebooks, the
  health bookkeeping and, with re-anchoring, usage_ema = 0 (CVQ-VAE)."""
  codebook = jnp.asarray(codebook, jnp.float32)
  if spec.unit_codes:
    codebook = ac.l2_normalize(codebook)
  return _with_usage_ema(spec, with_health(vq_lib.state_from_codebook(codebook)))


def _with_usage_ema(spec: Spec, state: vq_lib.VQState) -> vq_lib.VQState:
  if spec.reanchor is None:
    return state
  return state.replace(usage_ema=jnp.zeros((spec.num_codes,), jnp.float32))


def init_state(spec: Spec, rng) -> Optional[vq_lib.VQState]:
  """Codebook state (None for FSQ): `vq.init_state` in the quantizer space
  (e_k ~ N(0, init_scale^2 I)); with re-anchoring, usage_ema = 0 (CVQ-VAE)."""
  if not spec.has_state:
    return None
  if spec.unit_codes:
    return state_from_codebook(spec, spec.init_scale * jax.random.normal(
        rng, (spec.num_codes, spec.dim), jnp.float32))
  return _with_usage_ema(spec, with_health(
      vq_lib.init_state(rng, spec.num_codes, spec.dim, spec.init_scale)))


def kmeans_state(spec: Spec, rng, tokens, params) -> vq_lib.VQState:
  """Codebook state from k-means++ (+ `spec.kmeans_iters` Lloyd iterations,
  `vq.kmeans_init`) on encoder tokens (N, D), fitted where the codes live:
  u = encode(tokens), so projected and / or l2-normalised inputs when the
  config asks for them.

    centres = kmeans_init(rng, u, K, kmeans_iters)
    state   = state_from_codebook(centres)    (unit codes for cosine EMA
                                               codebooks; N = 1, m = e)
    SimVQ:    the basis C = centres; the map W starts at the identity, so the
              looked-up codes C W are the centres.

  With the options off this is `vq.state_from_codebook(kmeans_init(...))` on
  the tokens themselves. Sources: Arthur & Vassilvitskii 2007 (k-means++);
  codebooks initialised from encoder features: Zeghidour et al. 2021
  (SoundStream), Zhu et al. 2024 (VQGAN-LC).
  """
  u = jax.jit(encode, static_argnums=0)(spec, params, tokens)
  fit = jax.jit(vq_lib.kmeans_init, static_argnums=(2, 3))
  return state_from_codebook(spec, fit(rng, u, spec.num_codes, spec.kmeans_iters))


def encode(spec: Spec, params, z):
  """u = n(z W_in + b_in): tokens (..., D) -> the quantizer space (..., d)."""
  z = jnp.asarray(z, jnp.float32)
  if spec.project:
    p = params['proj_in']
    z = jnp.matmul(z, p['kernel']) + p['bias']
  if spec.l2:
    z = ac.l2_normalize(z)
  return z


def decode(spec: Spec, params, q):
  """out = q W_out + b_out: the quantizer space (..., d) -> tokens (..., D)."""
  if spec.project:
    p = params['proj_out']
    q = jnp.matmul(q, p['kernel']) + p['bias']
  return q


def codebook(spec: Spec, raw, params):
  """The codes E (K, d) the layer looks up: n(raw) or n(raw W_s) (SimVQ).

  `raw` is the state's codebook (gradient mode: the trainable one). Gradient
  flows to whatever of raw / W_s is traced (never to the SimVQ basis).
  """
  e = ac.simvq_codebook(raw, params['simvq_map']) if spec.simvq else raw
  return ac.l2_normalize(e) if spec.l2 else e


def quantize(spec: Spec, raw_codebook, params, z, weights=None, nearest: bool = False
             ) -> Tuple[jax.Array, jax.Array, Dict[str, Any]]:
  """(out (..., D), codes (...,) int32, aux) for encoder tokens z (..., D).

  With `vq.assignment='sinkhorn'` the codes are the batch's balanced
  assignment (weights: z's leading shape, padded tokens 0), unless `nearest`
  (evaluation: every token its nearest code, as `assign` gives).
  aux: 'u' (the quantizer-space inputs, with gradient), 'quantized' (q, with
  the gradient to the codebook, for the codebook loss; FSQ: its grid values),
  'codebook' (E as looked up, with gradient; None for FSQ). Default spec:
  exactly `vq.quantize`.
  """
  u = encode(spec, params, z)
  if spec.kind == 'fsq':
    q_st, codes, aux = ac.fsq_quantize(u, spec.levels)
    return _out(spec, decode(spec, params, q_st), z), codes, {
        'u': u, 'quantized': aux['quantized'], 'codebook': None}
  e = codebook(spec, raw_codebook, params)
  given = None if nearest else _balanced_codes(spec, e, u, weights)
  q_st, codes, aux = vq_lib.quantize(
      vq_lib.VQState(codebook=e, cluster_size=None, embed_sum=None, usage=None,
                     step=None), u, codes=given)
  if spec.rotation:
    q_st = ac.rotation_trick(u, aux['quantized'])
  elif spec.ibq:
    # q~ is also the codebook loss's q: ||sg(u) - q~||^2 then trains every
    # code through the softmax (IBQ's ||q~ - u||^2 term, codebook side).
    q_st = assignment_lib.ibq_estimator(u, e, codes, spec.ibq_temperature)
    aux = dict(aux, quantized=q_st)
  return _out(spec, decode(spec, params, q_st), z), codes, {
      'u': u, 'quantized': aux['quantized'], 'codebook': e}


def _out(spec: Spec, decoded, z):
  """The layer's output: decode(q), plus z − sg(z) with `identity_gradient`.

  The value is decode(q) either way. With a projection or l2 normalisation
  the straight-through gradient reaches z only through them (the project-in
  map's transpose: rank <= d); with `identity_gradient` z also receives the
  gradient on the output unchanged, as a layer without them passes it
  (straight-through around the whole layer, as VQ-VAE's estimator treats
  its quantizer). The projections keep their own gradients.
  """
  if not spec.identity_gradient:
    return decoded
  z = jnp.asarray(z, jnp.float32)
  return decoded + (z - jax.lax.stop_gradient(z))


def _balanced_codes(spec: Spec, e, u, weights):
  """The batch's Sinkhorn codes of u against E (`vq.assignment='sinkhorn'`), else None."""
  return (assignment_lib.sinkhorn_codes(u, e, spec.sinkhorn_epsilon, spec.sinkhorn_iters,
                                        weights) if spec.assignment == 'sinkhorn' else None)


def assign(spec: Spec, state, params, z) -> jax.Array:
  """Codes (...,) of tokens z (..., D), no gradient, state unchanged: each
  token's nearest code (FSQ: its grid point), also where the step balances
  its batch's codes by Sinkhorn (a batch's assignment is not the token's
  code). The embedding metrics and `jepa_jax.evaluate` use it."""
  u = encode(spec, params, jax.lax.stop_gradient(z))
  if spec.kind == 'fsq':
    return ac.fsq_quantize(u, spec.levels)[1]
  return vq_lib.nearest_codes(codebook(spec, state.codebook, params), u)[0]


def trainables(spec: Spec, state: Optional[vq_lib.VQState], params) -> Dict[str, Any]:
  """The layer's trainables as the optimizer sees them: 'codebook' (the rows
  of `state`, gradient mode without SimVQ) and 'vq_params' (when it has any)."""
  out = {}
  if spec.codebook_trainable:
    out['codebook'] = state.codebook
  if params:
    out['vq_params'] = params
  return out


def raw_codebook(spec: Spec, state: Optional[vq_lib.VQState], trained: Dict[str, Any]):
  """The codebook `quantize` looks up: the trainable rows (gradient mode) of
  `trained` (as `trainables` made them), else the state's; None for FSQ."""
  if not spec.has_state:
    return None
  return trained['codebook'] if spec.codebook_trainable else state.codebook


def with_trained(spec: Spec, state: vq_lib.VQState, trained: Dict[str, Any]):
  """`state` carrying the optimizer's new codebook rows (gradient mode)."""
  return state.replace(codebook=trained['codebook']) if spec.codebook_trainable else state


def losses(spec: Spec, u, quantized, codebook_e, weights=None) -> Dict[str, jax.Array]:
  """The layer's loss terms, unweighted (`Spec.loss_weights` weighs them):

    commitment  ||u - sg(q)||^2     (`losses.commitment_loss`; not for FSQ,
                                     which has no codebook to commit to)
    codebook    ||sg(u) - q||^2     (`losses.codebook_loss`; gradient mode)
    entropy     assignment entropy of u against E (`anticollapse.
                assignment_entropy_loss`; only with entropy_weight > 0)

  u, quantized: (..., d) as `quantize`'s aux gives them ('u', 'quantized'),
  codebook_e its 'codebook'; weights: u's leading shape, or None.
  """
  w = {} if weights is None else {'weights': weights}
  parts = {}
  if spec.kind == 'vq':
    parts['commitment'] = losses_lib.commitment_loss(
        u, quantized, reduction=spec.loss_reduction, **w)
  if spec.codebook_loss:
    parts['codebook'] = losses_lib.codebook_loss(
        u, quantized, reduction=spec.loss_reduction, **w)
  if spec.entropy_weight > 0:
    parts['entropy'] = ac.assignment_entropy_loss(
        u, codebook_e, spec.entropy_temperature, **w)
  return parts


def _refresh_simvq(state: vq_lib.VQState, linear, dead, restart) -> vq_lib.VQState:
  """Refresh of a SimVQ codebook, done where the codes live: E = C W.

      E' = restart(E)                  (the refresh rule on the codes C W)
      C'_k = E'_k W⁺  for dead k,  C'_k = C_k otherwise

  so a restarted code C'_k W equals its new vector (W⁺ the pseudo-inverse;
  W is d x d and starts at the identity). The live rows of the frozen basis
  are left bit for bit; the basis stays out of the gradient.
  """
  codes = state.replace(codebook=ac.simvq_codebook(state.codebook, linear))
  new = restart(codes)
  basis = new.codebook @ jnp.linalg.pinv(jnp.asarray(linear, jnp.float32))
  return new.replace(codebook=jnp.where(dead[:, None], basis, state.codebook),
                     embed_sum=state.embed_sum, cluster_size=jnp.where(
                         dead, new.cluster_size, state.cluster_size))


def update_state(spec: Spec, state: vq_lib.VQState, *, u, codes, u_global,
                 step, refresh_key, axis_name: Optional[Hashable] = None,
                 weights=None, weights_global=None,
                 refresh_tokens: Optional[Callable] = None,
                 ema_decay=None, simvq_map=None, update_tokens=None,
                 update_weights=None) -> vq_lib.VQState:
  """The codebook state after one train step (see the module docstring).

  u / codes / weights: this device's quantizer-space inputs, codes and row
  weights; u_global / weights_global: the all-gathered ones (refresh and
  re-anchoring draw from the global batch, so every replica agrees). `state`
  carries the updated trainable codebook in gradient mode (`with_trained`).
  Counts and EMA statistics are psum-ed over axis_name inside `vq`.
  refresh_tokens: None (refresh draws from u_global / weights_global), or a
  function () -> (tokens (..., d), weights or None) in the quantizer space
  that refresh draws from instead (`Refresh.full`); it is called inside the
  refresh branch of the `lax.cond`, so its work is done on refresh steps only.
  ema_decay: this step's EMA decay (`vq.scheduled_decay`, with
  `Spec.ema_decay_schedule='learning_rate'`); None: `Spec.ema_decay`.
  simvq_map: SimVQ's learned map W after this step (SimVQ only): refresh
  then restarts codes in the code space, see `_refresh_simvq`.
  update_tokens (..., d) / update_weights (`vq.update_source` 'target' or
  'context_whole'): that encoder's whole-image tokens, coded as the step codes, replace u
  and its codes in the EMA update and the usage counts (so refresh's dead-code test).
  """
  before = state
  if spec.ema:
    decay = spec.ema_decay if ema_decay is None else ema_decay
    if update_tokens is not None:       # the whole-image tokens and their codes
      u, weights = jax.lax.stop_gradient(update_tokens), update_weights
      codes = _balanced_codes(spec, state.codebook, u, weights)
      codes = vq_lib.nearest_codes(state.codebook, u)[0] if codes is None else codes
    state = vq_lib.ema_update(state, u, codes, decay, spec.epsilon,
                              axis_name=axis_name, weights=weights)
  else:
    state = vq_lib.count_usage(state, codes, axis_name=axis_name, weights=weights)
  state = track_health(before, state, step)
  r = spec.refresh
  if r is not None:
    restart = ac.refresh_far if r.far else vq_lib.refresh

    def do_refresh(s):
      z, w = (u_global, weights_global) if refresh_tokens is None else refresh_tokens()
      dead = vq_lib.dead_codes(s, r.usage_threshold)      # the codes restarted
      if spec.simvq:
        new = _refresh_simvq(s, simvq_map, dead, lambda c: restart(
            c, z, refresh_key, r.usage_threshold, weights=w))
      else:
        new = restart(s, z, refresh_key, r.usage_threshold, weights=w)
      return track_health(new, new, step, restarted=dead)

    state = jax.lax.cond(r.due(step), do_refresh, lambda s: s, state)
  if spec.reanchor is not None:
    a = spec.reanchor
    state = ac.update_usage_ema(state, codes, a.decay, axis_name=axis_name,
                                weights=weights)

    def do_reanchor(s):
      rates = ac.reanchor_rates(s, strength=a.strength, share=s.usage_ema,
                                threshold=a.threshold)
      s = ac.reanchor(s, u_global, strength=a.strength, share=s.usage_ema,
                      threshold=a.threshold, weights=weights_global)
      # A code moved at least halfway onto a feature is counted as restarted.
      return track_health(s, s, step, restarted=rates >= ac.REANCHOR_RESTART_RATE)

    if a.steps:                                   # the first a.steps steps only
      state = jax.lax.cond(jnp.asarray(step) < a.steps, do_reanchor, lambda s: s, state)
    else:
      state = do_reanchor(state)
  if spec.unit_codes:
    state = ac.l2_normalize_state(state)
  return state
